"""Idle: feed utilisation samples (the backend's and those pushed over HTTP) to the idle
rule (``policies.idle``), then warn a job whose GPUs stayed idle for its team's window and
reclaim it (stop, requeue, hold back for a window) if it is still idle after the warning.
The rule's memory of each job is kept in its row, so a restart continues it."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select

from allotment.backends.base import Backend
from allotment.domain.jobstate import JobState
from allotment.policies.idle import IdleActionKind, IdleTracker, _JobIdle
from allotment.service.loop.live import Live
from allotment.service.loop.notify import notice
from allotment.service.loop.rows import job_id
from allotment.storage import audit
from allotment.storage import jobs as jobrepo
from allotment.storage.db import Database
from allotment.storage.models import SampleRow


@dataclass(frozen=True, slots=True)
class IdleRule:
    threshold_pct: float
    window_s: float
    reclaim_after_s: float
    reclaim: bool
    hold_s: float | None  # a reclaimed job may restart after this (default: its window)


def idle(db: Database, backend: Backend, live: Live, now: float,
         rule: IdleRule) -> tuple[list[int], list[int]]:
    """Returns the jobs warned and the jobs reclaimed in this pass."""
    warned: list[int] = []
    reclaimed: list[int] = []
    running = [r for r in live.runs.values() if r.state == JobState.RUNNING]
    with db.sessions() as s:  # reads only, unless samples were pushed
        pushed: dict[int, list[tuple[float, int, float]]] = {}
        ids = []
        for sid, jid, t, gpu, util in s.execute(select(
                SampleRow.id, SampleRow.job_id, SampleRow.time, SampleRow.gpu,
                SampleRow.util_pct)).all():
            pushed.setdefault(jid, []).append((t, gpu, util))
            ids.append(sid)
    if ids:
        with db.session() as s:
            for k in range(0, len(ids), 500):
                s.execute(delete(SampleRow).where(SampleRow.id.in_(ids[k:k + 500])))
    windows = live.idle_windows
    for run in sorted(running, key=lambda r: r.id):
        since = run.idle.get("last_time")
        samples = [(x.time, x.gpu, x.util_pct) for x in
                   backend.samples(run.id, run.attempt, run.gpu_ids, since)]
        samples += [x for x in pushed.get(run.id, []) if since is None or x[0] > since]
        if not samples:
            continue
        by_time: dict[float, float] = {}
        for t, _, u in samples:
            by_time[t] = max(by_time.get(t, 0.0), u)
        window = windows.get(run.team) or rule.window_s
        tracker = IdleTracker(rule.threshold_pct, window, rule.reclaim_after_s, rule.reclaim)
        key = str(run.id)
        i = run.idle
        tracker.jobs[key] = _JobIdle(run.gpus, i.get("below_since"), i.get("last_time"),
                                     bool(i.get("last_below")), i.get("warned_at"), False,
                                     float(i.get("idle_gpu_s") or 0.0))
        actions = []
        for t in sorted(by_time):
            actions += tracker.observe(key, run.gpus, t, by_time[t])
        st = tracker.jobs[key]
        run.idle = {"below_since": st.below_since, "last_time": st.last_time,
                    "last_below": st.last_below, "warned_at": st.warned_at,
                    "idle_gpu_s": st.idle_gpu_s}
        with db.session() as s:
            jobrepo.idle_state(s, run.id, idle_below_since=st.below_since,
                               idle_last_time=st.last_time, idle_last_below=st.last_below,
                               idle_warned_at=st.warned_at, idle_gpu_s=st.idle_gpu_s,
                               last_util_pct=by_time[max(by_time)])
            for a in actions:
                if a.kind == IdleActionKind.WARN:
                    audit.append(s, now, "scheduler", "job.idle_warned", f"job:{run.id}",
                                 a.reason, {"team": run.team, "gpus": run.gpus})
                    notice(s, now, "idle_warning", run.id, run.team, run.user, a.reason)
                    warned.append(run.id)
                elif a.kind == IdleActionKind.RECLAIM:
                    hold = rule.hold_s if rule.hold_s is not None else window
                    why = f"reclaimed for idling: {a.reason}"
                    if jobrepo.begin_termination(s, run.id, now, requeue=True, why=why,
                                                 hold_until=now + hold):
                        audit.append(s, now, "scheduler", "job.reclaimed", f"job:{run.id}",
                                     a.reason, {"team": run.team, "gpus": run.gpus,
                                                "hold_until": now + hold})
                        run.state, run.terminating_since, run.requeue = (
                            JobState.TERMINATING, now, True)
                        run.stop_reason, run.hold_until = why, now + hold
                        if live.state is not None and job_id(run.id) in live.state.running:
                            live.state.mark_terminating(job_id(run.id), now)
                        live.changed = True
                        notice(s, now, "idle_reclaim", run.id, run.team, run.user, a.reason)
                        reclaimed.append(run.id)
    return warned, reclaimed
