"""Run metrics, integrated over the piecewise-constant state between events.

Definitions (all GPU quantities per GPU type, then summed):
- utilization = allocated GPU-time / (capacity x time from first submission to last
  finish).
- idle-while-waiting GPU-hours: while some waiting gang would fit in the free GPUs that
  are not held for a reservation (same placement rules as the scheduler: a gang of at most
  one node needs one node with room; a larger one needs that many free GPUs), the free
  unheld GPUs that such gangs could use: min(free unheld, sum of fitting gangs' sizes).
  A work-conserving scheduler has zero.
- reserved_idle_gpu_hours: free GPUs held for a reserved or reclaiming gang.
- guarantee satisfaction of a team: of the time its demand (running + pending GPUs) was
  >= its guarantee, the fraction in which it held its guarantee, or held so much that no
  pending gang of it fit in the rest of its guarantee (gangs are all-or-nothing).
- Jain's fairness index over teams with demand, of x_i = (time integral of
  min(held_i, guarantee_i)) / (time integral of min(demand_i, guarantee_i)): the part of
  its demanded entitlement each team received. 1 = every team got the same part.
- JCT = finish - submit; queueing = JCT - time holding GPUs (all time spent waiting,
  before the first start and after each preemption). Both over completed jobs.
- queue_by_gang: queueing per gang-size bucket (``GANG_BUCKETS``: 1-8, 9-255, 256-1023,
  1024+ GPUs), over completed jobs: jobs, average, 95th percentile and maximum, so that a
  long wait of a few large gangs shows even when the overall average hides it.
- guaranteed_start_p99_s: over the jobs that fit in their team's unused guarantee when
  submitted (team's GPUs of that type held + its earlier pending jobs' GPUs + this job's
  <= its guarantee), the 99th percentile (nearest rank) of the time from submission to
  first start. A rejected job is left out; one that never started counts its wait up to
  the end of the replay. 0 when no job fits.
- reservations (launch reservations, ``scheduler.launch``), per reservation: ``ready_s``,
  the first time its nodes had its N GPUs free or running its jobs (None: never);
  ``used_gpu_hours``, its jobs' GPU-time within its window; ``held_idle_gpu_hours``, from
  the choice of its nodes to its end, min(free GPUs on its nodes, N - GPUs of its jobs);
  ``held_idle_before_start_gpu_hours``, the part of that before its start.
  Its nodes count as held for idle-while-waiting, but not in reserved_idle_gpu_hours
  (which is about gangs).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from allotment.domain.cluster import GpuType
from allotment.domain.workload import JobId
from allotment.scheduler.decisions import Decisions
from allotment.scheduler.placement import on_one_node
from allotment.scheduler.state import ClusterState
from allotment.sim.journal import JobRecord


@dataclass(slots=True)
class TeamMetrics:
    guaranteed: int
    gpu_hours: float = 0.0
    demand_at_guarantee_h: float = 0.0
    satisfied_h: float = 0.0
    received_entitled_gpu_h: float = 0.0
    demanded_entitled_gpu_h: float = 0.0
    jobs: int = 0
    avg_jct_s: float = 0.0

    @property
    def satisfaction(self) -> float:
        if self.demand_at_guarantee_h <= 0:
            return 1.0
        return self.satisfied_h / self.demand_at_guarantee_h


@dataclass(slots=True)
class RunMetrics:
    jobs: int
    completed: int
    rejected: int
    unfinished: int
    utilization: float
    idle_while_waiting_gpu_hours: float
    reserved_idle_gpu_hours: float
    avg_jct_s: float
    median_jct_s: float
    p95_jct_s: float
    p99_jct_s: float
    avg_queue_s: float
    median_queue_s: float
    p95_queue_s: float
    p99_queue_s: float
    min_team_guarantee_satisfaction: float
    jain_fairness: float
    preemptions: int
    preempted_gpu_hours_lost: float
    makespan_s: float
    teams: dict[str, TeamMetrics] = field(default_factory=dict)
    utilization_bins: list[float] = field(default_factory=list)
    jcts: list[float] = field(default_factory=list)
    guaranteed_start_p99_s: float = 0.0
    guaranteed_start_jobs: int = 0
    queue_by_gang: dict[str, dict[str, float | int]] = field(default_factory=dict)
    jcts_by_gang: dict[str, list[float]] = field(default_factory=dict)  # sorted, per bucket
    reservations: dict[str, dict[str, object]] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        """The keys of ``summary.json`` for one policy (``wall_s`` is added by the caller)."""
        keys = (
            "jobs", "completed", "rejected", "unfinished", "utilization",
            "idle_while_waiting_gpu_hours", "reserved_idle_gpu_hours", "avg_jct_s",
            "median_jct_s", "p95_jct_s", "p99_jct_s", "avg_queue_s", "median_queue_s",
            "p95_queue_s", "p99_queue_s", "min_team_guarantee_satisfaction", "jain_fairness",
            "preemptions", "preempted_gpu_hours_lost", "makespan_s", "guaranteed_start_p99_s",
            "guaranteed_start_jobs", "queue_by_gang", "reservations",
        )
        return {k: getattr(self, k) for k in keys}


# gang-size buckets of ``queue_by_gang``: (name, smallest gang, largest gang)
GANG_BUCKETS = (("1-8", 1, 8), ("9-255", 9, 255), ("256-1023", 256, 1023),
                ("1024+", 1024, 1 << 62))


def gang_bucket(gpus: int) -> str:
    for name, lo, hi in GANG_BUCKETS:
        if lo <= gpus <= hi:
            return name
    return GANG_BUCKETS[-1][0]


def queue_by_gang(jobs: Mapping[JobId, JobRecord]) -> dict[str, dict[str, float | int]]:
    """``queue_by_gang`` of the module docstring, every bucket present (zeros if empty)."""
    waits: dict[str, list[float]] = {name: [] for name, _, _ in GANG_BUCKETS}
    for rec in jobs.values():
        if rec.finish is not None:
            jct = rec.finish - rec.workload.submit_time
            waits[gang_bucket(rec.workload.gpus)].append(jct - rec.run_s)
    out: dict[str, dict[str, float | int]] = {}
    for name, values in waits.items():
        values.sort()
        out[name] = {"jobs": len(values),
                     "avg_queue_s": sum(values) / len(values) if values else 0.0,
                     "p95_queue_s": percentile(values, 95),
                     "max_queue_s": values[-1] if values else 0.0}
    return out


def guaranteed_starts(jobs: Mapping[JobId, JobRecord], guarantee: Callable[[str, str], int],
                      t_end: float) -> list[float]:
    """Sorted waits to first start of the jobs that fit in their team's unused guarantee
    when submitted (module docstring); ``guarantee(team, gpu_type)`` in GPUs."""
    waits = []
    for rec in jobs.values():
        w = rec.workload
        if rec.rejected is not None:
            continue
        need = rec.team_held_at_submit + rec.team_pending_at_submit + w.gpus
        if need <= guarantee(w.team, w.gpu_type):
            start = rec.first_start if rec.first_start is not None else max(t_end,
                                                                           w.submit_time)
            waits.append(start - w.submit_time)
    waits.sort()
    return waits


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty list)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class MetricsRecorder:
    """Integrates the state between events; ``finish`` turns the sums into ``RunMetrics``."""

    def __init__(self, state: ClusterState, bin_s: float) -> None:
        self.state = state
        self.bin_s = bin_s
        self.t: float | None = None
        self.t0: float | None = None
        self.capacity = state.cluster.total_gpus
        self.alloc_gpu_s = 0.0
        self.iww_gpu_s = 0.0
        self.reserved_gpu_s = 0.0
        self.bins: list[float] = []
        org = state.org
        self.team_idx = [i for i in range(len(org.names)) if org.is_team[i]]
        self.teams = {
            org.names[i]: TeamMetrics(sum(org.guaranteed[t][i] for t in org.gpu_types))
            for i in self.team_idx
        }
        self.rejected_ids: set[JobId] = set()
        # per GPU type: the teams with a guarantee of it (index, name, metrics, guarantee),
        # and the others (whose GPU-hours alone are counted); the guarantees are fixed
        self.team_rows = {
            t: ([(i, org.names[i], self.teams[org.names[i]], org.guaranteed[t][i])
                 for i in self.team_idx if org.guaranteed[t][i] > 0],
                [(i, self.teams[org.names[i]]) for i in self.team_idx
                 if org.guaranteed[t][i] <= 0])
            for t in org.gpu_types}
        # per launch reservation: [ready time or None, used GPU-s, held idle GPU-s, the part
        # of it before the start]
        self.launch: dict[str, list[float | None]] = {}

    def rejected(self, job_id: JobId) -> None:
        self.rejected_ids.add(job_id)

    def advance(self, now: float, d: Decisions) -> None:
        if self.t is None:
            self.t = self.t0 = now
            return
        dt = now - self.t
        if dt <= 0:
            return
        state = self.state
        cluster = state.cluster
        free = state.free
        alloc = self.capacity - sum(state.type_free.values())
        self.alloc_gpu_s += alloc * dt
        self._bin(self.t, now, alloc)
        res = d.reservations  # (a gang's may hold thousands of nodes: sets built in C)
        held: set[int] = set(res[0].nodes).union(*[r.nodes for r in res[1:]]) if res else set()
        if state.launch_nodes:
            booked = self._launches(now)
            held -= booked
            both = held | booked
        else:
            booked, both = set(), held
        one_type = len(state.type_free) == 1
        for t, type_free in state.type_free.items():
            # from the state's per-type aggregates: free GPUs on held (reserved) nodes,
            # on the others, and the largest free block on an unheld node
            if one_type:  # every node is of type t
                reserved = sum(map(free.__getitem__, held))
                unheld = type_free - reserved - sum(map(free.__getitem__, booked))
            else:
                reserved = sum(free[i] for i in held if cluster.nodes[i].gpu_type == t)
                unheld = type_free - reserved - sum(
                    free[i] for i in booked if cluster.nodes[i].gpu_type == t)
            biggest = 0
            levels = state.levels[t]
            for f in range(len(levels) - 1, 0, -1):
                if levels[f] and (not both or not levels[f] <= both):
                    biggest = f
                    break
            self.reserved_gpu_s += reserved * dt
            if unheld and state.pending_sizes:
                node_max = len(levels) - 1
                fitting = 0
                for (pt, size), count in state.pending_sizes.items():
                    if pt == t and (size <= biggest if on_one_node(size, node_max)
                                    else size <= unheld):
                        fitting += size * count
                self.iww_gpu_s += min(unheld, fitting) * dt
        self._teams(dt)
        self.t = now

    def _launches(self, now: float) -> set[int]:
        """Integrate the launch reservations over [t, now); returns the nodes held."""
        assert self.t is not None
        state = self.state
        a = self.t
        booked: set[int] = set()
        for name, nodes in state.launch_nodes.items():
            r = state.launches[name]
            if a >= r.end:
                continue
            booked.update(nodes)
            rec = self.launch.setdefault(name, [None, 0.0, 0.0, 0.0])
            free = sum(state.free[i] for i in nodes)
            used = state.launch_used.get(name, 0)
            if rec[0] is None and free + used >= r.gpus:
                rec[0] = a
            w0, w1 = max(a, r.start), min(now, r.end)
            if w1 > w0:
                rec[1] = (rec[1] or 0.0) + used * (w1 - w0)
            idle = min(free, max(0, r.gpus - used))
            rec[2] = (rec[2] or 0.0) + idle * (min(now, r.end) - a)
            if a < r.start:
                rec[3] = (rec[3] or 0.0) + idle * (min(now, r.start) - a)
        return booked

    def _launch_summary(self, name: str) -> dict[str, object]:
        r = self.state.launches[name]
        ready, used, idle, before = self.launch.get(name, [None, 0.0, 0.0, 0.0])
        return {"team": r.team, "gpus": r.gpus, "start_s": r.start, "ready_s": ready,
                "used_gpu_hours": round((used or 0.0) / 3600, 3),
                "held_idle_gpu_hours": round((idle or 0.0) / 3600, 3),
                "held_idle_before_start_gpu_hours": round((before or 0.0) / 3600, 3)}

    def _bin(self, a: float, b: float, alloc: int) -> None:
        assert self.t0 is not None
        while a < b:
            k = int((a - self.t0) // self.bin_s)
            end = min(b, self.t0 + (k + 1) * self.bin_s)
            if end <= a:  # a is a bin's start that rounding put in the bin before
                k += 1
                end = min(b, self.t0 + (k + 1) * self.bin_s)
            while len(self.bins) <= k:
                self.bins.append(0.0)
            self.bins[k] += alloc * (end - a)
            a = end

    def _teams(self, dt: float) -> None:
        state = self.state
        min_gang: dict[tuple[str, str], int] | None = None  # worked out when first needed
        h = dt / 3600.0
        for t, (guaranteed_rows, other_rows) in self.team_rows.items():
            usage = state.usage[t]
            pending = state.pending_gpus[t]
            for i, tm in other_rows:
                tm.gpu_hours += usage[i] * h
            for i, name, tm, g in guaranteed_rows:
                u = usage[i]
                tm.gpu_hours += u * h
                demand = u + pending[i]
                tm.received_entitled_gpu_h += (u if u < g else g) * h
                tm.demanded_entitled_gpu_h += (demand if demand < g else g) * h
                if demand >= g:
                    tm.demand_at_guarantee_h += h
                    if u >= g:
                        tm.satisfied_h += h
                        continue
                    if min_gang is None:
                        min_gang = {}
                        for team, gt, size, _ in state.buckets:
                            k = (team, gt)
                            if size < min_gang.get(k, 1 << 30):
                                min_gang[k] = size
                    if min_gang.get((name, t), 1 << 30) > g - u:
                        tm.satisfied_h += h

    def finish(self, jobs: Mapping[JobId, JobRecord], t_end: float) -> RunMetrics:
        jcts: list[float] = []
        queues: list[float] = []
        per_team: dict[str, list[float]] = {}
        preemptions = 0
        lost = 0.0
        first_submit = min((r.workload.submit_time for r in jobs.values()), default=0.0)
        last_finish = first_submit
        for rec in jobs.values():
            preemptions += rec.preemptions
            lost += rec.lost_gpu_s
            if rec.finish is None:
                continue
            jct = rec.finish - rec.workload.submit_time
            jcts.append(jct)
            queues.append(jct - rec.run_s)
            per_team.setdefault(rec.workload.team, []).append(jct)
            last_finish = max(last_finish, rec.finish)
        for name, values in per_team.items():
            tm = self.teams[name]
            tm.jobs = len(values)
            tm.avg_jct_s = sum(values) / len(values)
        jcts.sort()
        queues.sort()
        makespan = last_finish - first_submit
        # up to the last finish: a wake-up event after the last job must not dilute it
        span = (t_end - self.t0) if self.t0 is not None else 0.0
        xs = [
            tm.received_entitled_gpu_h / tm.demanded_entitled_gpu_h
            for tm in self.teams.values()
            if tm.demanded_entitled_gpu_h > 0
        ]
        total, squares = sum(xs, 0.0), sum((x * x for x in xs), 0.0)  # floats (mypyc)
        jain = (total ** 2 / (len(xs) * squares)) if xs and any(xs) else 1.0
        completed = len(jcts)
        rejected = len(self.rejected_ids)
        org = self.state.org
        started = guaranteed_starts(
            jobs, lambda team, t: org.guarantee_of(team, GpuType(t))
            if team in org.index and GpuType(t) in org.guaranteed else 0, t_end)
        by_gang: dict[str, list[float]] = {name: [] for name, _, _ in GANG_BUCKETS}
        for rec in jobs.values():
            if rec.finish is not None:
                by_gang[gang_bucket(rec.workload.gpus)].append(
                    rec.finish - rec.workload.submit_time)
        for values in by_gang.values():
            values.sort()
        return RunMetrics(
            jobs=len(jobs),
            completed=completed,
            rejected=rejected,
            unfinished=len(jobs) - completed - rejected,
            utilization=self.alloc_gpu_s / (self.capacity * span) if span > 0 else 0.0,
            idle_while_waiting_gpu_hours=self.iww_gpu_s / 3600.0,
            reserved_idle_gpu_hours=self.reserved_gpu_s / 3600.0,
            avg_jct_s=sum(jcts) / completed if completed else 0.0,
            median_jct_s=percentile(jcts, 50),
            p95_jct_s=percentile(jcts, 95),
            p99_jct_s=percentile(jcts, 99),
            avg_queue_s=sum(queues) / completed if completed else 0.0,
            median_queue_s=percentile(queues, 50),
            p95_queue_s=percentile(queues, 95),
            p99_queue_s=percentile(queues, 99),
            min_team_guarantee_satisfaction=min(
                (tm.satisfaction for tm in self.teams.values()), default=1.0
            ),
            jain_fairness=jain,
            preemptions=preemptions,
            preempted_gpu_hours_lost=lost / 3600.0,
            makespan_s=makespan,
            teams=self.teams,
            utilization_bins=[b / (self.capacity * self.bin_s) for b in self.bins],
            jcts=jcts,
            guaranteed_start_p99_s=percentile(started, 99),
            guaranteed_start_jobs=len(started),
            queue_by_gang=queue_by_gang(jobs),
            jcts_by_gang=by_gang,
            reservations={name: self._launch_summary(name)
                          for name in sorted(self.state.launches)},
        )
