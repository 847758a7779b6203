"""Simulator reports stored under the service's reports folder: their summaries and plots
(a plot is served only from inside that folder, never through a link out of it)."""

from __future__ import annotations

from pathlib import Path

from fastapi import HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse

from allotment.service.ui import views
from allotment.service.ui.render import page, page_router, user_of

router = page_router()


def _reports_dir(request: Request) -> Path | None:
    d = request.app.state.settings.get("reports_dir")
    return Path(d) if d else None


@router.get("/reports")
def reports(request: Request) -> HTMLResponse:
    user = user_of(request)
    return page(request, "reports.html", user, active="reports",
                reports=views.reports(_reports_dir(request)), folder=_reports_dir(request))


@router.get("/reports/{name}/{plot}")
def report_plot(request: Request, name: str, plot: str) -> FileResponse:
    user_of(request)
    folder = _reports_dir(request)
    if folder is None or not (views.REPORT_NAME.match(name) and views.REPORT_NAME.match(plot)
                              and plot.endswith(".png")):
        raise HTTPException(404, "no such plot")
    path = views.inside(folder, folder / name / plot)
    if path is None or not path.is_file():
        raise HTTPException(404, "no such plot")
    return FileResponse(path)
