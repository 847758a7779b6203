"""Reconcile: make the backend do what the database says, and record what it did.

For every active run: launch an admitted one (``starting``) that was never launched; mark
it running when its process is alive; send SIGTERM to a run being stopped, and SIGKILL once
the grace period is over; and record runs that ended, in the canonical order of
``scheduler.apply`` (finished before requeued, each by job id):
    - stopped by a cancellation                  -> cancelled
    - exit code 0                                -> succeeded (its work is done, even if a
                                                    preemption's grace period was running)
    - stopped for a preemption, reclaim or down node -> requeued (pending again)
    - vanished without an exit code              -> requeued
    - any other exit code                        -> failed
Every backend call is idempotent per run ``(job, attempt)``; every decision was committed
before it is acted on here, so a crash anywhere launches nothing twice and loses nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum

from sqlalchemy.orm import Session

from allotment.backends.base import Backend, LaunchSpec, RunStatus
from allotment.domain.jobstate import JobState, RunState
from allotment.errors import LaunchRefused
from allotment.scheduler import apply as path
from allotment.service.loop.live import Live
from allotment.service.loop.rows import Run, job_id
from allotment.storage import audit, usage
from allotment.storage import jobs as jobrepo
from allotment.storage.db import Database

S = JobState
log = logging.getLogger("allotment.scheduler")


class End(Enum):
    """How a run ended, in the canonical order of one instant."""

    FINISHED = 0  # succeeded or failed
    CANCELLED = 1
    REQUEUED = 2


@dataclass(slots=True)
class Ended:
    run: Run
    how: End
    state: JobState | None  # the final state (None: requeued)
    code: int | None
    why: str


def classify(run: Run, st: RunStatus) -> Ended:
    """The rule of the module docstring."""
    if run.state == S.TERMINATING and not run.requeue:
        return Ended(run, End.CANCELLED, S.CANCELLED, st.exit_code, run.stop_reason)
    if st.state == RunState.EXITED and st.exit_code == 0:
        return Ended(run, End.FINISHED, S.SUCCEEDED, 0, "exited with code 0")
    if run.state == S.TERMINATING:
        return Ended(run, End.REQUEUED, None, st.exit_code, run.stop_reason)
    if st.state in (RunState.GONE, RunState.NEVER):
        return Ended(run, End.REQUEUED, None, st.exit_code,
                     "its process vanished (killed outside Allotment or lost with its host)")
    return Ended(run, End.FINISHED, S.FAILED, st.exit_code,
                 f"exited with code {st.exit_code}")


def reconcile(db: Database, backend: Backend, live: Live, now: float, grace_s: float,
              obs: path.Observer, only: set[int] | None = None) -> list[Ended]:
    """One pass over the active runs (``only``: over these of them); returns the runs that
    ended (already recorded)."""
    runs = list(live.runs.values()) if only is None else [
        live.runs[j] for j in sorted(only) if j in live.runs]
    statuses = {r.id: backend.status(r.id, r.attempt) for r in runs}
    to_launch = [r for r in runs
                 if r.state == S.STARTING and statuses[r.id].state == RunState.NEVER]
    refused: list[tuple[Run, str, float | None]] = []
    if to_launch:
        with db.session() as s:
            rows = {j.id: j for j in jobrepo.brief(s, [r.id for r in to_launch],
                                                   jobrepo.LAUNCH_COLUMNS)}
        for r in to_launch:
            j = rows[r.id]
            why = live.refusal(j.team, j.user)
            try:
                if why is None:
                    backend.launch(LaunchSpec(j.id, j.attempts, j.team, j.user, j.command,
                                              j.gpus, j.gpu_ids, j.gpu_type, j.borrowed_gpus))
            except LaunchRefused as exc:
                why = f"not started: {exc}"
            if why is not None:  # nothing was started: it waits, no attempt spent
                refused.append((r, why, j.first_start if j.attempts else None))
                continue
            statuses[r.id] = backend.status(r.id, r.attempt)
    if refused:
        _unadmit(db, live, refused, now)
        runs = [r for r in runs if r.id in live.runs]
    ended: list[Ended] = []
    launched: list[dict[str, object]] = []
    signalled: list[tuple[int, bool]] = []  # (job, True: SIGKILL / False: SIGTERM)
    for r in runs:
        st = statuses[r.id]
        if st.state not in (RunState.ALIVE, RunState.QUEUED):
            ended.append(classify(r, st))
            continue
        if r.state == S.TERMINATING:
            if r.term_sent_at is None:
                backend.terminate(r.id, r.attempt)
                r.term_sent_at = now
                signalled.append((r.id, False))
            elif not r.kill_sent and now - (r.terminating_since or now) >= grace_s:
                backend.kill(r.id, r.attempt)
                r.kill_sent = True
                signalled.append((r.id, True))
            continue
        run_id = r.external_id or backend.run_id(r.id, r.attempt)
        if st.state == RunState.ALIVE:
            new, reason = S.RUNNING, r.reason if r.state == S.RUNNING else "running"
        else:  # handed over, waiting in the workload manager (or requeued by it)
            new, reason = S.STARTING, f"queued in {backend.name}: {st.detail}"
        if (new, reason, run_id) != (r.state, r.reason, r.external_id):
            launched.append({"id": r.id, "state": new, "reason": reason,
                             "external_id": run_id})
            r.state, r.reason, r.external_id = new, reason, run_id
    order = sorted(ended, key=lambda e: (e.how == End.REQUEUED, e.run.id))
    live.signalled.update(jid for jid, _ in signalled)
    if not (launched or signalled or order):
        return order  # nothing to write: no transaction at all
    with db.session() as s:
        for jid, kill in signalled:
            if kill:
                jobrepo.signalled(s, jid, kill_sent=True)
            else:
                jobrepo.signalled(s, jid, term_sent_at=now)
        jobrepo.launched_many(s, launched)
        entries: list[audit.Entry] = []
        for e in order:
            _record(s, live, e, now, obs, entries)
        audit.append_many(s, entries)
    if ended:
        live.changed = True
    return order


def _record(s: Session, live: Live, e: Ended, now: float, obs: path.Observer,
            entries: list[audit.Entry]) -> None:
    r = e.run
    attained = r.attained_at(now)
    st = live.state
    in_state = st is not None and job_id(r.id) in st.running
    del live.runs[r.id]
    live.release_ids(r.gpu_ids)
    if e.how != End.REQUEUED:
        assert e.state is not None
        if not jobrepo.finish(s, r.id, r.state, e.state, now, e.code, attained, e.why):
            raise RuntimeError(f"job {r.id} changed under the loop")
        if in_state and st is not None:
            if e.how == End.CANCELLED:
                path.cancel(st, job_id(r.id), now, obs)
            else:
                path.finish(st, job_id(r.id), now, obs)
        return
    preempted = r.state == S.TERMINATING and r.stop_reason.startswith("preempted")
    if not jobrepo.requeue(s, r.id, r.state, r.attempt + 1, preempted, attained, e.code,
                           e.why):
        raise RuntimeError(f"job {r.id} changed under the loop")
    entries.append(audit.Entry(now, "scheduler", "job.requeued", f"job:{r.id}", e.why,
                               {"team": r.team, "attempt": r.attempt + 1,
                                "exit_code": e.code}, f"team:{r.team}"))
    if preempted:
        row = usage.row(s, r.team, r.gpu_type, int(now // 3600 * 3600))
        row.preemptions = (row.preemptions or 0) + 1
    if in_state and st is not None:
        path.requeue(st, job_id(r.id), now, obs)
        if r.hold_until is not None and r.hold_until > now:  # reclaimed for idling
            st.remove_pending(job_id(r.id))
            live.held[r.id] = r.hold_until
            live.wake(r.hold_until)
    else:
        row_ = jobrepo.get(s, r.id)
        s.flush()
        live.add_pending(row_, now, obs)


def _unadmit(db: Database, live: Live, refused: list[tuple[Run, str, float | None]],
             now: float) -> None:
    """Admitted runs the backend will not start (e.g. no Unix account of their team's own):
    back to pending with the reason, held out of the queue until the state is rebuilt."""
    entries = []
    with db.session() as s:
        for r, why, first_start in refused:
            if jobrepo.unadmit(s, r.id, why, first_start):
                entries.append(audit.Entry(now, "scheduler", "job.not_started", f"job:{r.id}",
                                           why, {"team": r.team}, f"team:{r.team}"))
                log.warning("job %s of team %s %s", r.id, r.team, why)
        audit.append_many(s, entries)
    for r, why, _ in refused:
        del live.runs[r.id]
        live.release_ids(r.gpu_ids)
        st = live.state
        if st is not None and job_id(r.id) in st.running:
            st.stop(job_id(r.id), now)
        live.unschedulable[r.id] = why
        live.changed = True


def stop_orphans(db: Database, live: Live, now: float) -> list[int]:
    """Runs on a node that is down or gone: stop them (SIGTERM, grace, SIGKILL) and
    requeue them, as Slurm requeues the jobs of a node that goes DOWN."""
    out = []
    entries = []
    with db.session() as s:
        for r in sorted(live.runs.values(), key=lambda r: r.id):
            gone = sorted({node for node, _ in r.placement if node not in live.index})
            if not gone or r.state == S.TERMINATING:
                continue
            why = f"node {', '.join(gone)} is down or no longer in the inventory"
            if jobrepo.begin_termination(s, r.id, now, requeue=True, why=f"requeued: {why}"):
                r.state, r.terminating_since, r.requeue = S.TERMINATING, now, True
                r.stop_reason = f"requeued: {why}"
                entries.append(audit.Entry(now, "scheduler", "job.requeued", f"job:{r.id}",
                                           why, {"team": r.team, "nodes": gone},
                                           f"team:{r.team}"))
                out.append(r.id)
        audit.append_many(s, entries)
    return out
