"""What every dashboard page shares: the templates, the page frame, the CSRF field and the
form checks, the signed-in user and a database session."""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape

from allotment.domain.jobstate import JobState
from allotment.service import security
from allotment.service.bounds import CheckedJsonRoute
from allotment.service.deps import SESSION_COOKIE, current_user
from allotment.storage.models import User

SESSION_TTL_S = 12 * 3600.0  # a dashboard session's life (setting ``session_ttl_s``)
LOGIN_COOKIE = "allotment_login"  # the login form's pre-session CSRF secret
STATIC = Path(__file__).resolve().parents[1] / "static"
NAV = [("cluster", "/ui", "Cluster now"), ("teams", "/ui/teams", "Teams"),
       ("jobs", "/ui/jobs", "My jobs and queue"), ("plans", "/ui/plans", "Plans"),
       ("reservations", "/ui/reservations", "Reservations"),
       ("disputes", "/ui/disputes", "Disputes"), ("audit", "/ui/audit", "Audit log"),
       ("reports", "/ui/reports", "Simulator reports")]
# a job the dashboard offers to cancel (a terminating one is already stopping)
CANCELLABLE = (JobState.PENDING, JobState.STARTING, JobState.RUNNING)

env = Environment(loader=PackageLoader("allotment.service", "templates"),
                  autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)


def _ts(t: float | None) -> str:
    return "" if t is None else time.strftime("%Y-%m-%d %H:%M", time.gmtime(t)) + " UTC"


env.filters["ts"] = _ts
env.filters["gpuh"] = lambda x: f"{x:,.1f}"
env.globals.update(JobState=JobState, CANCELLABLE=CANCELLABLE)


def page_router() -> APIRouter:
    """The router of one group of pages, under ``/ui`` and out of the OpenAPI spec."""
    return APIRouter(prefix="/ui", include_in_schema=False, route_class=CheckedJsonRoute)


def same_text(got: str, want: str) -> bool:
    """``got == want`` in constant time, for any text a client sends (compare_digest
    refuses str with non-ASCII characters, so both are compared as UTF-8 bytes)."""
    return hmac.compare_digest(got.encode(errors="replace"), want.encode(errors="replace"))


def csrf_of(session_id: str, purpose: bytes = b"allotment-csrf") -> str:
    """The CSRF field of a session's forms (or, with ``allotment-login``, of the login
    form): an HMAC under the secret the cookie holds, which another site cannot read."""
    return hmac.new(session_id.encode(), purpose, hashlib.sha256).hexdigest()[:32]


def now(request: Request) -> float:
    return float(request.app.state.settings["clock"]())


def page(request: Request, template: str, user: User | None, status: int = 200,
         **ctx: Any) -> HTMLResponse:
    sid = request.cookies.get(SESSION_COOKIE, "")
    csrf = ctx.pop("csrf", None) or (csrf_of(sid) if sid and user is not None else "")
    html = env.get_template(template).render(
        user=user, nav=NAV, csrf=csrf, request=request, **ctx)
    return HTMLResponse(html, status_code=status)


def user_of(request: Request) -> User:
    return current_user(request)


def check_origin(request: Request) -> None:
    if not security.same_origin(request):
        raise HTTPException(403, "the form came from another site (its Origin or Referer is "
                            "not this service): reload the page and send it again")


async def read_form(request: Request) -> dict[str, str]:
    body = (await request.body()).decode(errors="replace")
    return {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}


async def form(request: Request) -> dict[str, str]:
    """A state-changing form post: from this service's origin, with its session's CSRF."""
    check_origin(request)
    got = await read_form(request)
    sid = request.cookies.get(SESSION_COOKIE, "")
    if not sid or not same_text(got.get("csrf", ""), csrf_of(sid)):
        raise HTTPException(403, "the form is stale or came from another site: reload the page")
    return got


def session(request: Request) -> Any:
    """A ``with`` block of one transaction, committed before the page returns."""
    return request.app.state.db.session()

