"""Discrete-event replay of a trace through ``decide`` (``allot simulate --engine memory``).

The event heap holds ``(time, kind, sequence, job, epoch)`` (SimPy's habit), so runs repeat
exactly. All events at one time are applied, in the canonical order of ``scheduler.apply``
(runs that ended, then submissions), then one scheduling cycle runs if something happened
and jobs wait, and its decisions go through ``scheduler.apply.apply`` with this engine's
sink: an admission schedules the job's finish after its remaining work, a preemption its
kill after the grace period. Between two event times the state is constant, and the
metrics integrate it.

Work model: a job needs ``duration`` seconds of run time. It checkpoints every
``SchedulerConfig.checkpoint_s`` of a run; when preempted (grace, then kill) it keeps the
work up to its last checkpoint and is requeued with its attained service. A run that
reaches its end during its grace period has finished. A start wake-up (a LAS demotion)
fires only while that run is still going.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum

from allotment.domain.cluster import Cluster
from allotment.domain.org import OrgTree
from allotment.domain.reservation import LaunchReservation
from allotment.domain.workload import JobId, RunningJob, Workload
from allotment.scheduler import apply as path
from allotment.scheduler.cycle import decide
from allotment.scheduler.decisions import Admit, Decisions, Preempt
from allotment.scheduler.ledger import BudgetKey, Ledger, make_ledger
from allotment.scheduler.policy import Policy
from allotment.scheduler.state import ClusterState
from allotment.sim.journal import EventLog, JobRecord, Journal
from allotment.sim.metrics import MetricsRecorder, RunMetrics


class HeapKind(IntEnum):
    """Heap events; at one time they are taken in this order."""

    FINISH = 0  # a run's work is done
    KILL = 1  # a preempted run's grace period is over
    SUBMIT = 2
    WAKE = 3  # a cycle is wanted (a victim old enough, a demotion, a starvation guard)


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Simulation-only knobs: event log, utilisation bin width (the scheduler's own knobs,
    checkpoints included, are the policy's ``SchedulerConfig``)."""

    record_events: bool = True
    bin_s: float = 3600.0


@dataclass(slots=True)
class SimResult:
    policy: str
    jobs: dict[JobId, JobRecord]
    events: EventLog
    metrics: RunMetrics
    wall_s: float
    cycles: int = 0
    ledger: Ledger | None = None  # budgets and credits at the end (``scheduler.ledger``)


@dataclass(slots=True)
class _Run:
    """The simulator's knowledge of a job's work: kept work and the current run's epoch."""

    done_s: float = 0.0
    epoch: int = 0
    ends_at: float = 0.0


HeapEntry = tuple[float, int, int, JobId, int]


class _HeapSink:
    """The simulator's sink: decisions become future heap events."""

    def __init__(self, runs: dict[JobId, _Run], durations: dict[JobId, float],
                 grace_s: float) -> None:
        self.heap: list[HeapEntry] = []
        self.seq = 0
        self.runs = runs
        self.durations = durations
        self.grace_s = grace_s
        self.wakes: set[float] = set()

    def push(self, t: float, kind: HeapKind, job_id: JobId, epoch: int = 0) -> None:
        heapq.heappush(self.heap, (t, kind, self.seq, job_id, epoch))
        self.seq += 1

    def reject(self, job_id: JobId, reason: str, now: float) -> bool:
        return True

    def preempt(self, p: Preempt, now: float) -> bool:
        self.push(now + self.grace_s, HeapKind.KILL, p.job_id, self.runs[p.job_id].epoch)
        return True

    def admit(self, a: Admit, now: float) -> bool:
        run = self.runs[a.job_id]
        run.ends_at = now + self.durations[a.job_id] - run.done_s
        self.push(run.ends_at, HeapKind.FINISH, a.job_id, run.epoch)
        return True

    def wake(self, t: float, job: RunningJob | None = None) -> None:
        if job is not None:
            run = self.runs[job.workload.id]
            if t < run.ends_at:  # a wake-up after the run's end would be dropped anyway
                self.push(t, HeapKind.WAKE, job.workload.id, run.epoch)
        elif t not in self.wakes:
            self.wakes.add(t)
            self.push(t, HeapKind.WAKE, JobId(""), 0)


def simulate(
    workloads: Sequence[Workload],
    cluster: Cluster,
    org: OrgTree,
    policy: Policy,
    config: SimConfig | None = None,
    progress: Callable[[float], None] | None = None,
    observer: Callable[[ClusterState, Decisions, float], None] | None = None,
    budgets: dict[BudgetKey, float] | None = None,
    launches: Sequence[LaunchReservation] = (),
) -> SimResult:
    """Replay ``workloads`` through ``policy``; deterministic for the same inputs.

    ``observer(state, decisions, now)`` is called after each cycle's decisions are applied.
    ``budgets``: GPU-hours per (team, GPU type) for the whole trace (its period).
    ``launches``: the launch reservations (approved; times on the trace's clock).
    """
    cfg = config or SimConfig()
    started = time.perf_counter()
    state = ClusterState(cluster, org, pending_key=policy.pending_key,
                         usage_half_life_s=policy.config.usage_half_life_s)
    state.ledger = make_ledger(policy.config.credit_half_life_s, policy.config.credit_cap,
                               budgets)
    state.set_launches(launches)
    journal = Journal(workloads, cfg.record_events)
    runs: dict[JobId, _Run] = {}
    durations: dict[JobId, float] = {}
    by_id: dict[JobId, Workload] = {}
    sink = _HeapSink(runs, durations, policy.config.grace_s)
    for w in workloads:
        state.validate(w)
        if w.id in by_id:
            raise ValueError(f"job {w.id!r} appears twice")
        by_id[w.id] = w
        runs[w.id] = _Run()
        durations[w.id] = w.duration or 0.0
        sink.push(w.submit_time, HeapKind.SUBMIT, w.id)
    heap = sink.heap
    recorder = MetricsRecorder(state, cfg.bin_s)
    last_decisions = Decisions()
    total = len(heap)
    submitted = 0
    cycles = 0
    t_end = max((w.submit_time for w in workloads), default=0.0)

    same_instant, last_now = 0, None
    while heap:
        now = heap[0][0]
        same_instant = same_instant + 1 if now == last_now else 0
        last_now = now
        if same_instant > 10_000:
            raise RuntimeError(f"livelock: over 10,000 cycles at t={now} under {policy.name}")
        ended: list[tuple[bool, Workload]] = []
        arrivals: list[Workload] = []
        changed = wake_due = False
        while heap and heap[0][0] == now:
            _, kind, _, job_id, epoch = heapq.heappop(heap)
            if kind == HeapKind.SUBMIT:
                arrivals.append(by_id[job_id])
            elif kind == HeapKind.WAKE:
                if not job_id:
                    sink.wakes.discard(now)
                    wake_due = True
                elif job_id in state.running and runs[job_id].epoch == epoch:
                    wake_due = True
            elif runs[job_id].epoch == epoch:  # FINISH or KILL of the current run
                runs[job_id].epoch += 1
                ended.append((kind == HeapKind.KILL, by_id[job_id]))
        if not (ended or arrivals or wake_due):
            continue  # only stale events (a preempted run's old finish, a wake-up of a
            # run gone): nothing happens now, and the metrics integrate on
        recorder.advance(now, last_decisions)
        for w in path.end_order(ended):
            run = runs[w.id]
            if run.ends_at <= now:  # done, even if its grace period was running
                path.finish(state, w.id, now, journal)
                run.done_s = durations[w.id]
                t_end = max(t_end, now)
            else:
                job, _ = path.requeue(state, w.id, now, journal)
                run.done_s += job.last_checkpoint(now) - job.segment_start
        for w in arrivals:
            path.submit(state, w, now, journal)
            submitted += 1
            if progress is not None and submitted % 1000 == 0:
                progress(submitted / total)
        changed = bool(ended or arrivals)
        if not path.should_decide(state, changed, wake_due, now):
            if not state.num_pending:
                last_decisions = Decisions()
            continue
        cycles += 1
        d = decide(state, policy, now, reasons=observer is not None)
        path.apply(d, state, policy, sink, now, journal)
        for r in d.rejects:
            recorder.rejected(r.job_id)
        if observer is not None:
            observer(state, d, now)
        last_decisions = d
    recorder.advance(t_end, Decisions())
    state.ledger.advance(state, t_end)
    if progress is not None:
        progress(1.0)
    wall = time.perf_counter() - started
    metrics = recorder.finish(journal.jobs, t_end)
    return SimResult(policy.name, journal.jobs, journal.events, metrics, wall, cycles,
                     state.ledger)
