"""Quota requests for a period's plan: anyone reads them; a lead writes its teams' (the
planner's rules: ``governance.requests``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from allotment.governance import requests
from allotment.service import schemas as sch
from allotment.service.bounds import CheckedJsonRoute, Limit, Offset, PeriodQuery
from allotment.service.deps import (
    CurrentUser,
    LeadRequest,
    LeadUser,
    SessionDep,
    now,
    require_member,
)
from allotment.storage import requests as stored
from allotment.storage.models import RequestRow

router = APIRouter(route_class=CheckedJsonRoute)


@router.get("/v1/requests", response_model=sch.Page[sch.RequestPublic], tags=["plans"])
def list_requests(s: SessionDep, user: CurrentUser, period: PeriodQuery = None,
                  limit: Limit = 100, offset: Offset = 0) -> dict[str, Any]:
    rows, total = stored.page(s, period, None, limit, offset)
    return {"items": rows, "total": total, "limit": limit, "offset": offset}


@router.post("/v1/requests", response_model=sch.RequestPublic, status_code=201, tags=["plans"])
def create_request(body: sch.RequestCreate, request: Request, s: SessionDep,
                   user: LeadUser) -> RequestRow:
    require_member(s, user, body.team)
    return requests.create(s, user.name, now(request), team=body.team, period=body.period,
                           gpu_type=body.gpu_type, gpus=body.gpus, min_gpus=body.min_gpus,
                           tier=body.tier, launch=body.launch,
                           justification=body.justification,
                           cooperates_with=body.cooperates_with)


@router.patch("/v1/requests/{request_id}", response_model=sch.RequestPublic, tags=["plans"])
def update_request(row: LeadRequest, body: sch.RequestUpdate, request: Request,
                   s: SessionDep) -> RequestRow:
    return requests.update(s, row, body.model_dump(exclude_unset=True), now(request))


@router.delete("/v1/requests/{request_id}", status_code=204, tags=["plans"])
def delete_request(row: LeadRequest, s: SessionDep) -> None:
    stored.delete(s, row)
