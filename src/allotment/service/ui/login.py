"""Logging in and out, and the static files (the pages' one script and style sheet)."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping

from fastapi import HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from allotment.service import security
from allotment.service.deps import SESSION_COOKIE, too_many
from allotment.service.ui.render import (
    LOGIN_COOKIE,
    SESSION_TTL_S,
    STATIC,
    check_origin,
    csrf_of,
    form,
    now,
    page,
    page_router,
    read_form,
    session,
)
from allotment.storage import repo

router = page_router()


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
    check_origin(request)
    got = await read_form(request)
    pre = request.cookies.get(LOGIN_COOKIE, "")
    if not pre or not hmac.compare_digest(got.get("csrf", ""),
                                          csrf_of(pre, b"allotment-login")):
        raise HTTPException(403, "the login form is stale or came from another site: reload "
                            "the page")
    token = got.get("token", "").strip()
    target = _safe_next(got.get("next", "/ui"))
    limiter, addr = security.limiter_of(request), security.client_address(request)
    wait = limiter.retry_after(addr)
    if wait is not None:
        exc = too_many(addr, wait)
        return _login_page(request, 429, target, f"Too many failed logins: {exc.detail}",
                           exc.headers)
    opened = None
    if token and len(token) < 512:
        settings = request.app.state.settings
        with session(request) as s:
            opened = repo.open_session(s, token, now(request),
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
    await form(request)
    with session(request) as s:
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
