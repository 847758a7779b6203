"""Launch reservations: any signed-in user reads them; a lead asks for its teams' (approved
at once within the team's guarantee), an admin approves the others; a lead of the team or
an admin cancels one (``governance.reservations`` has the rules)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request

from allotment.governance import reservations
from allotment.service import schemas as sch
from allotment.service.bounds import CheckedJsonRoute, Limit, Offset, ReservationName
from allotment.service.deps import (
    AdminUser,
    CurrentUser,
    LeadReservation,
    LeadUser,
    SessionDep,
    now,
    require_member,
)
from allotment.storage import reservations as stored

router = APIRouter(route_class=CheckedJsonRoute)
Status = Literal["pending", "approved", "cancelled"]


@router.post("/v1/reservations", response_model=sch.ReservationPublic, status_code=201,
             tags=["reservations"])
def request_reservation(body: sch.ReservationCreate, request: Request, s: SessionDep,
                        user: LeadUser) -> dict[str, Any]:
    """Ask for a launch reservation; 409 with the reason when it is infeasible or conflicts
    with others (named, with the GPUs short)."""
    require_member(s, user, body.team)
    row = reservations.request(s, user.name, now(request), team=body.team, gpus=body.gpus,
                               gpu_type=body.gpu_type, start=reservations.parse_start(
                                   body.start), hours=body.hours, reason=body.reason,
                               name=body.name)
    return reservations.public(row)


@router.get("/v1/reservations", response_model=sch.Page[sch.ReservationPublic],
            tags=["reservations"])
def list_reservations(s: SessionDep, user: CurrentUser, limit: Limit = 100,
                      offset: Offset = 0,
                      status: Annotated[list[Status] | None, Query(max_length=3)] = None,
                      ) -> dict[str, Any]:
    rows, total = stored.page(s, status, limit, offset)
    return {"items": [reservations.public(r) for r in rows], "total": total, "limit": limit,
            "offset": offset}


@router.get("/v1/reservations/{name}", response_model=sch.ReservationPublic,
            tags=["reservations"])
def get_reservation(name: ReservationName, s: SessionDep, user: CurrentUser) -> dict[str, Any]:
    return reservations.public(stored.get(s, name))


@router.post("/v1/reservations/{name}/approve", response_model=sch.ReservationPublic,
             tags=["reservations"])
def approve_reservation(name: ReservationName, request: Request, s: SessionDep,
                        user: AdminUser) -> dict[str, Any]:
    return reservations.public(reservations.approve(s, stored.get(s, name), user.name,
                                                    now(request)))


@router.delete("/v1/reservations/{name}", response_model=sch.ReservationPublic,
               tags=["reservations"])
def cancel_reservation(row: LeadReservation, request: Request, s: SessionDep,
                       user: CurrentUser) -> dict[str, Any]:
    return reservations.public(reservations.cancel(s, row, user.name, now(request)))
