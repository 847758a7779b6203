"""The mutable cluster state that the edges (simulator, service) keep and ``decide`` reads.

``decide`` treats a ``ClusterState`` as a read-only snapshot: it copies what it changes into
a snapshot (``scheduler.snapshot``) and returns decisions; the caller applies them here with
``start``, ``mark_terminating`` and ``stop``. Aggregates (free GPUs per node, usage per org
node, decayed usage) are kept incrementally so a cycle never rescans every job.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from allotment.domain.cluster import Cluster, GpuType
from allotment.domain.org import OrgTree
from allotment.domain.reservation import LaunchReservation
from allotment.domain.workload import JobId, RunningJob, Workload
from allotment.errors import InputError
from allotment.scheduler.ledger import Ledger
from allotment.scheduler.placement import DomainFree, DomainIndex, domain_index

BucketKey = tuple[str, GpuType, int, str]  # (team, gpu type, gang size, reservation or "")
Domain = tuple[str, int]  # (topology level, domain id) of a reservation
PendingKey = Callable[[Workload, float], tuple[float | int, ...]]


def default_pending_key(w: Workload, attained_gpu_s: float) -> tuple[float | int, ...]:
    """Within one bucket: higher priority class first, then submit time, then sequence."""
    return (-w.priority, w.submit_time, w.seq)


def propagate_occupancy(parent: list[int], i: int, gpus: int, occ: list[int],
                        eff: list[int], lock: list[int]) -> None:
    """Add ``gpus`` (negative: remove) to team ``i``'s occupancy and carry the change up:
    O_N += delta; eff_N = max(O_N, lock_N) below the root (eff_root = O_root); the parent's
    occupancy changes by what eff_N changed, and the walk stops where nothing changes."""
    delta = gpus
    while i >= 0 and delta:
        occ[i] += delta
        if i > 0:
            new_eff = max(occ[i], lock[i])
            delta, eff[i] = new_eff - eff[i], new_eff
        else:
            eff[i] = occ[i]
        i = parent[i]


@dataclass(frozen=True, slots=True)
class SchedulerMemory:
    """What one cycle carries to the next beyond the jobs themselves, so that a restarted
    or failed-over scheduler continues where the last one stopped: each org node's decayed
    usage ``(D, t)`` (GPU-seconds valid at time t; fair share's memory), the topology
    domain each waiting job had reserved (reservations are sticky), the running jobs that
    fill GPUs held for a gang (job -> gang), the nodes of each gang whose fill is being
    preempted, the budget and credit ledger (``scheduler.ledger``), and the nodes chosen
    for each launch reservation (``scheduler.launch``). Keyed by names, so it survives a
    rebuilt org index."""

    decayed: dict[str, tuple[float, float]] = field(default_factory=dict)
    reservations: dict[str, Domain] = field(default_factory=dict)
    fill: dict[str, str] = field(default_factory=dict)
    fill_nodes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    ledger: dict[str, object] = field(default_factory=dict)
    launches: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "decayed": {k: [d, t] for k, (d, t) in sorted(self.decayed.items())},
            "reservations": {k: [lv, i] for k, (lv, i) in sorted(self.reservations.items())},
            "fill": dict(sorted(self.fill.items())),
            "fill_nodes": {k: list(v) for k, v in sorted(self.fill_nodes.items())}}
        if self.ledger:
            out["ledger"] = self.ledger
        if self.launches:
            out["launches"] = {k: list(v) for k, v in sorted(self.launches.items())}
        return out

    @staticmethod
    def from_json(raw: dict[str, object]) -> SchedulerMemory:
        decayed = raw.get("decayed") or {}
        reservations = raw.get("reservations") or {}
        fill = raw.get("fill") or {}
        fill_nodes = raw.get("fill_nodes") or {}
        launches = raw.get("launches") or {}
        assert isinstance(decayed, dict) and isinstance(reservations, dict)
        assert isinstance(fill, dict) and isinstance(fill_nodes, dict)
        assert isinstance(launches, dict)
        return SchedulerMemory(
            {str(k): (float(v[0]), float(v[1])) for k, v in decayed.items()},
            {str(k): (str(v[0]), int(v[1])) for k, v in reservations.items()},
            {str(k): str(v) for k, v in fill.items()},
            {str(k): tuple(int(n) for n in v) for k, v in fill_nodes.items()},
            dict(raw.get("ledger") or {}),  # type: ignore[call-overload]
            {str(k): tuple(int(n) for n in v) for k, v in launches.items()})


@dataclass(slots=True)
class Bucket:
    """Pending jobs of one team, GPU type and gang size, sorted by the policy's pending key."""

    key: BucketKey
    keys: list[tuple[float | int, ...]] = field(default_factory=list)
    jobs: list[Workload] = field(default_factory=list)
    # the state's change count when a job last joined or left (unique across buckets, so
    # an unchanged value means the same jobs in the same order: explanations reuse it)
    version: int = 0


class ClusterState:
    """Everything a scheduling cycle needs, kept up to date by the edge that owns the jobs."""

    def __init__(
        self,
        cluster: Cluster,
        org: OrgTree,
        pending_key: PendingKey = default_pending_key,
        usage_half_life_s: float = 7 * 24 * 3600.0,
    ) -> None:
        self.cluster = cluster
        self.org = org
        self.pending_key = pending_key
        self.half_life_s = usage_half_life_s
        self.free: list[int] = [n.gpus for n in cluster.nodes]
        self.node_gpus: list[int] = [n.gpus for n in cluster.nodes]  # (never changes)
        self.running: dict[JobId, RunningJob] = {}
        self.running_by_team: dict[str, dict[JobId, RunningJob]] = {}
        self.buckets: dict[BucketKey, Bucket] = {}
        self.bucket_changes = 0  # joins and leaves of pending jobs so far (``Bucket.version``)
        self._grouped: bool | None = None  # see grouped_org
        # jobs preempted with no grace period, requeued at this instant (``apply.requeue``)
        self.requeued_at: dict[JobId, float] = {}
        self.pending_index: dict[JobId, BucketKey] = {}
        self.pending_attained: dict[JobId, float] = {}
        self.usage: dict[GpuType, list[int]] = {
            t: [0] * len(org.names) for t in cluster.gpu_types
        }
        self.alloc_total: list[int] = [0] * len(org.names)  # all GPU types, per org node
        # decayed usage D (GPU-seconds, half-life H) per org node, valid at decay_time[i]
        self.decayed: list[float] = [0.0] * len(org.names)
        self.decay_time: list[float] = [0.0] * len(org.names)
        # pending GPUs per team index and GPU type; counts of pending gangs per (type, size)
        self.pending_gpus: dict[GpuType, list[int]] = {
            t: [0] * len(org.names) for t in cluster.gpu_types
        }
        self.pending_sizes: dict[tuple[GpuType, int], int] = {}
        # domain ((level, id)) of each job's reservation in the last cycle: kept sticky
        self.last_reservations: dict[JobId, Domain] = {}
        self._teams_below: dict[int, list[str]] = {}
        # jobs told to stop whose GPUs are not back yet (their GPUs are on their way out)
        self.terminating: dict[JobId, RunningJob] = {}
        # placement index, kept per GPU type: levels[t][f] = nodes of type t with f free
        # GPUs, f >= 1 (levels[t][0] stays empty: no reader wants the full nodes, the
        # largest set on a busy cluster, and a snapshot would copy it each cycle);
        # type_free[t] = free GPUs of type t (a snapshot copies both)
        self.levels: dict[GpuType, list[set[int]]] = {}
        for t, ids in cluster.nodes_by_type.items():
            lv: list[set[int]] = [set() for _ in range(cluster.max_node_gpus(t) + 1)]
            for i in ids:
                if self.free[i]:
                    lv[self.free[i]].add(i)
            self.levels[t] = lv
        self.type_free: dict[GpuType, int] = {
            t: sum(self.free[i] for i in ids) for t, ids in cluster.nodes_by_type.items()}
        # the nodes of each rack and pod, and their free GPUs, per type
        self.domains: dict[GpuType, DomainIndex] = {
            t: domain_index(cluster.nodes, ids) for t, ids in cluster.nodes_by_type.items()}
        self.domain_capacity: dict[GpuType, DomainFree] = {  # GPUs per rack and pod
            t: {level: {d: sum(cluster.nodes[i].gpus for i in members)
                        for d, members in doms.items()}
                for level, doms in index.items()}
            for t, index in self.domains.items()}
        self.largest_domain: dict[GpuType, dict[str, int]] = {  # GPUs of the largest
            t: {level: max(caps.values(), default=0) for level, caps in dom.items()}
            for t, dom in self.domain_capacity.items()}
        self.type_capacity: dict[GpuType, int] = {
            t: sum(cluster.nodes[i].gpus for i in ids) for t, ids in cluster.nodes_by_type.items()}
        self.domain_free: dict[GpuType, DomainFree] = {
            t: {level: {d: sum(self.free[i] for i in members) for d, members in doms.items()}
                for level, doms in index.items()}
            for t, index in self.domains.items()}
        # hierarchical quota occupancy (see scheduler.snapshot): lock_N = G_N - L_N, the
        # guarantee N may not lend (fixed per org); occ and eff kept as usage changes
        self.lock: dict[GpuType, list[int]] = {}
        self.occ: dict[GpuType, list[int]] = {}
        self.eff: dict[GpuType, list[int]] = {}
        for t in cluster.gpu_types:
            g, lend = org.guaranteed[t], org.lend_limit[t]
            lock = [0 if lend[i] is None else max(0, g[i] - (lend[i] or 0))
                    for i in range(len(org.names))]
            self.lock[t] = lock
            self.occ[t] = [0] * len(org.names)
            # eff_N = max(O_N, lock_N) below the root, O_root at the root
            eff = list(lock)
            eff[0] = 0
            self.eff[t] = eff
            # an internal node's occupancy starts as the sum of its children's eff
            for i in sorted(range(1, len(org.names)), key=lambda i: -org.depth[i]):
                p = org.parent[i]
                self.occ[t][p] += self.eff[t][i]
                if p > 0:
                    self.eff[t][p] = max(self.occ[t][p], lock[p])
                else:
                    self.eff[t][0] = self.occ[t][0]
        # budgets and credit (set by the edge; integrated before every change of usage)
        self.ledger = Ledger()
        # running jobs on GPUs held for a blocked gang (fill job -> gang), and the nodes
        # held for each gang whose fill is being preempted (held first in each cycle)
        self.fill: dict[JobId, JobId] = {}
        self.fill_nodes: dict[JobId, tuple[int, ...]] = {}
        # launch reservations (set by the edge with ``set_launches``), by name, and the
        # nodes chosen for each once its preparation began (``scheduler.launch``)
        self.launches: dict[str, LaunchReservation] = {}
        self.launch_nodes: dict[str, tuple[int, ...]] = {}
        self.launch_used: dict[str, int] = {}  # GPUs running jobs of each reservation hold

    # -- queries -------------------------------------------------------------------------
    def teams_below(self, node: int) -> list[str]:
        """Names of the teams in org node ``node``'s subtree (cached; the org is fixed)."""
        below = self._teams_below.get(node)
        if below is None:
            org = self.org
            below = [org.names[i] for i in range(len(org.names))
                     if org.is_team[i] and node in org.path[i]]
            self._teams_below[node] = below
        return below

    def grouped_org(self) -> bool:
        """Whether some top-level org node has more than one team under it (cached)."""
        if self._grouped is None:
            org = self.org
            tops = {org.path[i][0] for i in range(1, len(org.names)) if org.is_team[i]}
            self._grouped = any(len(self.teams_below(t)) > 1 for t in tops)
        return self._grouped

    def pending_jobs(self) -> Iterator[Workload]:
        for key in sorted(self.buckets):
            yield from self.buckets[key].jobs

    @property
    def num_pending(self) -> int:
        return len(self.pending_index)

    def decayed_usage(self, i: int, now: float) -> float:
        """Decayed GPU-seconds of org node ``i`` at ``now`` (no mutation).

        D(t) = D(t0)·2^(-(t-t0)/H) + A·(H/ln 2)·(1 - 2^(-(t-t0)/H)), where A is the GPUs
        the node held over [t0, t], constant between updates.
        """
        t0 = self.decay_time[i]
        if now <= t0:
            return self.decayed[i]
        h = self.half_life_s
        f = math.exp2(-(now - t0) / h)
        return self.decayed[i] * f + self.alloc_total[i] * (h / math.log(2)) * (1.0 - f)

    def memory(self) -> SchedulerMemory:
        """The cycle-to-cycle memory to persist (see ``SchedulerMemory``)."""
        names = self.org.names
        return SchedulerMemory(
            {names[i]: (self.decayed[i], self.decay_time[i]) for i in range(1, len(names))
             if self.decayed[i] or self.decay_time[i]},
            {str(j): d for j, d in self.last_reservations.items()},
            {str(j): str(g) for j, g in self.fill.items()},
            {str(g): n for g, n in self.fill_nodes.items()},
            self.ledger.to_json() if self.ledger.active else {},
            dict(self.launch_nodes))

    def restore(self, memory: SchedulerMemory) -> None:
        """Take back a persisted memory, after the running and pending jobs were re-added:
        decayed usage of the org nodes that still exist, and the reservations of jobs that
        still wait. Decayed usage then integrates the jobs running now from each node's
        saved time on."""
        for name, (d, t) in memory.decayed.items():
            i = self.org.index.get(name)
            if i is not None and i > 0:
                self.decayed[i], self.decay_time[i] = d, t
        self.last_reservations = {JobId(j): d for j, d in memory.reservations.items()
                                  if JobId(j) in self.pending_index}
        self.fill = {JobId(j): JobId(g) for j, g in memory.fill.items()
                     if JobId(j) in self.running and JobId(g) in self.pending_index}
        self.fill_nodes = {JobId(g): n for g, n in memory.fill_nodes.items()
                           if JobId(g) in self.pending_index
                           and all(0 <= i < len(self.free) for i in n)}
        if memory.ledger:
            self.ledger.restore(memory.ledger, set(self.org.team_ids))
        self.launch_nodes = {k: n for k, n in memory.launches.items() if k in self.launches
                             and all(0 <= i < len(self.free) for i in n)}

    def set_launches(self, launches: Iterable[LaunchReservation]) -> None:
        """Replace the launch reservations the scheduler knows (approved ones, ended ones
        included while jobs may still name them); nodes chosen for one that is gone or whose
        team, type or size changed are forgotten."""
        new = {r.name: r for r in launches}
        self.launch_nodes = {k: n for k, n in self.launch_nodes.items() if k in new and (
            self.launches.get(k) is None or (
                self.launches[k].gpu_type, self.launches[k].gpus, self.launches[k].team)
            == (new[k].gpu_type, new[k].gpus, new[k].team))}
        self.launches = new

    def launches_open(self, now: float) -> bool:
        """Whether a launch reservation has not ended by ``now`` (cycles are then needed
        even with no job waiting: to free its GPUs by its start)."""
        return any(now < r.end for r in self.launches.values())

    # -- pending -------------------------------------------------------------------------
    def unschedulable(self, w: Workload) -> tuple[str, str] | None:
        """``(field, why)`` if ``w`` can never be scheduled on this cluster and org, else
        None: the one check of a pending job, for the simulator (which refuses the trace)
        and the service (which keeps the job waiting with the reason)."""
        if w.gpus <= 0:
            return "gpus", f"must be >= 1, got {w.gpus}"
        if w.gpu_type not in self.cluster.nodes_by_type:
            return "gpu_type", f"no {w.gpu_type!r} GPUs in the inventory (of the nodes up)"
        i = self.org.index.get(w.team)
        if i is None or not self.org.is_team[i]:
            return "team", f"team {w.team!r} is not a team of the org tree now"
        cap = self.cluster.capacity(w.gpu_type)
        if w.gpus > cap:
            return "gpus", f"gang of {w.gpus} exceeds the {cap} {w.gpu_type} GPUs up now"
        if w.reservation is not None:
            r = self.launches.get(w.reservation)
            if r is None:
                return "reservation", f"no approved reservation named {w.reservation!r}"
            if r.team != w.team:
                return "reservation", f"reservation {r.name!r} belongs to team {r.team!r}"
            if r.gpu_type != w.gpu_type:
                return "reservation", f"reservation {r.name!r} holds {r.gpu_type} GPUs"
            if w.gpus > r.gpus:
                return "reservation", (f"gang of {w.gpus} exceeds the {r.gpus} GPUs of "
                                       f"reservation {r.name!r}")
        return None

    def validate(self, w: Workload) -> None:
        """Raise ``InputError`` naming the field if ``w`` can never be scheduled here."""
        bad = self.unschedulable(w)
        if bad is not None:
            raise InputError(*bad)
        if w.id in self.pending_index or w.id in self.running:
            raise InputError("id", f"job {w.id!r} already exists")

    def submit(self, w: Workload, attained_gpu_s: float = 0.0) -> None:
        """Queue ``w`` (a new job, or a preempted one with its attained service)."""
        key: BucketKey = (w.team, w.gpu_type, w.gpus, w.reservation or "")
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = Bucket(key)
        sort_key = self.pending_key(w, attained_gpu_s)
        pos = bisect.bisect_right(bucket.keys, sort_key)
        bucket.keys.insert(pos, sort_key)
        bucket.jobs.insert(pos, w)
        self.bucket_changes += 1
        bucket.version = self.bucket_changes
        self.pending_index[w.id] = key
        self.pending_attained[w.id] = attained_gpu_s
        self.pending_gpus[w.gpu_type][self.org.index[w.team]] += w.gpus
        sk = (w.gpu_type, w.gpus)
        self.pending_sizes[sk] = self.pending_sizes.get(sk, 0) + 1

    def remove_pending(self, job_id: JobId) -> tuple[Workload, float]:
        """Take a job out of its queue; returns it and its attained GPU-seconds."""
        key = self.pending_index[job_id]
        bucket = self.buckets[key]
        return self._remove_at(bucket, self._position(bucket, job_id))

    @staticmethod
    def _position(bucket: Bucket, job_id: JobId) -> int:
        return next(k for k, job in enumerate(bucket.jobs) if job.id == job_id)

    def _remove_at(self, bucket: Bucket, pos: int) -> tuple[Workload, float]:
        w = bucket.jobs[pos]
        key = bucket.key
        del self.pending_index[w.id]
        del bucket.jobs[pos]
        del bucket.keys[pos]
        self.bucket_changes += 1
        bucket.version = self.bucket_changes
        if not bucket.jobs:
            del self.buckets[key]
        self.pending_gpus[w.gpu_type][self.org.index[w.team]] -= w.gpus
        sk = (w.gpu_type, w.gpus)
        self.pending_sizes[sk] -= 1
        if not self.pending_sizes[sk]:
            del self.pending_sizes[sk]
        return w, self.pending_attained.pop(w.id)

    # -- running -------------------------------------------------------------------------
    def _account(self, team: str, gpu_type: GpuType, gpus: int, now: float) -> None:
        self.ledger.advance(self, now)
        usage = self.usage[gpu_type]
        i = self.org.index[team]
        while i >= 0:
            self.decayed[i] = self.decayed_usage(i, now)
            self.decay_time[i] = now
            usage[i] += gpus
            self.alloc_total[i] += gpus
            i = self.org.parent[i]
        propagate_occupancy(self.org.parent, self.org.index[team], gpus,
                            self.occ[gpu_type], self.eff[gpu_type], self.lock[gpu_type])

    def _set_free(self, node: int, value: int) -> None:
        t = self.cluster.nodes[node].gpu_type
        lv = self.levels[t]
        if self.free[node]:
            lv[self.free[node]].discard(node)
        if value:
            lv[value].add(node)
        change = value - self.free[node]
        self.type_free[t] += change
        n = self.cluster.nodes[node]
        dom = self.domain_free[t]
        dom["rack"][n.rack] += change
        dom["pod"][n.pod] += change
        self.free[node] = value

    def start(
        self,
        job_id: JobId,
        placement: tuple[tuple[int, int], ...],
        now: float,
        checkpoint_interval_s: float | None = None,
        borrowed_gpus: int = 0,
    ) -> RunningJob:
        """Move a pending job onto ``placement`` (validated against free GPUs)."""
        free = self.free
        nodes = self.cluster.nodes
        bucket = self.buckets[self.pending_index[job_id]]
        pos = self._position(bucket, job_id)
        w = bucket.jobs[pos]
        if sum(g for _, g in placement) != w.gpus:
            raise ValueError(f"placement of {job_id} does not hold its {w.gpus} GPUs")
        for node, gpus in placement:
            if nodes[node].gpu_type != w.gpu_type or free[node] < gpus or gpus <= 0:
                raise ValueError(f"placement of {job_id} on node {node} is not possible")
        w, attained = self._remove_at(bucket, pos)
        for node, gpus in placement:
            self._set_free(node, free[node] - gpus)
        self._account(w.team, w.gpu_type, w.gpus, now)
        if w.reservation is not None:
            self.launch_used[w.reservation] = self.launch_used.get(w.reservation, 0) + w.gpus
        job = RunningJob(w, placement, now, attained, checkpoint_interval_s,
                         borrowed_gpus=borrowed_gpus)
        self.running[job_id] = job
        self.running_by_team.setdefault(w.team, {})[job_id] = job
        return job

    def mark_terminating(self, job_id: JobId, now: float) -> None:
        job = self.running[job_id]
        if job.terminating_since is None:
            job.terminating_since = now
        self.terminating[job_id] = job

    def stop(self, job_id: JobId, now: float) -> RunningJob:
        """Release a running job's GPUs (finished, failed, cancelled or preempted)."""
        job = self.running.pop(job_id)
        del self.running_by_team[job.workload.team][job_id]
        self.terminating.pop(job_id, None)
        self.fill.pop(job_id, None)
        for node, gpus in job.placement:
            self._set_free(node, self.free[node] + gpus)
        w = job.workload
        self._account(w.team, w.gpu_type, -w.gpus, now)
        if w.reservation is not None:
            left = self.launch_used.get(w.reservation, 0) - w.gpus
            if left > 0:
                self.launch_used[w.reservation] = left
            else:
                self.launch_used.pop(w.reservation, None)
        return job
