"""Job repository: submit, list, cancel, and the named state transitions of the loop.

Every transition is ``UPDATE jobs SET ... WHERE id = :id AND state IN (:old)``: the row
count says whether this writer won, so the loop and API writers never both act on one
transition (``domain.jobstate`` draws the lifecycle). Nothing else writes ``jobs.state``.
Submissions and cancellations also note themselves in the scheduler's inbox, in the same
transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from allotment.domain.jobstate import ACTIVE, JobState
from allotment.errors import InputError
from allotment.storage import inbox, repo
from allotment.storage.models import JobRow, SampleRow

PRIORITY = {"low": -1, "normal": 0, "high": 1}
S = JobState


@dataclass(frozen=True, slots=True)
class JobSpec:
    team: str
    gpu_type: str
    gpus: int
    command: str
    name: str = ""
    priority_class: str = "normal"
    preemptible: bool = True
    time_limit_s: float | None = None
    reservation: str | None = None  # the launch reservation it runs in (checked by the caller)


def submit(s: Session, user: str, spec: JobSpec, now: float) -> JobRow:
    """Validate against the org and inventory, then queue; nothing is written on error."""
    if not repo.is_team(s, spec.team):
        raise InputError("team", f"unknown team {spec.team!r}")
    if spec.priority_class not in PRIORITY:
        raise InputError("priority_class",
                         f"{spec.priority_class!r}: choose from {', '.join(PRIORITY)}")
    cap = repo.capacity(s)
    if spec.gpu_type not in cap:
        raise InputError("gpu_type",
                         f"unknown GPU type {spec.gpu_type!r}; inventory has {sorted(cap)}")
    if spec.gpus < 1:
        raise InputError("gpus", f"must be >= 1, got {spec.gpus}")
    if spec.gpus > cap[spec.gpu_type]:  # type: ignore[index]
        raise InputError("gpus", f"gang of {spec.gpus} is larger than all "
                         f"{cap[spec.gpu_type]} {spec.gpu_type} GPUs")  # type: ignore[index]
    if not spec.command.strip():
        raise InputError("command", "must not be empty")
    job = JobRow(team=spec.team, user=user, name=spec.name, gpu_type=spec.gpu_type,
                 gpus=spec.gpus, command=spec.command, priority_class=spec.priority_class,
                 preemptible=spec.preemptible, time_limit_s=spec.time_limit_s,
                 reservation=spec.reservation, state=S.PENDING, submit_time=now,
                 reason="submitted; waiting for the next scheduling cycle",
                 placement=[], gpu_ids={})
    s.add(job)
    s.flush()
    inbox.note(s, inbox.Change.SUBMIT, job.id)
    return job


def get(s: Session, job_id: int) -> JobRow:
    job = s.get(JobRow, job_id)
    if job is None:
        raise repo.NotFound(f"job {job_id}")
    return job


def page(s: Session, teams: set[str] | None, states: Sequence[str] | None, limit: int,
         offset: int) -> tuple[list[JobRow], int]:
    """Jobs of ``teams`` (None: all), newest first, with their queue positions."""
    where = [JobRow.team.in_(teams)] if teams is not None else []
    if states:
        where.append(JobRow.state.in_(states))
    rows, total = repo.paginate(s, JobRow, where, JobRow.id.desc(), limit, offset)
    return with_positions(s, rows), total


def team_queues(s: Session) -> list[dict[str, Any]]:
    """Per team with jobs waiting or holding GPUs (by team name): pending jobs and GPUs,
    running (active) jobs and GPUs, and borrowed GPUs. No commands: an org-wide summary."""
    acc: dict[str, dict[str, Any]] = {}
    q = select(JobRow.team, JobRow.state, func.count(), func.sum(JobRow.gpus),
               func.sum(JobRow.borrowed_gpus)).where(
        JobRow.state.in_((S.PENDING, *ACTIVE))).group_by(JobRow.team, JobRow.state)
    for team, state, n, gpus, borrowed in s.execute(q):
        a = acc.setdefault(team, {"team": team, "pending_jobs": 0, "pending_gpus": 0,
                                  "running_jobs": 0, "running_gpus": 0, "borrowed_gpus": 0})
        if state == S.PENDING:
            a["pending_jobs"] += n
            a["pending_gpus"] += int(gpus or 0)
        else:
            a["running_jobs"] += n
            a["running_gpus"] += int(gpus or 0)
            a["borrowed_gpus"] += int(borrowed or 0)
    return [acc[t] for t in sorted(acc)]


def with_positions(s: Session, rows: list[JobRow]) -> list[JobRow]:
    """Fill in ``queue_position`` of the pending ones from the queue order the scheduler
    stored (``storage.queue``), without marking the rows changed."""
    from sqlalchemy.orm.attributes import set_committed_value

    from allotment.storage import queue

    waiting = [(j.id, j.gpu_type) for j in rows if j.state == S.PENDING]
    pos = queue.positions(s, waiting) if waiting else {}
    for j in rows:
        if j.state == S.PENDING:
            set_committed_value(j, "queue_position", pos.get(j.id))
    return rows


def _move(s: Session, job_id: int, old: JobState | Sequence[JobState], **values: Any) -> bool:
    """Conditional state move; True if this writer made it."""
    olds = (old,) if isinstance(old, str) else tuple(old)
    res = s.execute(update(JobRow).where(JobRow.id == job_id, JobRow.state.in_(olds))
                    .values(**values).execution_options(synchronize_session=False))
    return bool(res.rowcount)  # type: ignore[attr-defined]


def cancel(s: Session, job: JobRow, actor: str, now: float) -> str:
    """Cancel a pending job at once, or stop a running one (SIGTERM, grace, SIGKILL)."""
    from allotment.storage import audit

    why = f"cancelled by {actor}"
    if job.state == S.PENDING:
        if not _move(s, job.id, S.PENDING, state=S.CANCELLED, end_time=now, reason=why):
            raise repo.Conflict(f"job {job.id} changed state; try again")
    elif job.state in (S.STARTING, S.RUNNING):
        if not begin_termination(s, job.id, now, requeue=False, why=why):
            raise repo.Conflict(f"job {job.id} changed state; try again")
    elif job.state == S.TERMINATING:
        _move(s, job.id, S.TERMINATING, requeue=False, stop_reason=why)
    else:
        raise repo.Conflict(f"job {job.id} is already {job.state}")
    inbox.note(s, inbox.Change.CANCEL, job.id)
    audit.append(s, now, actor, "job.cancelled", f"job:{job.id}", why,
                 {"team": job.team, "state_before": job.state})
    s.refresh(job)
    return job.state


def add_samples(s: Session, job_id: int,
                samples: Sequence[tuple[float, int, float, float]]) -> None:
    """Utilisation samples of a job's GPUs: ``(time, gpu, util_pct, mem_used_mib)`` each."""
    for t, gpu, util_pct, mem_used_mib in samples:
        s.add(SampleRow(job_id=job_id, time=t, gpu=gpu, util_pct=util_pct,
                        mem_used_mib=mem_used_mib))


def active(s: Session) -> list[JobRow]:
    return list(s.execute(select(JobRow).where(JobRow.state.in_(ACTIVE))
                          .order_by(JobRow.id)).scalars())


def pending(s: Session) -> list[JobRow]:
    return list(s.execute(select(JobRow).where(JobRow.state == S.PENDING)
                          .order_by(JobRow.id)).scalars())


# what the scheduler reads of a waiting job, and what a launch needs (plain rows: the loop
# reads thousands at a time, and ORM objects cost ten times as much to load)
PENDING_COLUMNS = (JobRow.id, JobRow.team, JobRow.user, JobRow.gpu_type, JobRow.gpus,
                   JobRow.submit_time, JobRow.priority_class, JobRow.preemptible,
                   JobRow.time_limit_s, JobRow.attained_gpu_s, JobRow.hold_until,
                   JobRow.state, JobRow.reservation)
LAUNCH_COLUMNS = (JobRow.id, JobRow.attempts, JobRow.team, JobRow.user, JobRow.command,
                  JobRow.gpus, JobRow.gpu_ids, JobRow.gpu_type, JobRow.borrowed_gpus,
                  JobRow.first_start)


def pending_brief(s: Session) -> list[Any]:
    """Every pending job as a plain row of ``PENDING_COLUMNS``, in id order."""
    return list(s.execute(select(*PENDING_COLUMNS).where(JobRow.state == S.PENDING)
                          .order_by(JobRow.id)).all())


def brief(s: Session, ids: Sequence[int], columns: Sequence[Any]) -> list[Any]:
    """Plain rows of ``columns`` (the first must be the id) for ``ids``, in id order."""
    out: list[Any] = []
    ids = sorted(ids)
    for k in range(0, len(ids), 500):
        out += s.execute(select(*columns).where(JobRow.id.in_(ids[k:k + 500]))
                         .order_by(JobRow.id)).all()
    return out


def rows(s: Session, ids: Sequence[int]) -> list[JobRow]:
    """The rows of ``ids`` (in id order), fetched in chunks."""
    out: list[JobRow] = []
    ids = sorted(ids)
    for k in range(0, len(ids), 500):
        out += s.execute(select(JobRow).where(JobRow.id.in_(ids[k:k + 500]))
                         .order_by(JobRow.id)).scalars()
    return out


# -- the named transitions ------------------------------------------------------------
def still_pending(s: Session, ids: Sequence[int]) -> dict[int, tuple[int, float | None]]:
    """Which of ``ids`` are pending now, with their attempt number and first start, locking
    their rows (PostgreSQL; SQLite's write lock is held from the transaction's start), so
    an admission cannot race a cancellation."""
    out: dict[int, tuple[int, float | None]] = {}
    ids = list(ids)
    for k in range(0, len(ids), 500):
        q = select(JobRow.id, JobRow.attempts, JobRow.first_start).where(
            JobRow.id.in_(ids[k:k + 500]), JobRow.state == S.PENDING)
        if s.get_bind().dialect.name == "postgresql":
            q = q.with_for_update()
        out.update({i: (a, f) for i, a, f in s.execute(q).all()})
    return out


def _bulk(s: Session, old: Sequence[JobState], rows: Sequence[dict[str, Any]]) -> None:
    """``UPDATE jobs SET ... WHERE id = :id AND state IN old`` for each row dict (its keys
    but ``id`` are the columns set; every row sets the same columns), as one executemany
    on the session's connection: the statement is compiled once and each row's values go
    through their columns' bind processors straight to the driver (a cycle writes
    thousands of rows; SQLAlchemy's per-row parameter handling cost more than the
    database did)."""
    if not rows:
        return
    table: Table = JobRow.__table__  # type: ignore[assignment]
    cols = [k for k in rows[0] if k != "id"]
    stmt = (update(table)
            .where(table.c.id == bindparam("b_id"),
                   or_(*(table.c.state == str(o) for o in old)))  # no IN: executemany
            .values({c: bindparam(f"b_{c}", type_=table.c[c].type) for c in cols}))
    conn = s.connection()
    dialect = conn.dialect
    compiled = stmt.compile(dialect=dialect)
    fixed = {name: b.effective_value for name, b in compiled.binds.items()
             if not name.startswith("b_")}  # the old states
    procs = [(c, f"b_{c}", table.c[c].type.dialect_impl(dialect).bind_processor(dialect))
             for c in cols]
    params: list[dict[str, Any]] = []
    for r in rows:
        p = dict(fixed)
        p["b_id"] = r["id"]
        for c, name, proc in procs:
            v = r[c]
            p[name] = v if proc is None else proc(v)
        params.append(p)
    order = compiled.positiontup
    if order is not None:  # a positional paramstyle (SQLite's qmark)
        conn.exec_driver_sql(str(compiled), [tuple(p[n] for n in order) for p in params])
    else:
        conn.exec_driver_sql(str(compiled), params)


def admit_many(s: Session, admits: Sequence[dict[str, Any]]) -> None:
    """pending -> starting for each ``{"id", "placement", "gpu_ids", "borrowed_gpus",
    "start_time", "first_start", "reason"}`` (ids known pending under this transaction's
    lock: ``still_pending``)."""
    _bulk(s, (S.PENDING,), [{**a, "state": str(S.STARTING), "hold_until": None,
                             "queue_position": None, "estimated_start": None}
                            for a in admits])


def launched_many(s: Session, runs: Sequence[dict[str, Any]]) -> None:
    """starting -> running (the run is alive), or starting with the workload manager's
    reason while it waits there: ``{"id", "state", "reason", "external_id"}`` each, in bulk
    (a job stopped meanwhile by a cancellation is left as it is)."""
    _bulk(s, (S.STARTING, S.RUNNING), [{**r, "state": str(r["state"])} for r in runs])


def unadmit(s: Session, job_id: int, why: str, first_start: float | None) -> bool:
    """starting -> pending when the backend refused to start the run (nothing was started,
    no attempt is spent)."""
    return _move(s, job_id, S.STARTING, state=S.PENDING, placement=[], gpu_ids={},
                 borrowed_gpus=0, start_time=None, reason=why, first_start=first_start)


def begin_termination(s: Session, job_id: int, now: float, requeue: bool, why: str,
                      hold_until: float | None = None) -> bool:
    """starting|running -> terminating: SIGTERM, the grace period, then SIGKILL; afterwards
    requeued (``requeue``; held back until ``hold_until`` if given) or cancelled."""
    values: dict[str, Any] = dict(state=S.TERMINATING, terminating_since=now, requeue=requeue,
                                  stop_reason=why)
    if hold_until is not None:
        values["hold_until"] = hold_until
    return _move(s, job_id, (S.STARTING, S.RUNNING), **values)


def signalled(s: Session, job_id: int, term_sent_at: float | None = None,
              kill_sent: bool = False) -> bool:
    values: dict[str, Any] = {"kill_sent": True} if kill_sent else {"term_sent_at": term_sent_at}
    return _move(s, job_id, S.TERMINATING, **values)


def requeue(s: Session, job_id: int, old: JobState, attempts: int, preempted: bool,
            attained_gpu_s: float, exit_code: int | None, why: str) -> bool:
    """An active run ended without finishing the job (preempted, reclaimed, lost): the job
    waits again as attempt ``attempts``."""
    values: dict[str, Any] = dict(
        state=S.PENDING, attempts=attempts, attained_gpu_s=attained_gpu_s, placement=[],
        gpu_ids={}, borrowed_gpus=0, start_time=None, terminating_since=None,
        term_sent_at=None, kill_sent=False, idle_below_since=None, idle_last_time=None,
        idle_last_below=False, idle_warned_at=None, exit_code=exit_code, external_id=None,
        reason=f"requeued: {why}")
    if preempted:
        values["preemptions"] = JobRow.preemptions + 1
    return _move(s, job_id, old, **values)


def finish(s: Session, job_id: int, old: JobState, state: JobState, now: float,
           exit_code: int | None, attained_gpu_s: float, reason: str) -> bool:
    """An active run ended the job: succeeded, failed or cancelled."""
    return _move(s, job_id, old, state=state, end_time=now, exit_code=exit_code,
                 attained_gpu_s=attained_gpu_s, reason=reason)


def reject(s: Session, job_id: int, now: float, reason: str) -> bool:
    return _move(s, job_id, S.PENDING, state=S.REJECTED, end_time=now, reason=reason)


def explain_many(s: Session, changes: Sequence[dict[str, Any]]) -> None:
    """Reason and estimated start of pending jobs (``{"id", "reason", "estimated_start"}``),
    in bulk; a job no longer pending is left."""
    _bulk(s, (S.PENDING,), changes)


def idle_state(s: Session, job_id: int, **values: Any) -> bool:
    """The idle rule's memory of a running job (kept across restarts)."""
    return _move(s, job_id, S.RUNNING, **values)
