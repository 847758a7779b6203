"""Cluster now (every GPU by state, per type and topology domain) and Teams (per team:
guarantee, in use, borrowed, lent, idle-allocated, waiting; use over time; hoarding)."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import HTMLResponse

from allotment.errors import InputError
from allotment.service.ui import views
from allotment.service.ui.charts import Series, line_chart
from allotment.service.ui.render import now, page, page_router, session, user_of

router = page_router()
WINDOWS = {"24h": 24, "7d": 24 * 7, "period": 24 * 31}


@router.get("")
def cluster(request: Request) -> HTMLResponse:
    user = user_of(request)
    t = now(request)
    charts = []
    with session(request) as s:
        view = views.cluster_view(s)
        for label, hours in (("last 24 h", 24), ("last 7 days", 24 * 7)):
            h = views.cluster_history(s, t, hours)
            charts.append((label, line_chart(
                [Series("in use", h.utilisation_pct, "inuse"),
                 Series("idle while jobs wait", h.idle_waiting_pct, "alarm")],
                h.start, h.step_s, "% of GPUs up",
                f"Utilisation and idle GPUs while jobs wait, {label}")))
    return page(request, "cluster.html", user, active="cluster", v=view,
                states=views.GPU_STATES, charts=charts)


@router.get("/teams")
def teams(request: Request, window: str = "24h") -> HTMLResponse:
    user = user_of(request)
    if window not in WINDOWS:
        raise InputError("window", f"{window!r}: choose 24h, 7d or period")
    t, hours = now(request), WINDOWS[window]
    with session(request) as s:
        rows = views.team_rows(s, t, hours)
    scale = max([max(r.guaranteed, r.in_use, 1) for r in rows] or [1])
    # the series' slots, as ``views.team_rows`` makes them
    per = max(1, -(-hours // 48))
    start = int(t // 3600 * 3600) - (hours - 1) * 3600
    charts = {(r.team, r.gpu_type): line_chart(
        [Series("GPUs in use", r.series, "inuse"),
         Series(f"guarantee now ({r.guaranteed})", [float(r.guaranteed)] * len(r.series),
                "guarantee", dashed=True)],
        start, per * 3600.0, f"{r.gpu_type} GPUs",
        f"team {r.team}: {r.gpu_type} GPUs in use against its guarantee, {window}")
        for r in rows}
    return page(request, "teams.html", user, active="teams", rows=rows, scale=scale,
                window=window, windows=list(WINDOWS), charts=charts)
