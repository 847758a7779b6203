"""Disputes the user may see (the rule of ``governance.disputes``), the open ones by
escalation level."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import HTMLResponse

from allotment.governance import disputes as rules
from allotment.service.ui.render import page, page_router, session, user_of
from allotment.storage import disputes as stored
from allotment.storage.models import DisputeRow

router = page_router()


@router.get("/disputes")
def disputes(request: Request) -> HTMLResponse:
    user = user_of(request)
    with session(request) as s:
        rows = rules.recent_for(s, user, 500)
        for r in rows:
            s.expunge(r)
    open_by_level: dict[int, list[DisputeRow]] = {}
    for r in rows:
        if r.state == stored.OPEN:
            open_by_level.setdefault(r.level, []).append(r)
    return page(request, "disputes.html", user, active="disputes",
                levels=sorted(open_by_level.items()), rows=rows)
