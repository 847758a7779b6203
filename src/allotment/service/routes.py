"""HTTP routes under ``/v1``: each authorises, then calls the repository."""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import PlainTextResponse
from sqlalchemy import String, cast, func, literal, or_, select
from sqlalchemy.exc import IntegrityError

from allotment.backends.files import read_tail
from allotment.errors import InputError
from allotment.planner.scenario import parse_scenario
from allotment.service import schemas as sch
from allotment.service.bounds import CheckedJsonRoute, Id, Limit, Offset
from allotment.service.deps import (
    CurrentUser,
    SessionDep,
    nodes_under,
    require_role,
    require_team,
    teams_of,
)
from allotment.storage import audit, governance, repo
from allotment.storage import jobs as jobrepo
from allotment.storage.models import AuditRow, DisputeRow, JobRow, RequestRow, User

router = APIRouter(route_class=CheckedJsonRoute)
NO_NUL = r"^[^\x00]*$"
JobState = Literal["pending", "starting", "running", "terminating", "succeeded", "failed",
                   "cancelled", "rejected"]
Period = Annotated[str | None, Query(pattern=sch.PERIOD)]


def _now(request: Request) -> float:
    return float(request.app.state.settings["clock"]())


@router.get("/health", tags=["meta"])
def health(s: SessionDep) -> dict[str, Any]:
    """The service answers; ``backend`` is the scheduler loop's last word on its backend
    (``unavailable`` with Slurm's error while slurmctld cannot be reached); ``warnings``
    says what the operator should know, e.g. that jobs run on a shared Unix account."""
    backend = json.loads(repo.get_setting(s, "backend_health") or "null")
    isolation = (backend or {}).get("isolation") or {}
    warnings = [isolation["warning"]] if isolation.get("warning") else []
    return {"status": "ok", "backend": backend, "warnings": warnings}


# -- users ------------------------------------------------------------------------------
@router.get("/v1/me", response_model=sch.UserPublic, tags=["users"])
def me(user: CurrentUser) -> User:
    return user


@router.post("/v1/users", response_model=sch.UserCreated, status_code=201, tags=["users"])
def create_user(body: sch.UserCreate, request: Request, s: SessionDep,
                user: CurrentUser) -> dict[str, Any]:
    require_role(user, "admin")
    new, token = repo.create_user(s, body.name, body.role, body.team, _now(request), user.name)
    return {"id": new.id, "name": new.name, "role": new.role, "org_node": new.org_node,
            "token": token}


@router.get("/v1/users", response_model=sch.Page[sch.UserPublic], tags=["users"])
def list_users(s: SessionDep, user: CurrentUser, limit: Limit = 100,
               offset: Offset = 0) -> dict[str, Any]:
    require_role(user, "admin")
    rows, total = repo.paginate(s, User, [], User.id, limit, offset)
    return {"items": rows, "total": total, "limit": limit, "offset": offset}


@router.get("/v1/users/{user_id}/tokens", response_model=list[sch.TokenPublic], tags=["users"])
def list_tokens(user_id: Id, s: SessionDep, user: CurrentUser) -> Any:
    """A user's API tokens: ids, creation and revocation times (never the token)."""
    require_role(user, "admin")
    return repo.tokens_of(s, repo.get_user(s, user_id))


@router.post("/v1/users/{user_id}/tokens", response_model=sch.TokenCreated, status_code=201,
             tags=["users"])
def issue_token(user_id: Id, request: Request, s: SessionDep,
                user: CurrentUser) -> dict[str, Any]:
    """A new API token for the user, shown once."""
    require_role(user, "admin")
    row, token = repo.issue_token(s, repo.get_user(s, user_id), _now(request), user.name)
    return {"id": row.id, "user_id": row.user_id, "created_at": row.created_at,
            "revoked_at": row.revoked_at, "token": token}


@router.delete("/v1/tokens/{token_id}", status_code=204, tags=["users"])
def revoke_token(token_id: Id, request: Request, s: SessionDep, user: CurrentUser) -> None:
    """Revoke a token: refused from now on, with the dashboard sessions opened with it."""
    require_role(user, "admin")
    repo.revoke_token(s, token_id, user.name, _now(request))


@router.post("/v1/users/{user_id}/disable", response_model=sch.UserPublic, tags=["users"])
def disable_user(user_id: Id, request: Request, s: SessionDep, user: CurrentUser) -> User:
    """Refuse every token and session of the user from now on (its sessions end)."""
    require_role(user, "admin")
    return repo.set_disabled(s, repo.get_user(s, user_id), True, user.name, _now(request))


@router.post("/v1/users/{user_id}/enable", response_model=sch.UserPublic, tags=["users"])
def enable_user(user_id: Id, request: Request, s: SessionDep, user: CurrentUser) -> User:
    """Let a disabled user in again (its tokens that were not revoked work again)."""
    require_role(user, "admin")
    return repo.set_disabled(s, repo.get_user(s, user_id), False, user.name, _now(request))


# -- org and inventory ------------------------------------------------------------------
@router.get("/v1/inventory", response_model=sch.InventoryPublic, tags=["org"])
def get_inventory(s: SessionDep, user: CurrentUser) -> dict[str, Any]:
    rows = repo.node_rows(s)
    return {"nodes": rows, "gpus_by_type": dict(repo.capacity(s))}


@router.put("/v1/inventory", response_model=sch.InventoryPublic, tags=["org"])
def put_inventory(body: sch.InventoryUpdate, request: Request, s: SessionDep,
                  user: CurrentUser) -> dict[str, Any]:
    require_role(user, "admin")
    repo.set_inventory(s, [repo.NodeSpec(n.name, n.gpu_type, n.gpus, n.rack, n.pod, n.state)
                           for n in body.nodes], user.name, _now(request))
    return get_inventory(s, user)


@router.get("/v1/org", response_model=sch.OrgPublic, tags=["org"])
def get_org(request: Request, s: SessionDep, user: CurrentUser) -> dict[str, Any]:
    now = _now(request)
    period = repo.effective_period(s, now)
    quotas: dict[str, dict[str, Any]] = {}
    for q in repo.quota_rows(s, "default") + (repo.quota_rows(s, period)
                                              if period != "default" else []):
        quotas.setdefault(q.org_node, {})[q.gpu_type] = q
    rows = repo.org_rows(s)
    parents = {r.parent for r in rows}
    return {"period": period, "nodes": [
        {"name": r.name, "parent": r.parent, "weight": r.weight, "is_team": r.name not in parents,
         "idle_window_s": r.idle_window_s, "quotas": list(quotas.get(r.name, {}).values())}
        for r in rows]}


@router.put("/v1/org", response_model=sch.OrgPublic, tags=["org"])
def put_org(body: sch.OrgUpdate, request: Request, s: SessionDep,
            user: CurrentUser) -> dict[str, Any]:
    require_role(user, "admin")
    repo.set_org(s, {"org": body.org}, user.name, _now(request))
    return get_org(request, s, user)


# -- jobs -------------------------------------------------------------------------------
def _job_public(j: JobRow) -> dict[str, Any]:
    out = {c: getattr(j, c) for c in sch.JobPublic.model_fields if hasattr(j, c)}
    out["idle_gpu_hours"] = round(j.idle_gpu_s / 3600, 6)
    return out


def _own_job(s: Any, user: User, job_id: int) -> JobRow:
    job = jobrepo.get(s, job_id)
    require_team(s, user, job.team)
    return jobrepo.with_positions(s, [job])[0]


@router.post("/v1/jobs", response_model=sch.JobPublic, status_code=201, tags=["jobs"])
def submit_job(body: sch.JobCreate, request: Request, s: SessionDep,
               user: CurrentUser) -> dict[str, Any]:
    if not repo.is_team(s, body.team):
        raise InputError("team", f"unknown team {body.team!r}")
    require_team(s, user, body.team)
    job = jobrepo.submit(s, user.name, jobrepo.JobSpec(
        body.team, body.gpu_type, body.gpus, body.command, body.name, body.priority_class,
        body.preemptible, body.time_limit_s), _now(request))
    return _job_public(job)


@router.get("/v1/jobs", response_model=sch.Page[sch.JobPublic], tags=["jobs"])
def list_jobs(s: SessionDep, user: CurrentUser, limit: Limit = 100, offset: Offset = 0,
              state: Annotated[list[JobState] | None, Query(max_length=10)] = None,
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
def get_job(job_id: Id, s: SessionDep, user: CurrentUser) -> dict[str, Any]:
    return _job_public(_own_job(s, user, job_id))


@router.post("/v1/jobs/{job_id}/cancel", response_model=sch.JobPublic, tags=["jobs"])
def cancel_job(job_id: Id, request: Request, s: SessionDep,
               user: CurrentUser) -> dict[str, Any]:
    job = _own_job(s, user, job_id)
    jobrepo.cancel(s, job, user.name, _now(request))
    return _job_public(job)


@router.get("/v1/jobs/{job_id}/log", response_class=PlainTextResponse, tags=["jobs"])
def job_log(job_id: Id, request: Request, s: SessionDep, user: CurrentUser) -> str:
    job = _own_job(s, user, job_id)
    runs = request.app.state.settings.get("runs_dir")
    if runs is None:
        raise HTTPException(404, "this service keeps no logs (no local executor)")
    # only a regular file of the service's own, never through a link, at most its last MB:
    # a job must not make this route read another job's log or the service's config
    data = read_tail(Path(runs) / str(job.id) / str(job.attempts) / "log", 1_000_000,
                     owner=os.geteuid())
    if data is None:
        raise HTTPException(404, f"job {job_id} has no log yet")
    return data.decode(errors="replace")


@router.post("/v1/jobs/{job_id}/samples", status_code=202, tags=["jobs"])
def push_samples(job_id: Id, body: sch.SamplesCreate, request: Request, s: SessionDep,
                 user: CurrentUser) -> dict[str, int]:
    from allotment.storage.models import SampleRow

    job = _own_job(s, user, job_id)
    if job.state != "running":
        raise repo.Conflict(f"job {job_id} is {job.state}, not running")
    now = _now(request)
    for smp in body.samples:
        s.add(SampleRow(job_id=job.id, time=smp.time if smp.time is not None else now,
                        gpu=smp.gpu, util_pct=smp.util_pct, mem_used_mib=smp.mem_used_mib))
    return {"accepted": len(body.samples)}


@router.get("/v1/queue", response_model=list[sch.TeamQueue], tags=["jobs"])
def queue(s: SessionDep, user: CurrentUser) -> list[dict[str, Any]]:
    """Org-wide summary per team (no commands): what is waiting and running."""
    acc: dict[str, dict[str, Any]] = {}
    q = select(JobRow.team, JobRow.state, func.count(), func.sum(JobRow.gpus),
               func.sum(JobRow.borrowed_gpus)).where(
        JobRow.state.in_(("pending", *repo.ACTIVE_STATES))).group_by(JobRow.team, JobRow.state)
    for team, state, n, gpus, borrowed in s.execute(q):
        a = acc.setdefault(team, {"team": team, "pending_jobs": 0, "pending_gpus": 0,
                                  "running_jobs": 0, "running_gpus": 0, "borrowed_gpus": 0})
        if state == "pending":
            a["pending_jobs"] += n
            a["pending_gpus"] += int(gpus or 0)
        else:
            a["running_jobs"] += n
            a["running_gpus"] += int(gpus or 0)
            a["borrowed_gpus"] += int(borrowed or 0)
    return [acc[t] for t in sorted(acc)]


# -- usage ------------------------------------------------------------------------------
@router.get("/v1/usage", response_model=list[sch.UsagePublic], tags=["usage"])
def usage(request: Request, s: SessionDep, user: CurrentUser,
          period: Period = None) -> list[dict[str, Any]]:
    return governance.usage_summary(s, period or repo.period_of(_now(request)))


@router.get("/v1/usage/history", tags=["usage"])
def usage_history(request: Request, s: SessionDep, user: CurrentUser,
                  period: Period = None) -> dict[str, Any]:
    """The planner's ``history`` input for a period (GPU-hours used and idle per team)."""
    return governance.history_for(s, period or repo.period_of(_now(request)))


# -- requests ---------------------------------------------------------------------------
def _request_row(s: Any, request_id: int) -> RequestRow:
    row: RequestRow | None = s.get(RequestRow, request_id)
    if row is None:
        raise repo.NotFound(f"request {request_id}")
    return row


@router.get("/v1/requests", response_model=sch.Page[sch.RequestPublic], tags=["plans"])
def list_requests(s: SessionDep, user: CurrentUser, period: Period = None, limit: Limit = 100,
                  offset: Offset = 0) -> dict[str, Any]:
    rows, total = governance.request_page(s, period, None, limit, offset)
    return {"items": rows, "total": total, "limit": limit, "offset": offset}


@router.post("/v1/requests", response_model=sch.RequestPublic, status_code=201, tags=["plans"])
def create_request(body: sch.RequestCreate, request: Request, s: SessionDep,
                   user: CurrentUser) -> RequestRow:
    require_role(user, "lead")
    if not repo.is_team(s, body.team):
        raise InputError("team", f"unknown team {body.team!r}")
    require_team(s, user, body.team)
    governance.check_request(s, body.team, body.period, body.gpu_type, body.gpus,
                             body.min_gpus, body.cooperates_with, body.tier)
    row = RequestRow(team=body.team, period=body.period, gpu_type=body.gpu_type, gpus=body.gpus,
                     min_gpus=body.min_gpus, tier=body.tier,
                     launch=body.launch.isoformat() if body.launch else None,
                     justification=body.justification, cooperates_with=body.cooperates_with,
                     created_by=user.name, updated_at=_now(request))
    s.add(row)
    try:
        s.flush()
    except IntegrityError:  # another writer stored the same team, period and type first
        raise repo.Conflict(f"team {body.team} already has a request for {body.period} "
                            f"{body.gpu_type}: change it with PATCH") from None
    return row


@router.patch("/v1/requests/{request_id}", response_model=sch.RequestPublic, tags=["plans"])
def update_request(request_id: Id, body: sch.RequestUpdate, request: Request, s: SessionDep,
                   user: CurrentUser) -> RequestRow:
    require_role(user, "lead")
    row: RequestRow = _request_row(s, request_id)
    require_team(s, user, row.team)
    for k, v in body.model_dump(exclude_unset=True).items():
        setattr(row, k, v.isoformat() if isinstance(v, date) else v)
    governance.check_request(s, row.team, row.period, row.gpu_type, row.gpus, row.min_gpus,
                             list(row.cooperates_with), row.tier, row.id)
    row.updated_at = _now(request)
    return row


@router.delete("/v1/requests/{request_id}", status_code=204, tags=["plans"])
def delete_request(request_id: Id, s: SessionDep, user: CurrentUser) -> None:
    require_role(user, "lead")
    row = _request_row(s, request_id)
    require_team(s, user, row.team)
    s.delete(row)


# -- plans ------------------------------------------------------------------------------
@router.post("/v1/plans", response_model=sch.PlanPublic, status_code=201, tags=["plans"])
def run_plan(body: sch.PlanCreate, request: Request, s: SessionDep,
             user: CurrentUser) -> Any:
    require_role(user, "admin")
    now = _now(request)
    if body.scenario is not None:
        sc = parse_scenario(body.scenario)
    elif body.period is not None:
        sc = governance.scenario_from_db(s, body.period, body.as_of or governance.today(now),
                                         body.rules, body.reserve)
    else:
        raise InputError("scenario", "give a scenario, or a period to plan from stored requests")
    return governance.run_plan(s, sc, user.name, now)


@router.get("/v1/plans", response_model=sch.Page[sch.PlanPublic], tags=["plans"])
def list_plans(s: SessionDep, user: CurrentUser, period: Period = None, limit: Limit = 100,
               offset: Offset = 0) -> dict[str, Any]:
    from allotment.storage.models import PlanRow

    where = [PlanRow.period == period] if period else []
    rows, total = repo.paginate(s, PlanRow, where, PlanRow.id.desc(), limit, offset)
    return {"items": rows, "total": total, "limit": limit, "offset": offset}


@router.get("/v1/plans/{plan_id}", response_model=sch.PlanPublic, tags=["plans"])
def get_plan(plan_id: Id, s: SessionDep, user: CurrentUser) -> Any:
    return governance.get_plan(s, plan_id)


@router.post("/v1/plans/compare", tags=["plans"])
def compare_plans(body: sch.PlanCompare, s: SessionDep, user: CurrentUser) -> dict[str, Any]:
    a, b = governance.get_plan(s, body.a), governance.get_plan(s, body.b)
    return {"a": a.id, "b": b.id, "differences": governance.compare_plans(a, b)}


@router.post("/v1/plans/{plan_id}/publish", response_model=sch.PlanPublic, tags=["plans"])
def publish_plan(plan_id: Id, request: Request, s: SessionDep, user: CurrentUser) -> Any:
    require_role(user, "admin")
    row = governance.get_plan(s, plan_id)
    governance.publish(s, row, user.name, _now(request))
    return row


# -- disputes ---------------------------------------------------------------------------
def _dispute_visible(s: Any, user: User) -> Any:
    if user.role == "admin":
        return None
    teams = repo.teams_under(s, user.org_node)
    nodes = nodes_under(s, user.org_node)
    return or_(DisputeRow.team.in_(teams), DisputeRow.assigned_to.in_(nodes))


@router.post("/v1/disputes", response_model=sch.DisputePublic, status_code=201,
             tags=["disputes"])
def file_dispute(body: sch.DisputeCreate, request: Request, s: SessionDep,
                 user: CurrentUser) -> DisputeRow:
    require_role(user, "lead")
    if not repo.is_team(s, body.team):
        raise InputError("team", f"unknown team {body.team!r}")
    require_team(s, user, body.team)
    settings = request.app.state.settings
    return governance.file_dispute(s, body.team, user.name, body.subject_kind, body.subject_id,
                                   body.wants, body.why, body.gpu_type, body.wanted_gpus,
                                   body.period, _now(request), float(settings["escalation_s"]))


@router.get("/v1/disputes", response_model=sch.Page[sch.DisputePublic], tags=["disputes"])
def list_disputes(s: SessionDep, user: CurrentUser, limit: Limit = 100,
                  offset: Offset = 0) -> dict[str, Any]:
    rows, total = governance.dispute_page(s, _dispute_visible(s, user), limit, offset)
    return {"items": rows, "total": total, "limit": limit, "offset": offset}


def _visible_dispute(s: Any, user: User, dispute_id: int) -> DisputeRow:
    row = governance.get_dispute(s, dispute_id)
    visible = _dispute_visible(s, user)
    if visible is not None and s.scalar(
            select(DisputeRow.id).where(DisputeRow.id == dispute_id, visible)) is None:
        raise HTTPException(403, f"dispute {dispute_id} is not of your teams")
    return row


@router.get("/v1/disputes/{dispute_id}", response_model=sch.DisputePublic, tags=["disputes"])
def get_dispute(dispute_id: Id, s: SessionDep, user: CurrentUser) -> DisputeRow:
    return _visible_dispute(s, user, dispute_id)


@router.post("/v1/disputes/{dispute_id}/resolve", response_model=sch.DisputePublic,
             tags=["disputes"])
def resolve_dispute(dispute_id: Id, body: sch.DisputeResolve, request: Request,
                    s: SessionDep, user: CurrentUser) -> DisputeRow:
    row = governance.get_dispute(s, dispute_id)
    refused = governance.may_not_resolve(s, row, user.name, user.role, user.org_node)
    if refused is not None:
        raise HTTPException(403, refused)
    governance.resolve_dispute(s, row, user.name, body.decision, body.reason, body.guaranteed,
                               _now(request))
    return row


# -- audit ------------------------------------------------------------------------------
def audit_visible(s: Any, user: User) -> Any:
    """The entries ``user`` may read (None: all, for admins): scope ``org``, the scopes of
    the user's teams, and those of the disputes the user may see (the rule of
    ``GET /v1/disputes/{id}``, evaluated now, so an escalated dispute's new leads see it)."""
    if user.role == "admin":
        return None
    teams = sorted(repo.teams_under(s, user.org_node))
    disputes = select(literal("dispute:", String) + cast(DisputeRow.id, String)).where(
        _dispute_visible(s, user))
    return or_(AuditRow.scope == audit.ORG,
               AuditRow.scope.in_([f"team:{t}" for t in teams]),
               AuditRow.scope.in_(disputes))


def audit_page(s: Any, user: User, action: str | None, subject: str | None, limit: int,
               offset: int, contains: bool = False) -> tuple[list[AuditRow], int]:
    """One page of the entries ``user`` may read, newest first, and how many match in all;
    ``action`` and ``subject`` match exactly, or as substrings with ``contains``."""
    where = []
    for col, value in ((AuditRow.action, action), (AuditRow.subject, subject)):
        if value:
            where.append(col.contains(value, autoescape=True) if contains else col == value)
    visible = audit_visible(s, user)
    if visible is not None:
        where.append(visible)
    rows, total = repo.paginate(s, AuditRow, where, AuditRow.seq.desc(), limit, offset)
    return rows, total


def audit_check(s: Any, user: User) -> audit.Verification:
    """The chain's verification; a user who is not an admin learns only whether it holds and
    how many entries it has, not which entries (of other teams, maybe) failed."""
    got = audit.verify(s)
    if user.role == "admin" or got.ok:
        return got
    return audit.Verification(False, got.entries, [
        "the audit chain does not verify; an admin can see which entries"], got.keyed_from)


@router.get("/v1/audit", response_model=sch.Page[sch.AuditPublic], tags=["audit"])
def list_audit(s: SessionDep, user: CurrentUser, limit: Limit = 100, offset: Offset = 0,
               action: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
               subject: Annotated[str | None, Query(max_length=128, pattern=NO_NUL)] = None,
               ) -> dict[str, Any]:
    """Entries the user may read (admins: all; others: their teams', the disputes they may
    see, and the org-wide ones), newest first."""
    rows, total = audit_page(s, user, action, subject, limit, offset)
    return {"items": rows, "total": total, "limit": limit, "offset": offset}


@router.get("/v1/audit/verify", response_model=sch.AuditVerifyPublic, tags=["audit"])
def verify_audit(s: SessionDep, user: CurrentUser) -> Any:
    return audit_check(s, user)
