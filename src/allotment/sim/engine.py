"""Discrete-event replay of a trace through ``decide``.

The event heap holds ``(time, priority, sequence, kind, job, epoch)`` (SimPy's habit), so
runs repeat exactly. All events at one time are applied (job ends and preemption kills
first, then submissions, then wake-ups), then one scheduling cycle runs and its decisions
are applied. Between two event times the state is constant, and the metrics integrate it.

Work model: a job needs ``duration`` seconds of run time. It checkpoints every
``checkpoint_interval_s`` of a run; when preempted (grace, then kill) it keeps the work up
to its last checkpoint and is requeued with its attained service.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from allotment.domain.cluster import Cluster
from allotment.domain.org import OrgTree
from allotment.domain.workload import JobId, Workload
from allotment.policies.base import Policy
from allotment.scheduler.cycle import decide
from allotment.scheduler.decisions import Decisions
from allotment.scheduler.state import ClusterState
from allotment.sim.metrics import MetricsRecorder, RunMetrics

FINISH, KILL, SUBMIT, WAKE = 0, 1, 2, 3
EventLog = list[tuple[float, str, str, str]]


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Simulation-only knobs: checkpoint cadence, event log, utilisation bin width."""

    checkpoint_interval_s: float | None = 1800.0
    record_events: bool = True
    bin_s: float = 3600.0


@dataclass(slots=True)
class JobRecord:
    """What happened to one job."""

    workload: Workload
    first_start: float | None = None
    finish: float | None = None
    done_s: float = 0.0  # work kept (seconds of run time at full gang)
    run_s: float = 0.0  # wall time spent holding GPUs, including lost work
    preemptions: int = 0
    lost_gpu_s: float = 0.0
    rejected: str | None = None
    epoch: int = 0


@dataclass(slots=True)
class SimResult:
    policy: str
    jobs: dict[JobId, JobRecord]
    events: EventLog
    metrics: RunMetrics
    wall_s: float
    cycles: int = 0


def simulate(
    workloads: Sequence[Workload],
    cluster: Cluster,
    org: OrgTree,
    policy: Policy,
    config: SimConfig | None = None,
    progress: Callable[[float], None] | None = None,
    observer: Callable[[ClusterState, Decisions, float], None] | None = None,
) -> SimResult:
    """Replay ``workloads`` through ``policy``; deterministic for the same inputs.

    ``observer(state, decisions, now)`` is called after each cycle's decisions are applied.
    """
    cfg = config or SimConfig()
    started = time.perf_counter()
    state = ClusterState(cluster, org, pending_key=policy.pending_key)
    jobs: dict[JobId, JobRecord] = {}
    events: EventLog = []
    log = events.append if cfg.record_events else (lambda _e: None)
    heap: list[tuple[float, int, int, int, JobId, int]] = []
    seq = 0
    for w in workloads:
        state.validate(w)
        jobs[w.id] = JobRecord(w)
        heap.append((w.submit_time, SUBMIT, seq, SUBMIT, w.id, 0))
        seq += 1
    heapq.heapify(heap)
    recorder = MetricsRecorder(state, cfg.bin_s)
    wakes: set[float] = set()
    grace = policy.config.grace_s
    last_decisions = Decisions()
    total = len(heap)
    submitted = 0
    cycles = 0
    t_end = max((w.submit_time for w in workloads), default=0.0)

    def push(t: float, kind: int, job_id: JobId, epoch: int) -> None:
        nonlocal seq
        heapq.heappush(heap, (t, kind, seq, kind, job_id, epoch))
        seq += 1

    same_instant, last_now = 0, None
    while heap:
        now = heap[0][0]
        same_instant = same_instant + 1 if now == last_now else 0
        last_now = now
        if same_instant > 10_000:
            raise RuntimeError(f"livelock: over 10,000 cycles at t={now} under {policy.name}")
        recorder.advance(now, last_decisions)
        # apply every event at this time
        while heap and heap[0][0] == now:
            _, _, _, kind, job_id, epoch = heapq.heappop(heap)
            rec = jobs.get(job_id)
            if kind == SUBMIT and rec is not None:
                state.submit(rec.workload)
                submitted += 1
                log((now, "submit", job_id, rec.workload.team))
                if progress is not None and submitted % 1000 == 0:
                    progress(submitted / total)
            elif kind == FINISH and rec is not None and epoch == rec.epoch:
                job = state.stop(job_id, now)
                rec.run_s += now - job.segment_start
                rec.done_s = rec.workload.duration or 0.0
                rec.finish = now
                rec.epoch += 1
                t_end = max(t_end, now)
                log((now, "finish", job_id, ""))
            elif kind == KILL and rec is not None and epoch == rec.epoch:
                job = state.stop(job_id, now)
                ckpt = job.last_checkpoint(now)
                rec.run_s += now - job.segment_start
                rec.done_s += ckpt - job.segment_start
                lost = (now - ckpt) * rec.workload.gpus
                rec.lost_gpu_s += lost
                rec.preemptions += 1
                rec.epoch += 1
                state.submit(rec.workload, job.attained_at(now))
                log((now, "requeue", job_id, f"lost {lost:.0f} GPU-s"))
            elif kind == WAKE:
                wakes.discard(now)
        if not state.num_pending:
            last_decisions = Decisions()
            continue
        cycles += 1
        d = decide(state, policy, now)
        _apply(d, state, jobs, policy, cfg, now, grace, push, log)
        for r in d.rejects:
            recorder.rejected(r.job_id)
        if observer is not None:
            observer(state, d, now)
        if d.wake_at is not None and d.wake_at > now and d.wake_at not in wakes:
            wakes.add(d.wake_at)
            push(d.wake_at, WAKE, JobId(""), 0)
        last_decisions = d
    recorder.advance(t_end, Decisions())
    if progress is not None:
        progress(1.0)
    wall = time.perf_counter() - started
    metrics = recorder.finish(jobs, t_end)
    return SimResult(policy.name, jobs, events, metrics, wall, cycles)


def _apply(
    d: Decisions,
    state: ClusterState,
    jobs: dict[JobId, JobRecord],
    policy: Policy,
    cfg: SimConfig,
    now: float,
    grace: float,
    push: Callable[[float, int, JobId, int], None],
    log: Callable[[tuple[float, str, str, str]], None],
) -> None:
    for r in d.rejects:
        state.remove_pending(r.job_id)
        jobs[r.job_id].rejected = r.reason
        log((now, "reject", r.job_id, r.reason))
    for p in d.preempts:
        state.mark_terminating(p.job_id, now)
        push(now + grace, KILL, p.job_id, jobs[p.job_id].epoch)
        log((now, "preempt", p.job_id, f"for {p.for_job}"))
    for a in d.admits:
        rec = jobs[a.job_id]
        job = state.start(a.job_id, a.placement, now, cfg.checkpoint_interval_s,
                          a.borrowed_gpus)
        if rec.first_start is None:
            rec.first_start = now
        remaining = (rec.workload.duration or 0.0) - rec.done_s
        push(now + remaining, FINISH, a.job_id, rec.epoch)
        wake = policy.start_wakeup(job)
        if wake is not None and wake < now + remaining:
            push(wake, WAKE, JobId(""), 0)
        where = ",".join(f"{n}:{g}" for n, g in a.placement)
        borrowed = f" borrowed={a.borrowed_gpus}" if a.borrowed_gpus else ""
        log((now, "admit", a.job_id, where + borrowed))
    state.last_reservations = {
        r.job_id: r.domain for r in d.reservations if not r.reclaim
    }
