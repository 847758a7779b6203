"""The audit log page: the entries the user may read, filtered by substrings of action and
subject, and whether the chain verifies (``governance.auditing``, as the API)."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import HTMLResponse

from allotment.errors import InputError
from allotment.governance import auditing
from allotment.service.bounds import Offset
from allotment.service.ui.render import page, page_router, session, user_of

router = page_router()


@router.get("/audit")
def audit_log(request: Request, action: str = "", subject: str = "",
              offset: Offset = 0) -> HTMLResponse:
    user = user_of(request)
    if len(action) > 64 or len(subject) > 128 or "\x00" in action + subject:
        raise InputError("action", "filters are at most 64/128 characters")
    with session(request) as s:
        rows, total = auditing.page(s, user, action, subject, 100, max(0, offset),
                                    contains=True)
        check = auditing.check(s, user)
        for r in rows:
            s.expunge(r)
    return page(request, "audit.html", user, active="audit", rows=rows, total=total,
                offset=offset, action=action, subject=subject, check=check)
