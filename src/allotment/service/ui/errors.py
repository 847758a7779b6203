"""Errors on a dashboard page: a page in words, never a traceback."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from urllib.parse import quote

from fastapi import HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from allotment.errors import AllotmentError, InputError
from allotment.service.bounds import clip
from allotment.service.deps import current_user
from allotment.service.ui.render import page
from allotment.storage import repo


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
    """The status and message of an error, API and dashboard alike: ``InputError`` 422,
    ``NotFound`` 404, ``Conflict`` 409, any other ``AllotmentError`` 400, else 500."""
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
