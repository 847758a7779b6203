"""Jobs: submit, list, read, cancel, read the log, push utilisation samples; and the
org-wide queue summary. A job is read and changed only by a member of its team."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import PlainTextResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from allotment.backends.files import read_tail
from allotment.domain.jobstate import JobState
from allotment.governance import reservations
from allotment.service import schemas as sch
from allotment.service.bounds import NO_NUL, CheckedJsonRoute, Limit, Offset
from allotment.service.deps import (
    CurrentUser,
    MemberJob,
    SessionDep,
    group_commit,
    now,
    require_member,
    teams_of,
)
from allotment.storage import jobs as jobrepo
from allotment.storage import repo
from allotment.storage.models import JobRow

router = APIRouter(route_class=CheckedJsonRoute)
if TYPE_CHECKING:
    StateName = str
else:  # the enum's values, shown inline in the OpenAPI spec as an enum of strings
    StateName = Literal[tuple(s.value for s in JobState)]


def _job_public(j: JobRow) -> dict[str, Any]:
    out = {c: getattr(j, c) for c in sch.JobPublic.model_fields if hasattr(j, c)}
    out["idle_gpu_hours"] = round(j.idle_gpu_s / 3600, 6)
    return out


@router.post("/v1/jobs", response_model=sch.JobPublic, status_code=201, tags=["jobs"])
async def submit_job(body: sch.JobCreate, request: Request,
                     user: CurrentUser) -> dict[str, Any]:
    """Checked and written in one transaction shared with the submits of other clients
    waiting at the same moment (``storage.group``: one write lock and one fsync for all of
    them); the 201 is sent only once that transaction has committed. (The route is async
    so that its answer is validated here, without one more hand-off to a worker thread;
    the write runs in one.)"""
    t = now(request)
    spec = jobrepo.JobSpec(body.team, body.gpu_type, body.gpus, body.command, body.name,
                           body.priority_class, body.preemptible, body.time_limit_s,
                           body.reservation)

    def write(s: Session) -> JobRow:
        require_member(s, user, body.team)
        if body.reservation is not None:
            reservations.check_job(s, body.team, body.gpu_type, body.gpus, body.reservation,
                                   t)
        return jobrepo.submit(s, user.name, spec, t)

    return _job_public(await run_in_threadpool(group_commit(request).run, write))


@router.get("/v1/jobs", response_model=sch.Page[sch.JobPublic], tags=["jobs"])
def list_jobs(s: SessionDep, user: CurrentUser, limit: Limit = 100, offset: Offset = 0,
              state: Annotated[list[StateName] | None, Query(max_length=10)] = None,
              team: Annotated[str | None, Query(max_length=128, pattern=NO_NUL)] = None,
              ) -> dict[str, Any]:
    teams = teams_of(s, user)
    if team is not None:
        if teams is not None and team not in teams:
            raise HTTPException(403, f"user {user.name} does not belong to team {team}")
        teams = {team}
    rows, total = jobrepo.page(s, teams, state, limit, offset)
    return {"items": [_job_public(j) for j in rows], "total": total, "limit": limit,
            "offset": offset}


@router.get("/v1/jobs/{job_id}", response_model=sch.JobPublic, tags=["jobs"])
def get_job(job: MemberJob) -> dict[str, Any]:
    return _job_public(job)


@router.post("/v1/jobs/{job_id}/cancel", response_model=sch.JobPublic, tags=["jobs"])
def cancel_job(job: MemberJob, request: Request, s: SessionDep,
               user: CurrentUser) -> dict[str, Any]:
    jobrepo.cancel(s, job, user.name, now(request))
    return _job_public(job)


@router.get("/v1/jobs/{job_id}/log", response_class=PlainTextResponse, tags=["jobs"])
def job_log(job: MemberJob, request: Request) -> str:
    runs = request.app.state.settings.get("runs_dir")
    if runs is None:
        raise HTTPException(404, "this service keeps no logs (no local executor)")
    # only a regular file of the service's own, never through a link, at most its last MB:
    # a job must not make this route read another job's log or the service's config
    data = read_tail(Path(runs) / str(job.id) / str(job.attempts) / "log", 1_000_000,
                     owner=os.geteuid())
    if data is None:
        raise HTTPException(404, f"job {job.id} has no log yet")
    return data.decode(errors="replace")


@router.post("/v1/jobs/{job_id}/samples", status_code=202, tags=["jobs"])
def push_samples(job: MemberJob, body: sch.SamplesCreate, request: Request,
                 s: SessionDep) -> dict[str, int]:
    if job.state != JobState.RUNNING:
        raise repo.Conflict(f"job {job.id} is {job.state}, not running")
    t = now(request)
    jobrepo.add_samples(s, job.id, [(smp.time if smp.time is not None else t, smp.gpu,
                                     smp.util_pct, smp.mem_used_mib) for smp in body.samples])
    return {"accepted": len(body.samples)}


@router.get("/v1/queue", response_model=list[sch.TeamQueue], tags=["jobs"])
def queue(s: SessionDep, user: CurrentUser) -> list[dict[str, Any]]:
    """Org-wide summary per team (no commands): what is waiting and running."""
    return jobrepo.team_queues(s)
