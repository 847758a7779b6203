"""``allot simulate --engine service``: replay a trace through the real ``SchedulerLoop`` on
a temporary SQLite database, with the replay backend (``backends.fake.ReplayBackend``: runs
last their remaining work, preempted runs exit after the grace period) and a virtual clock
that jumps to the next event: a submission, the end of a run or of a grace period, or a
wake-up the loop asked for. Jobs are submitted through the service's own submit path (the
inbox included); one ``loop.tick()`` runs at each event time, and again at the same time
while it left something changed (a run that ended at once).

It writes the same ``SimResult`` as the in-memory engine (``sim.engine``): the event log
and job records come from the same observer calls (``sim.journal``), the metrics from the
same recorder, so on any trace the two logs must be identical.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from allotment.backends.fake import ReplayBackend
from allotment.domain.cluster import Cluster, GpuType
from allotment.domain.org import OrgTree
from allotment.domain.orgspec import org_to_data
from allotment.domain.reservation import LaunchReservation
from allotment.domain.workload import JobId, Workload
from allotment.errors import InputError
from allotment.policies import make_policy
from allotment.scheduler.config import SchedulerConfig
from allotment.scheduler.decisions import Decisions
from allotment.scheduler.state import ClusterState
from allotment.service.loop import LoopConfig, SchedulerLoop
from allotment.sim.engine import SimConfig, SimResult
from allotment.sim.journal import Journal
from allotment.sim.metrics import MetricsRecorder
from allotment.storage import budgets as budget_rows
from allotment.storage import jobs as jobrepo
from allotment.storage import repo
from allotment.storage import reservations as reservation_rows
from allotment.storage.db import Database

PRIORITY_CLASS = {-1: "low", 0: "normal", 1: "high"}


class VirtualClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def replay(workloads: Sequence[Workload], cluster: Cluster, org: OrgTree,
           config: SchedulerConfig, sim: SimConfig | None = None,
           progress: Callable[[float], None] | None = None,
           budgets: dict[tuple[str, GpuType], float] | None = None,
           launches: Sequence[LaunchReservation] = ()) -> SimResult:
    """Replay ``workloads`` through the service loop under ``config``; ``budgets`` (GPU-hours
    per team and GPU type) are the org file's, for the whole trace; ``launches`` (times on
    the trace's clock) are stored as approved reservations, which the loop loads as it loads
    real ones."""
    cfg = sim or SimConfig()
    started = time.perf_counter()
    policy = make_policy(config.policy, config)
    check = ClusterState(cluster, org)
    check.set_launches(launches)
    for w in workloads:
        check.validate(w)
        if w.priority not in PRIORITY_CLASS:
            raise InputError("priority", f"job {w.id}: the service engine knows priorities "
                             f"-1, 0 and 1 (low, normal, high), not {w.priority}")
        check.submit(w)
    order = sorted(workloads, key=lambda w: (w.submit_time, w.seq))
    t0 = order[0].submit_time if order else 0.0
    with tempfile.TemporaryDirectory(prefix="allot-replay-") as tmp:
        db = Database(f"sqlite:///{Path(tmp) / 'replay.db'}", Path(tmp) / "data")
        db.upgrade()
        with db.session() as s:
            repo.set_inventory(s, [repo.NodeSpec(n.name, n.gpu_type, n.gpus, n.rack, n.pod)
                                   for n in cluster.nodes], "replay", t0)
            repo.set_org(s, org_to_data(org), "replay", t0)
            budget_rows.set_period(s, "default", budgets or {}, "replay")
            for r in launches:
                reservation_rows.add(
                    s, name=r.name, team=r.team, gpu_type=str(r.gpu_type), gpus=r.gpus,
                    start_time=r.start, end_time=r.end, reason="org file", requested_by="replay",
                    status=reservation_rows.APPROVED, approved_by="replay", created_at=t0,
                    impact={})
        clock = VirtualClock(t0)
        names: dict[JobId, JobId] = {}
        journal = Journal(workloads, cfg.record_events, names)
        backend = ReplayBackend(clock, {}, config.grace_s, config.checkpoint_s)
        loop = SchedulerLoop(db, backend, LoopConfig(scheduler=config, lease_ttl_s=1e12,
                                                     idle_reclaim=False),
                             clock=clock, observer=journal)
        try:
            result = _drive(loop, backend, clock, order, names, journal, cfg, progress)
            live = loop.live
            if live is not None and live.state is not None:
                result.ledger = live.state.ledger
        finally:
            db.dispose()
    result.wall_s = time.perf_counter() - started
    return dataclasses.replace(result, policy=policy.name)


def _drive(loop: SchedulerLoop, backend: ReplayBackend, clock: VirtualClock,
           order: list[Workload], names: dict[JobId, JobId], journal: Journal,
           cfg: SimConfig, progress: Callable[[float], None] | None) -> SimResult:
    recorder: MetricsRecorder | None = None
    last = Decisions()
    cycles = 0
    k = 0
    t_end = order[-1].submit_time if order else 0.0
    same_instant, last_now = 0, None
    while True:
        candidates = [t for t in (order[k].submit_time if k < len(order) else None,
                                  backend.next_event(), loop.next_wake()) if t is not None]
        live = loop.live
        if live is not None and live.changed and live.state is not None and (
                live.state.num_pending or live.state.launches_open(clock.t)):
            candidates.append(clock.t)  # a run ended at once: another cycle now
        if not candidates:
            break
        now = max(min(candidates), clock.t)
        same_instant = same_instant + 1 if now == last_now else 0
        last_now = now
        if same_instant > 10_000:
            raise RuntimeError(f"livelock: over 10,000 ticks at t={now}")
        arrivals = k < len(order) and order[k].submit_time == now
        ends = backend.next_event()
        if recorder is not None and (arrivals or (ends is not None and ends <= now) or (
                live is not None and live.wake_counts(now))):
            recorder.advance(now, last)  # at the instants the in-memory engine acts on
        clock.t = now
        if arrivals:
            with loop.db.session() as s:
                while k < len(order) and order[k].submit_time == now:
                    w = order[k]
                    row = jobrepo.submit(s, w.user or "replay", jobrepo.JobSpec(
                        w.team, w.gpu_type, w.gpus, f"replay {w.id}", w.id[:128],
                        PRIORITY_CLASS[w.priority], w.preemptible, w.estimate_s,
                        w.reservation), now)
                    names[JobId(str(row.id))] = w.id
                    backend.durations[row.id] = w.duration or 0.0
                    k += 1
            if progress is not None:
                progress(k / len(order))
        report = loop.tick()
        if recorder is None and loop.live is not None and loop.live.state is not None:
            recorder = MetricsRecorder(loop.live.state, cfg.bin_s)
            recorder.advance(now, last)
        if report.finished:
            t_end = max(t_end, now)
        if report.decided:
            cycles += 1
            last = _decisions_of(loop)
        elif loop.live is not None and loop.live.state is not None \
                and not loop.live.state.num_pending:
            last = Decisions()
    assert recorder is not None or not order
    if recorder is None:
        raise InputError("trace", "no jobs to replay")
    recorder.rejected_ids.update(jid for jid, rec in journal.jobs.items() if rec.rejected)
    recorder.advance(t_end, Decisions())
    if loop.live is not None and loop.live.state is not None:
        loop.live.state.ledger.advance(loop.live.state, t_end)
    metrics = recorder.finish(journal.jobs, t_end)
    return SimResult("", journal.jobs, journal.events, metrics, 0.0, cycles)


def _decisions_of(loop: SchedulerLoop) -> Decisions:
    """The last cycle's reservations, for the metrics (what free GPUs were held)."""
    return loop.last_decisions if loop.last_decisions is not None else Decisions()
