"""The snapshot: a cycle's working copy of the state (free GPUs, held nodes, quota
occupancy), as the README calls it.

``Snapshot`` answers "does this gang fit now?" (placement and hierarchical quota) and
records admissions, claims and reservations made earlier in the same cycle, so that each
later answer sees them. The ``ClusterState`` it was built from is never changed.

Hierarchical quota (Kueue cohorts, generalised to a tree). For GPU type k and org node N:
    G_N   guaranteed GPUs (root: cluster capacity)
    L_N   lend limit (None: all unused guarantee may be lent)
    B_N   borrow limit (None: unlimited)
    O_N   occupancy: a team's GPUs in use; an internal node's sum of children's eff
    eff_N = max(O_N, G_N - L_N)   (what N takes from its parent: its use, or the part of
                                   its guarantee it may not lend, whichever is larger)
A gang of g GPUs for team T is admissible iff, for every node N on T's path below the
root, O'_N - G_N <= B_N (it borrows within its limit), and at the root O'_root <= G_root.
Idle guarantee is lent to siblings first: borrowing that stays inside a parent's own
guarantee never reaches the grandparent, so cousins see only what the parent itself lends.
"""

from __future__ import annotations

from allotment.domain.cluster import GpuType
from allotment.domain.workload import JobId, RunningJob, Workload
from allotment.scheduler.placement import (
    DomainFree,
    Placement,
    on_one_node,
    place_in_domains,
    place_on_one_node,
)
from allotment.scheduler.state import ClusterState, propagate_occupancy


class Snapshot:
    """The snapshot of a ``ClusterState`` for one cycle at time ``now``."""

    def __init__(self, state: ClusterState, now: float) -> None:
        self.state = state
        self.now = now
        cluster = state.cluster
        org = state.org
        self.free = list(state.free)
        self.held: set[int] = set()
        # GPUs (all of them, free or not) of the held nodes per type, per rack and pod (read
        # through ``held_capacity``: nodes held in bulk are counted per rack and pod only
        # when asked, in ``_cap_due`` until then)
        self._held_cap: dict[GpuType, DomainFree] = {
            t: {"rack": {}, "pod": {}, "type": {0: 0}} for t in state.levels}
        self._cap_due: dict[GpuType, list[list[int]]] = {}
        self.doomed: set[JobId] = set()  # jobs chosen as victims in this cycle
        # values a policy derives from the snapshot's occupancy, per org node (its
        # fair-share value) and per team (its path of values): an admission or a removal
        # drops those of the nodes on its team's path and of the teams below them
        self.node_cache: dict[int, int] = {}
        self.team_cache: dict[str, tuple[int, ...]] = {}
        # each org node's decayed usage at ``now`` over the half-life (what admissions in
        # the cycle leave as it is), once asked for
        self.decayed: dict[int, float] = {}
        # changes to the occupancy (admissions, removals) per top-level org node: a key
        # computed for a team since the last change under its top-level node is fresh
        self.versions: dict[int, int] = {}
        # GPUs promised on a node to jobs waiting for reclaimed GPUs in this cycle
        self.claimed: dict[int, int] = {}
        # smallest gang of each preemption class that found no victims in this cycle
        self.reclaim_failed: dict[object, int] = {}
        # GPUs that terminating jobs will release, per node, not yet claimed by a waiter
        self.incoming: dict[int, int] = {}
        # GPUs each org node's jobs are releasing (terminating, or chosen as victims in this
        # cycle), per GPU type: a team's usage net of them is what it keeps
        self.releasing: dict[GpuType, list[int]] = {
            t: [0] * len(org.names) for t in cluster.gpu_types}
        for job in state.terminating.values():
            for node, gpus in job.placement:
                self.incoming[node] = self.incoming.get(node, 0) + gpus
            self.release(job)
        self.max_node: dict[GpuType, int] = {
            t: len(lv) - 1 for t, lv in state.levels.items()
        }
        # the state keeps the placement index and the occupancy up to date; the snapshot
        # copies them (copies of lists and sets, no scan of nodes, jobs or the org tree).
        # The unheld nodes by free GPUs (levels[t][f], f >= 1: full nodes are in no
        # level, as in ``ClusterState.levels``), and the free GPUs per rack and pod, are
        # the state's own until the cycle first changes them (``_own``): copied on write
        self.levels: dict[GpuType, list[set[int]]] = state.levels
        # free GPUs on unheld nodes per type: rejects a large gang without a node scan
        self.type_free: dict[GpuType, int] = dict(state.type_free)
        self._max_fit: dict[GpuType, int] = {}  # see max_fit
        # free GPUs on unheld nodes per rack and pod, per type
        self.domain_free: dict[GpuType, DomainFree] = state.domain_free
        self._owned = False
        self.usage = {t: list(u) for t, u in state.usage.items()}
        self.alloc_total = list(state.alloc_total)
        # fill (``scheduler.reservation``): GPUs of each gang's fill jobs per node; the nodes
        # held for each gang now, its workload, its reservation's domain, and whether more
        # fill may start there (not once the gang could start without its fill)
        self.fill_on: dict[JobId, dict[int, int]] = {}
        for fill_job, gang in state.fill.items():
            per = self.fill_on.setdefault(gang, {})
            for node, gpus in state.running[fill_job].placement:
                per[node] = per.get(node, 0) + gpus
        self.held_for: dict[JobId, tuple[int, ...]] = {}
        self.gangs: dict[JobId, Workload] = {}
        self.gang_domain: dict[JobId, tuple[str, int]] = {}
        self.fill_open: dict[JobId, bool] = {}
        self.expected: dict[JobId, float] = {}  # per-cycle cache of expected gang starts
        self.fill_room: dict[JobId, tuple[int, int]] = {}  # cache: free, largest free block
        self.preheld: set[int] = set()  # nodes held at step 1b for gangs not yet considered
        # launch reservations (``scheduler.launch``): the nodes held for each one being
        # prepared or in its window, its jobs waiting, GPUs admitted for it in this cycle
        self.launch_held: dict[str, tuple[int, ...]] = {}
        self.launch_waiting: dict[str, int] = {}
        self.launch_admitted: dict[str, int] = {}
        self.occ: dict[GpuType, list[int]] = {t: list(o) for t, o in state.occ.items()}
        self.eff: dict[GpuType, list[int]] = {t: list(e) for t, e in state.eff.items()}
        self.lock: dict[GpuType, list[int]] = state.lock  # fixed per org: never written

    # -- free GPUs ---------------------------------------------------------------------
    def _own(self) -> None:
        """Copy the state's per-domain free GPUs, and its lists of node levels, before the
        first change; each level's set of nodes is copied when first changed
        (``_bucket``)."""
        self.levels = {t: list(lv) for t, lv in self.state.levels.items()}
        self.domain_free = {t: {level: dict(v) for level, v in dom.items()}
                            for t, dom in self.state.domain_free.items()}
        self._owned = True

    def _bucket(self, levels: list[set[int]], t: GpuType, f: int) -> set[int]:
        """The snapshot's own set of unheld nodes of type ``t`` with ``f`` free GPUs, to
        change (``levels`` is ``self.levels[t]``): the state's, copied on first write."""
        b = levels[f]
        if b is self.state.levels[t][f]:
            b = levels[f] = b.copy()
        return b

    def _set_free(self, node: int, value: int) -> None:
        n = self.state.cluster.nodes[node]
        t = n.gpu_type
        if node not in self.held:
            if not self._owned:
                self._own()
            self._max_fit.pop(t, None)
            levels = self.levels[t]
            if self.free[node]:  # (levels[0] stays empty: ``ClusterState.levels``)
                self._bucket(levels, t, self.free[node]).discard(node)
            if value:
                self._bucket(levels, t, value).add(node)
            change = value - self.free[node]
            self.type_free[t] += change
            dom = self.domain_free[t]
            dom["rack"][n.rack] += change
            dom["pod"][n.pod] += change
        self.free[node] = value

    def hold(self, nodes: list[int] | tuple[int, ...]) -> None:
        """Keep ``nodes``' free GPUs away from later gangs in this cycle."""
        self._hold(nodes, 1)

    def unhold(self, nodes: tuple[int, ...]) -> None:
        """Give held ``nodes``' free GPUs back to later gangs in this cycle."""
        self._hold(nodes, -1)

    def _hold(self, nodes: list[int] | tuple[int, ...], sign: int) -> None:
        """Hold (``sign`` 1) or give back (-1) ``nodes``: the free GPUs of unheld nodes per
        type, rack and pod (and the nodes by free GPUs) lose or regain theirs, and the
        held capacity per domain (``held_capacity``) gains or loses the nodes' GPUs."""
        if not self._owned:
            self._own()
        held, cluster_nodes, free = self.held, self.state.cluster.nodes, self.free
        # (a reservation may hold thousands of nodes, mostly of one type: the per-type
        # structures are looked up once per run of nodes of a type, the type's totals
        # summed and written once)
        t: GpuType | None = None
        levels: list[set[int]] = []
        orig: list[set[int]] = []  # the state's, while ``levels[f]`` is still one of them
        cap_rack: dict[int, int] = {}
        cap_pod: dict[int, int] = {}
        free_rack: dict[int, int] = {}
        free_pod: dict[int, int] = {}
        cap_sum = free_sum = 0
        for node in nodes:
            n = cluster_nodes[node]
            if n.gpu_type != t:
                if t is not None:
                    self._held_totals(t, cap_sum, free_sum)
                t = n.gpu_type
                levels, orig = self.levels[t], self.state.levels[t]
                cap_rack, cap_pod = self._held_cap[t]["rack"], self._held_cap[t]["pod"]
                free_rack, free_pod = self.domain_free[t]["rack"], self.domain_free[t]["pod"]
                cap_sum = free_sum = 0
            f = free[node]
            if (node in held) == (sign > 0):
                continue  # already held (or, given back, not held)
            if sign > 0:
                held.add(node)
            else:
                held.discard(node)
            if f:  # (levels[0] stays empty: ``ClusterState.levels``)
                b = levels[f]
                if b is orig[f]:  # ``_bucket``, written out (once per node held)
                    b = levels[f] = b.copy()
                if sign > 0:
                    b.discard(node)
                else:
                    b.add(node)
            g = sign * n.gpus
            cap_rack[n.rack] = cap_rack.get(n.rack, 0) + g
            cap_pod[n.pod] = cap_pod.get(n.pod, 0) + g
            cap_sum += g
            if f:
                free_sum += sign * f
                free_rack[n.rack] -= sign * f
                free_pod[n.pod] -= sign * f
        if t is not None:
            self._held_totals(t, cap_sum, free_sum)

    def hold_available(self, t: GpuType, fill: dict[int, int]) -> list[int]:
        """Hold every unheld node of type ``t`` with GPUs available to a gang: free GPUs,
        or GPUs of the gang's own ``fill`` (node -> GPUs); return them, in no order.

        The same as ``hold`` of those nodes, in bulk: a gang of thousands of GPUs that
        waits takes every such node in each cycle, and the state's sets of nodes with
        free GPUs are then dropped whole instead of copied and emptied node by node. No
        unheld node of the type has free GPUs afterwards, so the free GPUs of unheld nodes
        per rack, per pod and in all are 0. (The list returned is the snapshot's: not to
        be changed.)"""
        if not self._owned:
            self._own()
        held, cluster_nodes = self.held, self.state.cluster.nodes
        levels = self.levels[t]
        taken: list[int] = []
        for f in range(1, len(levels)):
            if levels[f]:
                taken.extend(levels[f])
                levels[f] = set()
        for i, g in fill.items():  # fill on nodes with no free GPUs (in no level)
            if g and self.free[i] == 0 and i not in held and cluster_nodes[i].gpu_type == t:
                taken.append(i)
        held.update(taken)
        self._cap_due.setdefault(t, []).append(taken)
        cap_sum = sum(map(self.state.node_gpus.__getitem__, taken))
        for per_domain in self.domain_free[t].values():
            for d in per_domain:
                per_domain[d] = 0
        self._held_totals(t, cap_sum, self.type_free[t])
        return taken

    def held_capacity(self, t: GpuType) -> DomainFree:
        """GPUs (free or not) of the held nodes of type ``t``, per rack, per pod and in
        all (``"type"``: {0: GPUs})."""
        due = self._cap_due.pop(t, None)
        cap = self._held_cap[t]
        if due:
            cap_rack, cap_pod, nodes = cap["rack"], cap["pod"], self.state.cluster.nodes
            for taken in due:
                for node in taken:
                    n = nodes[node]
                    cap_rack[n.rack] = cap_rack.get(n.rack, 0) + n.gpus
                    cap_pod[n.pod] = cap_pod.get(n.pod, 0) + n.gpus
        return cap

    def _held_totals(self, t: GpuType, cap: int, free: int) -> None:
        """``_hold``'s sums for type ``t``: ``cap`` GPUs more held, ``free`` free ones fewer
        on unheld nodes."""
        self._held_cap[t]["type"][0] += cap
        if free:
            self._max_fit.pop(t, None)
            self.type_free[t] -= free

    def room(self, node: int) -> int:
        """GPUs on ``node`` free or being released and not yet promised to a waiting job."""
        return self.free[node] + self.incoming.get(node, 0) - self.claimed.get(node, 0)

    def unheld_room(self, gpu_type: GpuType) -> int:
        """The sum of ``room`` over the unheld nodes of a type, from the per-type free GPUs
        and the few nodes with GPUs incoming or claimed (no scan of every node)."""
        nodes = self.state.cluster.nodes
        extra = 0
        for i, g in self.incoming.items():
            if i not in self.held and nodes[i].gpu_type == gpu_type:
                extra += g
        for i, g in self.claimed.items():
            if i not in self.held and nodes[i].gpu_type == gpu_type:
                extra -= g
        return self.type_free[gpu_type] + extra

    def unheld_with_room(self, gpu_type: GpuType) -> set[int]:
        """Every unheld node of a type that may have ``room`` > 0: those with free GPUs and
        those with GPUs incoming (a superset; callers check ``room``)."""
        lv = self.levels[gpu_type]
        out = {i for f in range(1, len(lv)) for i in lv[f]}
        nodes = self.state.cluster.nodes
        out.update(i for i in self.incoming
                   if i not in self.held and nodes[i].gpu_type == gpu_type)
        return out

    def usable_for_reclaim(self, node: int) -> bool:
        """Reclaims may share a node held for another reclaim, or one held since the start
        of the cycle for a gang with fill (a job entitled to reclaim comes before such a
        gang, as it would have before the fill), not one held by a reservation."""
        return node not in self.held or node in self.claimed or node in self.preheld

    def single_node(self, w: Workload) -> bool:
        """Whether ``w`` is placed on one node (the placement rule, ``on_one_node``)."""
        return on_one_node(w.gpus, self.max_node[w.gpu_type])

    def max_fit(self, gpu_type: GpuType) -> int:
        """Largest single-node gang that fits on unheld nodes now (cached until the free
        GPUs of that type change)."""
        fit = self._max_fit.get(gpu_type)
        if fit is None:
            lv = self.levels[gpu_type]
            fit = next((f for f in range(len(lv) - 1, 0, -1) if lv[f]), 0)
            self._max_fit[gpu_type] = fit
        return fit

    def unheld_free(self, gpu_type: GpuType) -> int:
        return self.type_free[gpu_type]

    def place(self, w: Workload) -> Placement | None:
        """Where ``w`` would go now on unheld free GPUs, or None."""
        t = w.gpu_type
        if self.single_node(w):
            node = place_on_one_node(self.levels[t], w.gpus)
            return None if node is None else ((node, w.gpus),)
        if self.type_free[t] < w.gpus:
            return None
        return place_in_domains(
            self.state.domains[t], self.state.largest_domain[t], self.levels[t],
            self.domain_free[t], self.type_free[t], self.free, self.held, w.gpus)

    def fits(self, w: Workload) -> bool:
        """Whether ``place(w)`` would find room, without building the placement: a gang
        larger than one node fits iff the unheld free GPUs of its type hold it (the "type"
        level is the last domain tried)."""
        t = w.gpu_type
        if w.gpus <= self.max_node[t]:  # single_node(w)
            return self.max_fit(t) >= w.gpus
        return self.type_free[t] >= w.gpus

    def version(self, team: str) -> int:
        """How often the occupancy under ``team``'s top-level org node changed so far."""
        org = self.state.org
        return self.versions.get(org.path[org.index[team]][0], 0)

    # -- quota -------------------------------------------------------------------------
    def team_index(self, w: Workload) -> int:
        return self.state.org.index[w.team]

    def quota_block(self, w: Workload, gpus: int | None = None) -> str | None:
        """None if the tree quota admits ``w`` now, else the reason in words."""
        org = self.state.org
        t = w.gpu_type
        g = w.gpus if gpus is None else gpus
        occ, eff, lock = self.occ[t], self.eff[t], self.lock[t]
        guaranteed, borrow = org.guaranteed[t], org.borrow_limit[t]
        i = org.index[w.team]
        delta = g
        while i > 0:
            new_occ = occ[i] + delta
            limit = borrow[i]
            if limit is not None and new_occ - guaranteed[i] > limit:
                return (
                    f"{org.names[i]} would borrow {new_occ - guaranteed[i]} {t} GPUs, "
                    f"over its borrow limit {limit} (guarantee {guaranteed[i]})"
                )
            new_eff = max(new_occ, lock[i])
            delta = new_eff - eff[i]
            if delta <= 0:
                return None
            i = org.parent[i]
        if occ[0] + delta > guaranteed[0]:
            return (
                f"no {t} GPUs left to lend: in use or held by guarantees that may not be lent "
                f"({occ[0]}/{guaranteed[0]} occupied)"
            )
        return None

    def _apply_quota(self, team: str, t: GpuType, g: int) -> None:
        org = self.state.org
        i = org.index[team]
        path = org.path[i]
        self.versions[path[0]] = self.versions.get(path[0], 0) + 1
        if self.node_cache:
            for n in path:
                self.node_cache.pop(n, None)
        if self.team_cache:
            for name in self.state.teams_below(path[0]):
                self.team_cache.pop(name, None)
        usage = self.usage[t]
        while i >= 0:
            usage[i] += g
            self.alloc_total[i] += g
            i = org.parent[i]
        propagate_occupancy(org.parent, org.index[team], g, self.occ[t], self.eff[t],
                            self.lock[t])

    def admit(self, w: Workload, placement: Placement) -> None:
        for node, gpus in placement:
            self._set_free(node, self.free[node] - gpus)
        self._apply_quota(w.team, w.gpu_type, w.gpus)

    def doom(self, job: RunningJob) -> None:
        """Choose ``job`` as a victim in this cycle: it leaves its team, and its GPUs are on
        their way (free once its grace period ends)."""
        self.doomed.add(job.workload.id)
        self.release(job)
        for node, gpus in job.placement:
            self.incoming[node] = self.incoming.get(node, 0) + gpus

    def release(self, job: RunningJob) -> None:
        """Count ``job``'s GPUs as on their way out of its team (a victim, or terminating)."""
        org = self.state.org
        i = org.index[job.workload.team]
        rel = self.releasing[job.workload.gpu_type]
        while i >= 0:
            rel[i] += job.workload.gpus
            i = org.parent[i]

    def kept(self, gpu_type: GpuType, i: int) -> int:
        """GPUs org node ``i`` holds and keeps: in use, less those being released."""
        return self.usage[gpu_type][i] - self.releasing[gpu_type][i]

    def without(self) -> Removal:
        """A what-if: jobs removed through it count as gone until it is left, then they are
        restored (``with sc.without() as gone: gone.remove(job); ...``), like Kueue's
        ``SimulateWorkloadRemoval`` with its restore function."""
        return Removal(self)

    def _remove(self, job: RunningJob) -> None:
        for node, gpus in job.placement:
            self._set_free(node, self.free[node] + gpus)
        self._apply_quota(job.workload.team, job.workload.gpu_type, -job.workload.gpus)

    def borrowed_after(self, w: Workload) -> int:
        t = w.gpu_type
        i = self.state.org.index[w.team]
        return max(0, self.usage[t][i] + w.gpus - self.state.org.guaranteed[t][i])

    def within_guarantee(self, w: Workload) -> bool:
        t = w.gpu_type
        i = self.state.org.index[w.team]
        return self.usage[t][i] + w.gpus <= self.state.org.guaranteed[t][i]


class Removal:
    """Jobs taken out of a snapshot for a what-if; leaving the ``with`` block restores them
    in reverse order, so the snapshot is exactly as before."""

    def __init__(self, sc: Snapshot) -> None:
        self.sc = sc
        self.jobs: list[RunningJob] = []

    def remove(self, job: RunningJob) -> None:
        self.sc._remove(job)
        self.jobs.append(job)

    def __enter__(self) -> Removal:
        return self

    def __exit__(self, *exc: object) -> None:
        for job in reversed(self.jobs):
            self.sc.admit(job.workload, job.placement)
        self.jobs.clear()
