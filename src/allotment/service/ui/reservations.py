"""Launch reservations: the list with the impact of those pending; a request form for leads,
whose mistakes and refusals (conflicts, with the reason) are shown next to their field;
approve (admins) and cancel (a lead of the team, or an admin). The API's rules and writes,
through the same functions (``governance.reservations``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from allotment.errors import InputError
from allotment.governance import reservations as workflow
from allotment.service.bounds import ReservationName
from allotment.service.deps import require_member, require_role, require_team, teams_of
from allotment.service.schemas import ReservationCreate
from allotment.service.ui.render import form, now, page, page_router, session, user_of
from allotment.storage import repo
from allotment.storage import reservations as stored
from allotment.storage.models import User

router = page_router()
MadeQuery = Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9._-]{1,64}$")]
SHOWN = 500
FIELDS = ("team", "gpus", "gpu_type", "start", "hours", "reason", "name")


def _page(request: Request, user: User, errors: dict[str, str] | None = None,
          values: dict[str, str] | None = None, notice: str | None = None,
          status: int = 200) -> HTMLResponse:
    with session(request) as s:
        # the latest SHOWN by start (ascending): past ones drop off, never new ones
        total = stored.page(s, None, 1, 0)[1]
        rows, total = stored.page(s, None, SHOWN, max(0, total - SHOWN))
        items = [workflow.public(r) for r in rows]
        mine = teams_of(s, user)
        all_teams = repo.teams_under(s, None)
        types = sorted(repo.capacity(s))
    lead_of = sorted(all_teams if mine is None else mine) if user.role in ("lead", "admin") \
        else []
    cancellable = {r.name for r in rows if r.status != stored.CANCELLED
                   and r.team in lead_of
                   and not (r.status == stored.APPROVED and r.end_time <= now(request))}
    return page(request, "reservations.html", user, status, active="reservations",
                items=items, total=total, teams=lead_of, types=types, errors=errors or {},
                values=values or {}, notice=notice, cancellable=cancellable,
                admin=user.role == "admin")


@router.get("/reservations")
def reservations(request: Request, made: MadeQuery = None) -> HTMLResponse:
    user = user_of(request)
    notice = None
    if made is not None:
        with session(request) as s:
            row = stored.find(s, made)
            notice = f"Reservation {made}: {row.status}." if row is not None else None
    return _page(request, user, notice=notice)


@router.post("/reservations")
async def request_reservation(request: Request) -> Response:
    user = user_of(request)
    got = await form(request)
    values = {k: got.get(k, "") for k in FIELDS}
    try:
        # a form sends text: its numbers are parsed from it (strict=False), as JSON is not
        body = ReservationCreate.model_validate(
            {**values, "gpus": values["gpus"] or None, "hours": values["hours"] or None,
             "gpu_type": values["gpu_type"] or None, "name": values["name"] or None},
            strict=False)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "form"
        return _page(request, user, {field: f"{field}: {err['msg']}"}, values, status=422)
    try:
        with session(request) as s:  # the API's rules, the same write
            require_role(user, "lead")
            require_member(s, user, body.team)
            row = workflow.request(s, user.name, now(request), team=body.team,
                                   gpus=body.gpus, gpu_type=body.gpu_type,
                                   start=workflow.parse_start(body.start), hours=body.hours,
                                   reason=body.reason, name=body.name)
            name = row.name
    except InputError as exc:
        return _page(request, user, {exc.field: str(exc)}, values, status=422)
    except repo.Conflict as exc:
        return _page(request, user, {"form": f"refused: {exc}"}, values, status=409)
    except HTTPException as exc:  # not a lead, or not of that team: said next to the field
        return _page(request, user, {"team": f"team: {exc.detail}"}, values,
                     status=exc.status_code)
    return RedirectResponse(f"/ui/reservations?made={name}", status_code=303)


@router.post("/reservations/{name}/approve")
async def approve(request: Request, name: ReservationName) -> Response:
    user = user_of(request)
    await form(request)
    with session(request) as s:
        require_role(user, "admin")
        workflow.approve(s, stored.get(s, name), user.name, now(request))
    return RedirectResponse("/ui/reservations", status_code=303)


@router.post("/reservations/{name}/cancel")
async def cancel(request: Request, name: ReservationName) -> Response:
    user = user_of(request)
    await form(request)
    with session(request) as s:
        require_role(user, "lead")
        row = stored.get(s, name)
        require_team(s, user, row.team)
        workflow.cancel(s, row, user.name, now(request))
    return RedirectResponse("/ui/reservations", status_code=303)
