"""Request dependencies: the database session (one transaction per request) and the
authenticated user, plus the authorisation rules every route applies.

The session's transaction commits before the response is sent: ``SessionDep`` is a
``yield`` dependency with ``scope="function"``, whose exit (commit, or rollback on an
error) FastAPI runs as soon as the route has returned and its answer is serialised, and
before a byte of that answer goes out. With the default scope the exit ran after the
response was sent, so a crash right after a 201 lost the acknowledged write. A commit that
fails turns the answer into an error; the client never sees a 2xx for it. One definition
covers every route (``tests/service/test_durability.py`` checks that each route's session
is function-scoped); the dashboard's pages open ``db.session()`` blocks that commit
before they return.

Roles: ``member`` submits and sees its own team's jobs and org-wide summaries; ``lead``
also edits its team's requests, files disputes, and resolves disputes assigned to its org
node; ``admin`` may do everything. A user belongs to an org node: a team, or a group
whose teams it then covers.

Each rule is one dependency a route names in its signature (as the full-stack FastAPI
template's ``CurrentUser``): ``CurrentUser`` (authenticated), ``AdminUser``, ``LeadUser``,
``MemberJob`` (the path's job, of one of the user's teams), ``LeadRequest`` (the path's
request, of one of the lead's teams), ``VisibleDispute`` and ``ResolvableDispute`` (the
rules of ``governance.disputes``), ``LeadReservation`` (the path's launch reservation, of
one of the lead's teams). A dependency runs before the body is read, so an
unauthorised caller gets its 403 whatever it sent. The dashboard applies the same rule
functions (``require_role``, ``require_team``, ``teams_of``) to its pages.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session

from allotment.errors import InputError
from allotment.governance import disputes as governance_disputes
from allotment.service import security
from allotment.service.bounds import Id, ReservationName
from allotment.storage import disputes, repo, requests, reservations
from allotment.storage import jobs as jobrepo
from allotment.storage.db import Database
from allotment.storage.group import GroupCommit
from allotment.storage.models import DisputeRow, JobRow, RequestRow, ReservationRow, User

SESSION_COOKIE = "allotment_session"  # a dashboard session's id (repo.open_session)
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def get_session(request: Request) -> Iterator[Session]:
    db: Database = request.app.state.db
    with db.session() as s:
        yield s


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def group_commit(request: Request) -> GroupCommit:
    """The app's group commit (``storage.group``), for routes whose small writes many
    clients make at once (submitting a job)."""
    group: GroupCommit = request.app.state.group_commit
    return group


def credential(request: Request) -> tuple[str, str]:
    """What the request presents: ("token", API token) from ``Authorization: Bearer``, else
    ("session", id) from the dashboard's cookie, else ("", "")."""
    auth = request.headers.get("authorization", "")
    token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    if token:
        return "token", token
    sid = request.cookies.get(SESSION_COOKIE, "")
    return ("session", sid) if sid else ("", "")


def too_many(addr: str, wait: int) -> HTTPException:
    return HTTPException(429, f"too many failed authentications from {addr}; try again in "
                         f"{wait} s", headers={"Retry-After": str(wait)})


def current_user(request: Request) -> User:
    """The user of the request's API token or dashboard session, looked up in a short
    transaction of its own (so the request's transaction, and on SQLite its write lock,
    starts only in the route itself). A revoked token, an ended or expired session and a
    disabled user are refused (401). A wrong credential counts against the client address
    (``security.AuthLimiter``); past the limit every credential from it is answered 429.
    A state-changing request made with the session cookie must come from the service's own
    origin."""
    kind, value = credential(request)
    if not kind:
        raise HTTPException(401, "missing or invalid API token (Authorization: Bearer ...)",
                            headers={"WWW-Authenticate": "Bearer"})
    limiter, addr = security.limiter_of(request), security.client_address(request)
    wait = limiter.retry_after(addr)
    if wait is not None:
        raise too_many(addr, wait)
    user = None
    if len(value) <= 512:
        db: Database = request.app.state.db
        with db.readers() as s:  # reads only: no turn in SQLite's writer queue
            if kind == "token":
                user = repo.user_by_token(s, value)
            else:
                user = repo.user_by_session(s, value,
                                            float(request.app.state.settings["clock"]()))
            if user is not None:
                s.expunge(user)
    if user is None:
        limiter.failed(addr)
        if kind == "session":  # the cookie is dropped, so the browser stops sending it
            raise HTTPException(401, "the dashboard session ended or expired: log in again",
                                headers={"Set-Cookie": f"{SESSION_COOKIE}=; Max-Age=0; Path=/; "
                                         "HttpOnly; SameSite=Strict"})
        raise HTTPException(401, "missing or invalid API token (Authorization: Bearer ...)",
                            headers={"WWW-Authenticate": "Bearer"})
    if kind == "session" and request.method not in SAFE_METHODS \
            and not security.same_origin(request):
        raise HTTPException(403, "a change made with the dashboard's cookie must come from "
                            "the dashboard's own pages (Origin or Referer of this service)")
    request.state.user = user
    return user


CurrentUser = Annotated[User, Depends(current_user)]


def require_role(user: User, *roles: str) -> None:
    if user.role != "admin" and user.role not in roles:
        raise HTTPException(403, f"role {user.role} may not do this (needs "
                            f"{' or '.join(roles) or 'admin'})")


def teams_of(s: Session, user: User) -> set[str] | None:
    """Teams ``user`` acts for; None means every team (admin)."""
    if user.role == "admin":
        return None
    return repo.teams_under(s, user.org_node)


def require_team(s: Session, user: User, team: str) -> None:
    """The rule "member of this team": the team is under the user's org node (admins:
    every team)."""
    teams = teams_of(s, user)
    if teams is not None and team not in teams:
        raise HTTPException(403, f"user {user.name} does not belong to team {team}")


def require_member(s: Session, user: User, team: str) -> None:
    """A team named in a body: a known team (else 422 naming ``team``), and the user's."""
    if not repo.is_team(s, team):
        raise InputError("team", f"unknown team {team!r}")
    require_team(s, user, team)


# -- one dependency per rule ---------------------------------------------------------------
def admin_user(user: CurrentUser) -> User:
    """The rule "an admin"."""
    require_role(user, "admin")
    return user


def lead_user(user: CurrentUser) -> User:
    """The rule "a lead (or an admin)"."""
    require_role(user, "lead")
    return user


AdminUser = Annotated[User, Depends(admin_user)]
LeadUser = Annotated[User, Depends(lead_user)]


def member_job(job_id: Id, s: SessionDep, user: CurrentUser) -> JobRow:
    """The rule "member of this job's team": the job (404 if none, with its queue
    position), if it is of one of the user's teams (else 403)."""
    job = jobrepo.get(s, job_id)
    require_team(s, user, job.team)
    return jobrepo.with_positions(s, [job])[0]


def lead_request(request_id: Id, s: SessionDep, user: LeadUser) -> RequestRow:
    """The rule "a lead of this request's team": a lead (else 403), then the request (404
    if none), if it is of one of the lead's teams (else 403)."""
    row = requests.get(s, request_id)
    require_team(s, user, row.team)
    return row


def visible_dispute(dispute_id: Id, s: SessionDep, user: CurrentUser) -> DisputeRow:
    """The rule "may see this dispute" (``governance.disputes``): the dispute (404 if
    none), if the user may see it (else 403)."""
    row = disputes.get(s, dispute_id)
    if not governance_disputes.may_see(s, user, row):
        raise HTTPException(403, f"dispute {dispute_id} is not of your teams")
    return row


def resolvable_dispute(dispute_id: Id, s: SessionDep, user: CurrentUser) -> DisputeRow:
    """The rule "may resolve this dispute" (never its filer, never a lead of its team:
    ``governance.disputes.may_not_resolve``): the dispute (404 if none), else 403 with the
    reason."""
    row = disputes.get(s, dispute_id)
    refused = governance_disputes.may_not_resolve(s, row, user.name, user.role, user.org_node)
    if refused is not None:
        raise HTTPException(403, refused)
    return row


def lead_reservation(name: ReservationName, s: SessionDep, user: LeadUser) -> ReservationRow:
    """The rule "a lead of this reservation's team": a lead (else 403), then the
    reservation (404 if none), if it is of one of the lead's teams (else 403)."""
    row = reservations.get(s, name)
    require_team(s, user, row.team)
    return row


MemberJob = Annotated[JobRow, Depends(member_job)]
LeadRequest = Annotated[RequestRow, Depends(lead_request)]
VisibleDispute = Annotated[DisputeRow, Depends(visible_dispute)]
ResolvableDispute = Annotated[DisputeRow, Depends(resolvable_dispute)]
LeadReservation = Annotated[ReservationRow, Depends(lead_reservation)]


def now(request: Request) -> float:
    """The service clock (setting ``clock``; tests move it)."""
    return float(request.app.state.settings["clock"]())
