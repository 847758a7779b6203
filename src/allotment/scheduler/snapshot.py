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
from allotment.scheduler.placement import Placement, on_one_node, place_on_one_node
from allotment.scheduler.state import ClusterState, Topology


class Snapshot:
    """The snapshot of a ``ClusterState`` for one cycle at time ``now``."""

    def __init__(self, state: ClusterState, now: float) -> None:
        self.state = state
        self.now = now
        cluster = state.cluster
        org = state.org
        self.topology: Topology = state.topology
        self.free = list(state.free)
        self.held: set[int] = set()
        self.doomed: set[JobId] = set()  # jobs chosen as victims in this cycle
        self.memo: dict[int, float] = {}  # per-cycle cache for policies
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
            t: cluster.max_node_gpus(t) for t in cluster.gpu_types
        }
        # unheld nodes by free GPUs, per type (copied from the state's, kept up to date)
        self.levels: dict[GpuType, list[set[int]]] = {
            t: [set(f) for f in lv] for t, lv in state.levels.items()}
        # free GPUs on unheld nodes per type: rejects a large gang without a node scan
        self.type_free: dict[GpuType, int] = dict(state.type_free)
        # free GPUs on unheld nodes per (type, level) domain, and GPUs of held nodes there
        self.dom_free: dict[tuple[GpuType, str], dict[int, int]] = {
            key: dict(v) for key, v in state.dom_free.items()}
        self.held_cap: dict[tuple[GpuType, str], dict[int, int]] = {
            key: {} for key in state.dom_free}
        self.usage = {t: list(u) for t, u in state.usage.items()}
        self.alloc_total = list(state.alloc_total)
        # occupancy and eff per type, bottom-up
        self.occ: dict[GpuType, list[int]] = {}
        self.eff: dict[GpuType, list[int]] = {}
        self.lock: dict[GpuType, list[int]] = {}
        order = sorted(range(len(org.names)), key=lambda i: -org.depth[i])
        for t in cluster.gpu_types:
            g = org.guaranteed[t]
            lend = org.lend_limit[t]
            lock_by = [
                0 if lend[i] is None else max(0, g[i] - (lend[i] or 0))
                for i in range(len(org.names))
            ]
            occ = [0] * len(org.names)
            eff = [0] * len(org.names)
            for i in order:
                if org.is_team[i]:
                    occ[i] = self.usage[t][i]
                eff[i] = max(occ[i], lock_by[i]) if i else occ[i]
                p = org.parent[i]
                if p >= 0:
                    occ[p] += eff[i]
            self.occ[t], self.eff[t], self.lock[t] = occ, eff, lock_by

    # -- free GPUs ---------------------------------------------------------------------
    def _set_free(self, node: int, value: int) -> None:
        if node not in self.held:
            n = self.state.cluster.nodes[node]
            t = n.gpu_type
            delta = value - self.free[node]
            lv = self.levels[t]
            lv[self.free[node]].discard(node)
            lv[value].add(node)
            self.type_free[t] += delta
            self.dom_free[(t, "rack")][n.rack] += delta
            self.dom_free[(t, "pod")][n.pod] += delta
        self.free[node] = value

    def hold(self, nodes: list[int] | tuple[int, ...]) -> None:
        """Keep ``nodes``' free GPUs away from later gangs in this cycle."""
        cluster = self.state.cluster
        for node in nodes:
            if node not in self.held:
                n = cluster.nodes[node]
                t = n.gpu_type
                f = self.free[node]
                self.levels[t][f].discard(node)
                self.type_free[t] -= f
                for level, d in (("rack", n.rack), ("pod", n.pod)):
                    self.dom_free[(t, level)][d] -= f
                    cap = self.held_cap[(t, level)]
                    cap[d] = cap.get(d, 0) + n.gpus
                self.held.add(node)

    def room(self, node: int) -> int:
        """GPUs on ``node`` free or being released and not yet promised to a waiting job."""
        return self.free[node] + self.incoming.get(node, 0) - self.claimed.get(node, 0)

    def usable_for_reclaim(self, node: int) -> bool:
        """Reclaims may share a node held for another reclaim, not one held by a reservation."""
        return node not in self.held or node in self.claimed

    def single_node(self, w: Workload) -> bool:
        """Whether ``w`` is placed on one node (the placement rule, ``on_one_node``)."""
        return on_one_node(w.gpus, self.max_node[w.gpu_type])

    def max_fit(self, gpu_type: GpuType) -> int:
        """Largest single-node gang that fits on unheld nodes now."""
        lv = self.levels[gpu_type]
        for f in range(len(lv) - 1, 0, -1):
            if lv[f]:
                return f
        return 0

    def unheld_free(self, gpu_type: GpuType) -> int:
        return self.type_free[gpu_type]

    def fits(self, w: Workload) -> bool:
        """Whether ``place(w)`` would find a placement (without building it): a gang larger
        than a node always fits at the type level once the type has enough unheld free
        GPUs."""
        if self.single_node(w):
            return self.max_fit(w.gpu_type) >= w.gpus
        return self.type_free[w.gpu_type] >= w.gpus

    def place(self, w: Workload) -> Placement | None:
        """Where ``w`` would go now on unheld free GPUs, or None (``placement`` rules)."""
        t = w.gpu_type
        if self.single_node(w):
            node = place_on_one_node(self.levels[t], w.gpus)
            return None if node is None else ((node, w.gpus),)
        if self.type_free[t] < w.gpus:
            return None
        return self._place_across(t, w.gpus)

    def _place_across(self, t: GpuType, gpus: int) -> Placement:
        """``placement.place_across_nodes`` on this snapshot's aggregates: the smallest level
        whose best-fit domain (fewest unheld free GPUs that still hold the gang; ties: lowest
        id) fits, its nodes with the most free GPUs first. The type level always fits here."""
        free = self.free
        for level in Topology.LEVELS:
            key = (t, level)
            if self.topology.max_capacity[key] < gpus:
                continue
            best: tuple[int, int] | None = None
            for d, total in self.dom_free[key].items():
                if total >= gpus and (best is None or (total, d) < best):
                    best = (total, d)
            if best is None:
                continue
            held = self.held
            members = [i for i in self.topology.members[key][best[1]]
                       if free[i] and i not in held]
            members.sort(key=lambda i: (-free[i], i))
            return _take(members, free, gpus)
        return _take(self.nodes_by_free(t), free, gpus)

    def nodes_by_free(self, t: GpuType) -> list[int]:
        """Unheld nodes of type ``t`` with free GPUs, most free first (ties: lowest index)."""
        lv = self.levels[t]
        out: list[int] = []
        for f in range(len(lv) - 1, 0, -1):
            if lv[f]:
                out.extend(sorted(lv[f]))
        return out

    def unheld_capacity(self, t: GpuType, level: str, d: int) -> int:
        """GPUs of the unheld nodes of domain ``d`` at ``level``."""
        key = (t, level)
        return self.topology.capacity[key].get(d, 0) - self.held_cap[key].get(d, 0)

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
        occ, eff, lock = self.occ[t], self.eff[t], self.lock[t]
        usage = self.usage[t]
        i = org.index[team]
        delta = g
        while i >= 0:
            usage[i] += g
            self.alloc_total[i] += g
            if delta:
                occ[i] += delta
                if i > 0:
                    new_eff = max(occ[i], lock[i])
                    delta, eff[i] = new_eff - eff[i], new_eff
                else:
                    eff[i] = occ[i]
            i = org.parent[i]

    def admit(self, w: Workload, placement: Placement) -> None:
        for node, gpus in placement:
            self._set_free(node, self.free[node] - gpus)
        self._apply_quota(w.team, w.gpu_type, w.gpus)

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


def _take(members: list[int], free: list[int], gpus: int) -> Placement:
    """Take ``gpus`` from ``members`` in order (each node all it has, the last what is left)."""
    out: list[tuple[int, int]] = []
    need = gpus
    for i in members:
        take = min(free[i], need)
        out.append((i, take))
        need -= take
        if need == 0:
            break
    return tuple(sorted(out))


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
