"""My jobs and queue: the jobs of the user's teams with their state, queue position,
estimated start and reason; a job's page; cancel; and the submit form, whose mistakes are
shown next to their field. The API's rules and writes, through the same functions."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from allotment.domain.jobstate import JobState
from allotment.errors import InputError
from allotment.service.bounds import Flag, Id, Offset
from allotment.service.deps import require_member, teams_of
from allotment.service.schemas import JobCreate
from allotment.service.ui.render import form, now, page, page_router, session, user_of
from allotment.storage import jobs as jobrepo
from allotment.storage import repo
from allotment.storage.models import JobRow, User

router = page_router()
JOB_STATES = tuple(JobState)


def _jobs_page(request: Request, user: User, state: str | None, offset: int,
               errors: dict[str, str] | None = None, values: dict[str, str] | None = None,
               notice: str | None = None, status: int = 200) -> HTMLResponse:
    if state is not None and state not in JOB_STATES:
        raise InputError("state", f"{state!r} is not a job state")
    with session(request) as s:
        teams = teams_of(s, user)
        rows, total = jobrepo.page(s, teams, [state] if state else None, 50, max(0, offset))
        my_teams = sorted(teams if teams is not None else repo.teams_under(s, None))
        types = sorted(repo.capacity(s))
        queue = jobrepo.team_queues(s)  # the API's org-wide summary, as it is
        for r in rows:
            s.expunge(r)
    return page(request, "jobs.html", user, status, active="jobs", rows=rows, total=total,
                offset=offset, state=state, states=JOB_STATES, teams=my_teams, types=types,
                errors=errors or {}, values=values or {}, notice=notice, queue=queue)


@router.get("/jobs")
def jobs(request: Request, state: str | None = None, offset: Offset = 0) -> HTMLResponse:
    return _jobs_page(request, user_of(request), state or None, offset)


@router.post("/jobs")
async def submit(request: Request) -> Response:
    user = user_of(request)
    got = await form(request)
    values = {k: got.get(k, "") for k in ("team", "gpu_type", "gpus", "command", "name",
                                          "priority_class")}
    try:
        # a form sends text: its numbers are parsed from it (strict=False), as JSON is not
        body = JobCreate.model_validate({**values, "gpus": values["gpus"] or None,
                                         "priority_class": values["priority_class"] or "normal"},
                                        strict=False)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "form"
        return _jobs_page(request, user, None, 0, {field: f"{field}: {err['msg']}"}, values,
                          status=422)
    try:
        with session(request) as s:  # the API's submit: the same checks, the same write
            require_member(s, user, body.team)
            jid = jobrepo.submit(s, user.name, jobrepo.JobSpec(
                body.team, body.gpu_type, body.gpus, body.command, body.name,
                body.priority_class, body.preemptible, body.time_limit_s), now(request)).id
    except InputError as exc:
        return _jobs_page(request, user, None, 0, {exc.field: str(exc)}, values, status=422)
    except HTTPException as exc:  # not a member of that team: said next to the field
        return _jobs_page(request, user, None, 0, {"team": f"team: {exc.detail}"}, values,
                          status=exc.status_code)
    return RedirectResponse(f"/ui/jobs/{jid}?submitted=1", status_code=303)


def _job_for(s: Any, user: User, job_id: int) -> JobRow:
    """The rule "member of this job's team" (``deps.teams_of``), in the dashboard's words."""
    job = jobrepo.get(s, job_id)
    teams = teams_of(s, user)
    if teams is not None and job.team not in teams:
        raise HTTPException(403, f"job {job_id} belongs to team {job.team}; you are not in it")
    return job


@router.get("/jobs/{job_id}")
def job_detail(request: Request, job_id: Id, submitted: Flag = 0) -> HTMLResponse:
    user = user_of(request)
    with session(request) as s:
        job = jobrepo.with_positions(s, [_job_for(s, user, job_id)])[0]
        s.expunge(job)
    return page(request, "job.html", user, active="jobs", j=job,
                notice="Submitted." if submitted else None)


@router.post("/jobs/{job_id}/cancel")
async def cancel(request: Request, job_id: Id) -> Response:
    user = user_of(request)
    await form(request)
    with session(request) as s:
        job = _job_for(s, user, job_id)
        jobrepo.cancel(s, job, user.name, now(request))
    return RedirectResponse(f"/ui/jobs/{job_id}", status_code=303)
