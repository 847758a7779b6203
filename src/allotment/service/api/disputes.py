"""Disputes: a lead files one for its team; who sees and who resolves it are the rules of
``governance.disputes`` (dependencies ``VisibleDispute`` and ``ResolvableDispute``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from allotment.governance import disputes
from allotment.service import schemas as sch
from allotment.service.bounds import CheckedJsonRoute, Limit, Offset
from allotment.service.deps import (
    CurrentUser,
    LeadUser,
    ResolvableDispute,
    SessionDep,
    VisibleDispute,
    now,
    require_member,
)
from allotment.storage.models import DisputeRow

router = APIRouter(route_class=CheckedJsonRoute)


@router.post("/v1/disputes", response_model=sch.DisputePublic, status_code=201,
             tags=["disputes"])
def file_dispute(body: sch.DisputeCreate, request: Request, s: SessionDep,
                 user: LeadUser) -> DisputeRow:
    require_member(s, user, body.team)
    settings = request.app.state.settings
    return disputes.file(s, body.team, user.name, body.subject_kind, body.subject_id,
                         body.wants, body.why, body.gpu_type, body.wanted_gpus, body.period,
                         now(request), float(settings["escalation_s"]))


@router.get("/v1/disputes", response_model=sch.Page[sch.DisputePublic], tags=["disputes"])
def list_disputes(s: SessionDep, user: CurrentUser, limit: Limit = 100,
                  offset: Offset = 0) -> dict[str, Any]:
    rows, total = disputes.page_for(s, user, limit, offset)
    return {"items": rows, "total": total, "limit": limit, "offset": offset}


@router.get("/v1/disputes/{dispute_id}", response_model=sch.DisputePublic, tags=["disputes"])
def get_dispute(row: VisibleDispute) -> DisputeRow:
    return row


@router.post("/v1/disputes/{dispute_id}/resolve", response_model=sch.DisputePublic,
             tags=["disputes"])
def resolve_dispute(row: ResolvableDispute, body: sch.DisputeResolve, request: Request,
                    s: SessionDep, user: CurrentUser) -> DisputeRow:
    disputes.resolve(s, row, user.name, body.decision, body.reason, body.guaranteed,
                     now(request))
    return row
