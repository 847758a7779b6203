"""Job repository: submit, list, cancel, and the conditional state moves the loop uses.

Every state move is ``UPDATE jobs SET ... WHERE id = :id AND state = :old``: the row count
says whether this writer won. That makes the loop idempotent and safe beside API writers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from allotment.errors import InputError
from allotment.storage import repo
from allotment.storage.models import JobRow

PRIORITY = {"low": -1, "normal": 0, "high": 1}
FINAL_STATES = ("succeeded", "failed", "cancelled", "rejected")


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
                 preemptible=spec.preemptible, time_limit_s=spec.time_limit_s, state="pending",
                 submit_time=now, reason="submitted; waiting for the next scheduling cycle",
                 placement=[], gpu_ids={})
    s.add(job)
    s.flush()
    return job


def get(s: Session, job_id: int) -> JobRow:
    job = s.get(JobRow, job_id)
    if job is None:
        raise repo.NotFound(f"job {job_id}")
    return job


def page(s: Session, teams: set[str] | None, states: Sequence[str] | None, limit: int,
         offset: int) -> tuple[list[JobRow], int]:
    """Jobs of ``teams`` (None: all), newest first."""
    where = [JobRow.team.in_(teams)] if teams is not None else []
    if states:
        where.append(JobRow.state.in_(states))
    return repo.paginate(s, JobRow, where, JobRow.id.desc(), limit, offset)


def move(s: Session, job_id: int, old: str | Sequence[str], **values: Any) -> bool:
    """Conditional state move; True if this writer made it."""
    olds = (old,) if isinstance(old, str) else tuple(old)
    res = s.execute(update(JobRow).where(JobRow.id == job_id, JobRow.state.in_(olds))
                    .values(**values).execution_options(synchronize_session=False))
    return bool(res.rowcount)  # type: ignore[attr-defined]


def cancel(s: Session, job: JobRow, actor: str, now: float) -> str:
    """Cancel a pending job at once, or stop a running one (SIGTERM, grace, SIGKILL)."""
    from allotment.storage import audit

    if job.state == "pending":
        if not move(s, job.id, "pending", state="cancelled", end_time=now,
                    reason=f"cancelled by {actor}"):
            raise repo.Conflict(f"job {job.id} changed state; try again")
    elif job.state in ("starting", "running"):
        if not move(s, job.id, ("starting", "running"), state="terminating",
                    terminating_since=now, requeue=False, stop_reason=f"cancelled by {actor}"):
            raise repo.Conflict(f"job {job.id} changed state; try again")
    elif job.state == "terminating":
        move(s, job.id, "terminating", requeue=False, stop_reason=f"cancelled by {actor}")
    else:
        raise repo.Conflict(f"job {job.id} is already {job.state}")
    audit.append(s, now, actor, "job.cancelled", f"job:{job.id}", f"cancelled by {actor}",
                 {"team": job.team, "state_before": job.state})
    s.refresh(job)
    return job.state


def active(s: Session) -> list[JobRow]:
    return list(s.execute(select(JobRow).where(JobRow.state.in_(repo.ACTIVE_STATES))
                          .order_by(JobRow.id)).scalars())


def pending(s: Session) -> list[JobRow]:
    return list(s.execute(select(JobRow).where(JobRow.state == "pending")
                          .order_by(JobRow.id)).scalars())
