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
    Placement,
    on_one_node,
    place_across_nodes,
    place_on_one_node,
)
from allotment.scheduler.state import ClusterState


class Snapshot:
    """The snapshot of a ``ClusterState`` for one cycle at time ``now``."""

    def __init__(self, state: ClusterState, now: float) -> None:
        self.state = state
        self.now = now
        cluster = state.cluster
        org = state.org
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
        for job in state.running.values():
            if job.terminating_since is not None:
                for node, gpus in job.placement:
                    self.incoming[node] = self.incoming.get(node, 0) + gpus
                self.release(job)
        self.max_node: dict[GpuType, int] = {
            t: cluster.max_node_gpus(t) for t in cluster.gpu_types
        }
        self.levels: dict[GpuType, list[set[int]]] = {}
        for t, ids in cluster.nodes_by_type.items():
            lv: list[set[int]] = [set() for _ in range(self.max_node[t] + 1)]
            for i in ids:
                lv[self.free[i]].add(i)
            self.levels[t] = lv
        # free GPUs on unheld nodes per type: rejects a large gang without a node scan
        self.type_free: dict[GpuType, int] = {
            t: sum(self.free[i] for i in ids) for t, ids in cluster.nodes_by_type.items()
        }
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
        t = self.state.cluster.nodes[node].gpu_type
        if node not in self.held:
            self.levels[t][self.free[node]].discard(node)
            self.levels[t][value].add(node)
            self.type_free[t] += value - self.free[node]
        self.free[node] = value

    def hold(self, nodes: list[int] | tuple[int, ...]) -> None:
        """Keep ``nodes``' free GPUs away from later gangs in this cycle."""
        cluster = self.state.cluster
        for node in nodes:
            if node not in self.held:
                t = cluster.nodes[node].gpu_type
                self.levels[t][self.free[node]].discard(node)
                self.type_free[t] -= self.free[node]
                self.held.add(node)

    def unhold(self, nodes: tuple[int, ...]) -> None:
        """Give held ``nodes``' free GPUs back to later gangs in this cycle."""
        cluster = self.state.cluster
        for node in nodes:
            if node in self.held:
                self.held.discard(node)
                t = cluster.nodes[node].gpu_type
                self.levels[t][self.free[node]].add(node)
                self.type_free[t] += self.free[node]

    def room(self, node: int) -> int:
        """GPUs on ``node`` free or being released and not yet promised to a waiting job."""
        return self.free[node] + self.incoming.get(node, 0) - self.claimed.get(node, 0)

    def usable_for_reclaim(self, node: int) -> bool:
        """Reclaims may share a node held for another reclaim, or one held since the start
        of the cycle for a gang with fill (a job entitled to reclaim comes before such a
        gang, as it would have before the fill), not one held by a reservation."""
        return node not in self.held or node in self.claimed or node in self.preheld

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

    def place(self, w: Workload) -> Placement | None:
        """Where ``w`` would go now on unheld free GPUs, or None."""
        t = w.gpu_type
        if self.single_node(w):
            node = place_on_one_node(self.levels[t], w.gpus)
            return None if node is None else ((node, w.gpus),)
        if self.type_free[t] < w.gpus:
            return None
        cluster = self.state.cluster
        return place_across_nodes(
            cluster.nodes, cluster.nodes_by_type[t], self.free, self.held, w.gpus
        )

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
