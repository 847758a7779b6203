"""Cluster now (every GPU by state, per type and topology domain) and Teams (per team:
guarantee, in use, borrowed, lent, idle-allocated, waiting; use over time; hoarding)."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import HTMLResponse

from allotment.errors import InputError
from allotment.service.ui import views
from allotment.service.ui.render import now, page, page_router, session, user_of

router = page_router()
WINDOWS = {"24h": 24, "7d": 24 * 7, "period": 24 * 31}


@router.get("")
def cluster(request: Request) -> HTMLResponse:
    user = user_of(request)
    with session(request) as s:
        view = views.cluster_view(s)
    return page(request, "cluster.html", user, active="cluster", v=view,
                states=views.GPU_STATES)


@router.get("/teams")
def teams(request: Request, window: str = "24h") -> HTMLResponse:
    user = user_of(request)
    if window not in WINDOWS:
        raise InputError("window", f"{window!r}: choose 24h, 7d or period")
    with session(request) as s:
        rows = views.team_rows(s, now(request), WINDOWS[window])
    scale = max([max(r.guaranteed, r.in_use, 1) for r in rows] or [1])
    return page(request, "teams.html", user, active="teams", rows=rows, scale=scale,
                window=window, windows=list(WINDOWS), spark=views.sparkline)
