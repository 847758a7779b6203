"""The web dashboard: server-rendered pages (Jinja2) under ``/ui``, same auth as the API.

Log in with an API token: that opens a dashboard session, a random id kept in an HttpOnly,
SameSite=Strict cookie (the API accepts it too) and stored hashed with an expiry; logout
ends it on the server. Every form carries a CSRF field derived from the session id (the
login form one derived from a pre-session cookie), and every form post must come from the
service's own origin (``Origin``, else ``Referer``). A user mistake is shown on the page
next to its field; no page shows a traceback.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy import select

from allotment.errors import AllotmentError, InputError
from allotment.service import routes, security, views
from allotment.service.bounds import CheckedJsonRoute, Flag, Id, Offset, OptionalId, clip
from allotment.service.deps import SESSION_COOKIE, current_user, teams_of, too_many
from allotment.storage import jobs as jobrepo
from allotment.storage import repo
from allotment.storage.models import DisputeRow, User

router = APIRouter(prefix="/ui", include_in_schema=False, route_class=CheckedJsonRoute)
SESSION_TTL_S = 12 * 3600.0  # a dashboard session's life (setting ``session_ttl_s``)
STATIC = Path(__file__).parent / "static"
env = Environment(loader=PackageLoader("allotment.service", "templates"),
                  autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
NAV = [("cluster", "/ui", "Cluster now"), ("teams", "/ui/teams", "Teams"),
       ("jobs", "/ui/jobs", "My jobs and queue"), ("plans", "/ui/plans", "Plans"),
       ("disputes", "/ui/disputes", "Disputes"), ("audit", "/ui/audit", "Audit log"),
       ("reports", "/ui/reports", "Simulator reports")]


def _ts(t: float | None) -> str:
    return "" if t is None else time.strftime("%Y-%m-%d %H:%M", time.gmtime(t)) + " UTC"


env.filters["ts"] = _ts
env.filters["gpuh"] = lambda x: f"{x:,.1f}"


LOGIN_COOKIE = "allotment_login"  # the login form's pre-session CSRF secret


def csrf_of(session_id: str, purpose: bytes = b"allotment-csrf") -> str:
    """The CSRF field of a session's forms (or, with ``allotment-login``, of the login
    form): an HMAC under the secret the cookie holds, which another site cannot read."""
    return hmac.new(session_id.encode(), purpose, hashlib.sha256).hexdigest()[:32]


def _now(request: Request) -> float:
    return float(request.app.state.settings["clock"]())


def page(request: Request, template: str, user: User | None, status: int = 200,
         **ctx: Any) -> HTMLResponse:
    sid = request.cookies.get(SESSION_COOKIE, "")
    csrf = ctx.pop("csrf", None) or (csrf_of(sid) if sid and user is not None else "")
    html = env.get_template(template).render(
        user=user, nav=NAV, csrf=csrf, request=request, **ctx)
    return HTMLResponse(html, status_code=status)


def _user(request: Request) -> User:
    return current_user(request)


def _check_origin(request: Request) -> None:
    if not security.same_origin(request):
        raise HTTPException(403, "the form came from another site (its Origin or Referer is "
                            "not this service): reload the page and send it again")


async def _read_form(request: Request) -> dict[str, str]:
    body = (await request.body()).decode(errors="replace")
    return {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}


async def _form(request: Request) -> dict[str, str]:
    """A state-changing form post: from this service's origin, with its session's CSRF."""
    _check_origin(request)
    form = await _read_form(request)
    sid = request.cookies.get(SESSION_COOKIE, "")
    if not sid or not hmac.compare_digest(form.get("csrf", ""), csrf_of(sid)):
        raise HTTPException(403, "the form is stale or came from another site: reload the page")
    return form


def _session(request: Request) -> Any:
    return request.app.state.db.session()


# -- login -----------------------------------------------------------------------------
def _login_page(request: Request, status: int, target: str, error: str | None,
                headers: Mapping[str, str] | None = None) -> HTMLResponse:
    """The login form with a pre-session CSRF field: its secret is a cookie of its own
    (kept if the browser has one), so a login posted from another site fails."""
    pre = request.cookies.get(LOGIN_COOKIE, "")
    if not (pre.startswith("alp_") and 20 < len(pre) < 100):
        pre = "alp_" + secrets.token_urlsafe(24)
    resp = page(request, "login.html", None, status, next=target, error=error,
                csrf=csrf_of(pre, b"allotment-login"))
    resp.set_cookie(LOGIN_COOKIE, pre, httponly=True, samesite="strict", path="/ui/login",
                    max_age=3600, secure=request.url.scheme == "https")
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


@router.get("/login")
def login_form(request: Request, next: str = "/ui") -> HTMLResponse:
    return _login_page(request, 200, _safe_next(next), None)


def _safe_next(target: str) -> str:
    return target if target.startswith("/ui") and "//" not in target else "/ui"


@router.post("/login")
async def login(request: Request) -> Response:
    """Open a dashboard session for a valid token: from this service's origin, with the
    login form's CSRF field; a wrong token counts against the client's address."""
    _check_origin(request)
    form = await _read_form(request)
    pre = request.cookies.get(LOGIN_COOKIE, "")
    if not pre or not hmac.compare_digest(form.get("csrf", ""),
                                          csrf_of(pre, b"allotment-login")):
        raise HTTPException(403, "the login form is stale or came from another site: reload "
                            "the page")
    token = form.get("token", "").strip()
    target = _safe_next(form.get("next", "/ui"))
    limiter, addr = security.limiter_of(request), security.client_address(request)
    wait = limiter.retry_after(addr)
    if wait is not None:
        exc = too_many(addr, wait)
        return _login_page(request, 429, target, f"Too many failed logins: {exc.detail}",
                           exc.headers)
    opened = None
    if token and len(token) < 512:
        settings = request.app.state.settings
        with _session(request) as s:
            opened = repo.open_session(s, token, _now(request),
                                       float(settings.get("session_ttl_s", SESSION_TTL_S)))
    if opened is None:
        limiter.failed(addr)
        return _login_page(request, 401, target,
                           "token: not a valid API token (ask an admin for one)")
    _, session_id = opened
    resp = RedirectResponse(target, status_code=303)
    resp.set_cookie(SESSION_COOKIE, session_id, httponly=True, samesite="strict", path="/",
                    max_age=int(request.app.state.settings.get("session_ttl_s",
                                                               SESSION_TTL_S)),
                    secure=request.url.scheme == "https")
    resp.delete_cookie(LOGIN_COOKIE, path="/ui/login")
    return resp


@router.post("/logout")
async def logout(request: Request) -> Response:
    """End the session on the server (its cookie is then worth nothing) and drop it."""
    await _form(request)
    with _session(request) as s:
        repo.end_session(s, request.cookies.get(SESSION_COOKIE, ""))
    resp = RedirectResponse("/ui/login", status_code=303)
    resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp


@router.get("/static/{name}")
def static(name: str) -> FileResponse:
    path = STATIC / name
    if "/" in name or not path.is_file():
        raise HTTPException(404, f"no static file {name}")
    return FileResponse(path, headers={"Cache-Control": "max-age=3600"})


# -- cluster now -----------------------------------------------------------------------
@router.get("")
def cluster(request: Request) -> HTMLResponse:
    user = _user(request)
    with _session(request) as s:
        view = views.cluster_view(s)
    return page(request, "cluster.html", user, active="cluster", v=view,
                states=views.GPU_STATES)


# -- teams -----------------------------------------------------------------------------
WINDOWS = {"24h": 24, "7d": 24 * 7, "period": 24 * 31}


@router.get("/teams")
def teams(request: Request, window: str = "24h") -> HTMLResponse:
    user = _user(request)
    if window not in WINDOWS:
        raise InputError("window", f"{window!r}: choose 24h, 7d or period")
    with _session(request) as s:
        rows = views.team_rows(s, _now(request), WINDOWS[window])
    scale = max([max(r.guaranteed, r.in_use, 1) for r in rows] or [1])
    return page(request, "teams.html", user, active="teams", rows=rows, scale=scale,
                window=window, windows=list(WINDOWS), spark=views.sparkline)


# -- jobs ------------------------------------------------------------------------------
JOB_STATES = ("pending", "starting", "running", "terminating", "succeeded", "failed",
              "cancelled", "rejected")


def _jobs_page(request: Request, user: User, state: str | None, offset: int,
               errors: dict[str, str] | None = None, values: dict[str, str] | None = None,
               notice: str | None = None, status: int = 200) -> HTMLResponse:
    if state is not None and state not in JOB_STATES:
        raise InputError("state", f"{state!r} is not a job state")
    with _session(request) as s:
        teams = teams_of(s, user)
        rows, total = jobrepo.page(s, teams, [state] if state else None, 50, max(0, offset))
        my_teams = sorted(teams if teams is not None else repo.teams_under(s, None))
        types = sorted(repo.capacity(s))
        queue = routes.queue(s, user)  # the API's org-wide summary, as it is
        for r in rows:
            s.expunge(r)
    return page(request, "jobs.html", user, status, active="jobs", rows=rows, total=total,
                offset=offset, state=state, states=JOB_STATES, teams=my_teams, types=types,
                errors=errors or {}, values=values or {}, notice=notice, queue=queue)


@router.get("/jobs")
def jobs(request: Request, state: str | None = None, offset: Offset = 0) -> HTMLResponse:
    return _jobs_page(request, _user(request), state or None, offset)


@router.post("/jobs")
async def submit(request: Request) -> Response:
    user = _user(request)
    form = await _form(request)
    values = {k: form.get(k, "") for k in ("team", "gpu_type", "gpus", "command", "name",
                                           "priority_class")}
    from pydantic import ValidationError

    from allotment.service.schemas import JobCreate

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
        with _session(request) as s:  # the API's submit: the same checks, the same write
            jid = routes.submit_job(body, request, s, user)["id"]
    except InputError as exc:
        return _jobs_page(request, user, None, 0, {exc.field: str(exc)}, values, status=422)
    except HTTPException as exc:  # not a member of that team: said next to the field
        return _jobs_page(request, user, None, 0, {"team": f"team: {exc.detail}"}, values,
                          status=exc.status_code)
    return RedirectResponse(f"/ui/jobs/{jid}?submitted=1", status_code=303)


def _job_for(s: Any, user: User, job_id: int) -> Any:
    job = jobrepo.get(s, job_id)
    teams = teams_of(s, user)
    if teams is not None and job.team not in teams:
        raise HTTPException(403, f"job {job_id} belongs to team {job.team}; you are not in it")
    return job


@router.get("/jobs/{job_id}")
def job_detail(request: Request, job_id: Id, submitted: Flag = 0) -> HTMLResponse:
    user = _user(request)
    with _session(request) as s:
        job = jobrepo.with_positions(s, [_job_for(s, user, job_id)])[0]
        s.expunge(job)
    return page(request, "job.html", user, active="jobs", j=job,
                notice="Submitted." if submitted else None)


@router.post("/jobs/{job_id}/cancel")
async def cancel(request: Request, job_id: Id) -> Response:
    user = _user(request)
    await _form(request)
    with _session(request) as s:
        job = _job_for(s, user, job_id)
        jobrepo.cancel(s, job, user.name, _now(request))
    return RedirectResponse(f"/ui/jobs/{job_id}", status_code=303)


# -- plans -----------------------------------------------------------------------------
@router.get("/plans")
def plans(request: Request, draft: OptionalId = None) -> HTMLResponse:
    user = _user(request)
    with _session(request) as s:
        v = views.plan_side_by_side(s, _now(request), draft)
        for p in v["plans"]:
            s.expunge(p)
    return page(request, "plans.html", user, active="plans", v=v)


@router.post("/plans/{plan_id}/publish")
async def publish(request: Request, plan_id: Id) -> Response:
    user = _user(request)
    await _form(request)
    with _session(request) as s:
        routes.publish_plan(plan_id, request, s, user)
    return RedirectResponse(f"/ui/plans?draft={plan_id}", status_code=303)


# -- disputes and audit ------------------------------------------------------------------
@router.get("/disputes")
def disputes(request: Request) -> HTMLResponse:
    user = _user(request)
    with _session(request) as s:
        q = select(DisputeRow).order_by(DisputeRow.id.desc()).limit(500)
        visible = routes._dispute_visible(s, user)  # the API's rule, as it is
        if visible is not None:
            q = q.where(visible)
        rows = list(s.execute(q).scalars())
        for r in rows:
            s.expunge(r)
    open_by_level: dict[int, list[DisputeRow]] = {}
    for r in rows:
        if r.state == "open":
            open_by_level.setdefault(r.level, []).append(r)
    return page(request, "disputes.html", user, active="disputes",
                levels=sorted(open_by_level.items()), rows=rows)


@router.get("/audit")
def audit_log(request: Request, action: str = "", subject: str = "",
              offset: Offset = 0) -> HTMLResponse:
    user = _user(request)
    if len(action) > 64 or len(subject) > 128 or "\x00" in action + subject:
        raise InputError("action", "filters are at most 64/128 characters")
    with _session(request) as s:  # the API's visibility rule and check, as they are
        rows, total = routes.audit_page(s, user, action, subject, 100, max(0, offset),
                                        contains=True)
        check = routes.audit_check(s, user)
        for r in rows:
            s.expunge(r)
    return page(request, "audit.html", user, active="audit", rows=rows, total=total,
                offset=offset, action=action, subject=subject, check=check)


# -- simulator reports -------------------------------------------------------------------
def _reports_dir(request: Request) -> Path | None:
    d = request.app.state.settings.get("reports_dir")
    return Path(d) if d else None


@router.get("/reports")
def reports(request: Request) -> HTMLResponse:
    user = _user(request)
    return page(request, "reports.html", user, active="reports",
                reports=views.reports(_reports_dir(request)), folder=_reports_dir(request))


@router.get("/reports/{name}/{plot}")
def report_plot(request: Request, name: str, plot: str) -> FileResponse:
    _user(request)
    folder = _reports_dir(request)
    if folder is None or not (views.REPORT_NAME.match(name) and views.REPORT_NAME.match(plot)
                              and plot.endswith(".png")):
        raise HTTPException(404, "no such plot")
    path = views.inside(folder, folder / name / plot)
    if path is None or not path.is_file():
        raise HTTPException(404, "no such plot")
    return FileResponse(path)


# -- errors: a page in words, never a traceback ------------------------------------------
def error_page(request: Request, status: int, message: str,
               headers: Mapping[str, str] | None = None) -> Response:
    """The page of an error, with the user this request authenticated as. If the error
    came before the route looked the user up (a bad path parameter), it is looked up here,
    through the same rate limit; never after a 429."""
    if status == 401:
        redirect = RedirectResponse(f"/ui/login?next={quote(request.url.path)}", 303)
        for k, v in (headers or {}).items():
            if k.lower() == "set-cookie":
                redirect.headers.append(k, v)
        return redirect
    user = getattr(request.state, "user", None)
    if user is None and status != 429:
        with contextlib.suppress(HTTPException):
            user = current_user(request)
    resp = page(request, "error.html", user, status, message=clip(message, 2000),
                code=status)
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def handles(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, HTTPException):
        return exc.status_code, str(exc.detail)
    if isinstance(exc, InputError):
        return 422, str(exc)
    if isinstance(exc, repo.NotFound):
        return 404, f"not found: {exc}"
    if isinstance(exc, repo.Conflict):
        return 409, str(exc)
    if isinstance(exc, AllotmentError):
        return 400, str(exc)
    return 500, "something went wrong on our side; it was logged. Try again, or tell an admin."
