"""Plans: admins run and publish them; anyone reads and compares them
(``governance.plans``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from allotment.governance import plans
from allotment.service import schemas as sch
from allotment.service.bounds import CheckedJsonRoute, Id, Limit, Offset, PeriodQuery
from allotment.service.deps import AdminUser, CurrentUser, SessionDep, now
from allotment.storage import plans as stored

router = APIRouter(route_class=CheckedJsonRoute)


@router.post("/v1/plans", response_model=sch.PlanPublic, status_code=201, tags=["plans"])
def run_plan(body: sch.PlanCreate, request: Request, s: SessionDep, user: AdminUser) -> Any:
    return plans.run_from(s, user.name, now(request), body.scenario, body.period, body.as_of,
                          body.rules, body.reserve)


@router.get("/v1/plans", response_model=sch.Page[sch.PlanPublic], tags=["plans"])
def list_plans(s: SessionDep, user: CurrentUser, period: PeriodQuery = None,
               limit: Limit = 100, offset: Offset = 0) -> dict[str, Any]:
    rows, total = stored.page(s, period, limit, offset)
    return {"items": rows, "total": total, "limit": limit, "offset": offset}


@router.get("/v1/plans/{plan_id}", response_model=sch.PlanPublic, tags=["plans"])
def get_plan(plan_id: Id, s: SessionDep, user: CurrentUser) -> Any:
    return stored.get(s, plan_id)


@router.post("/v1/plans/compare", tags=["plans"])
def compare_plans(body: sch.PlanCompare, s: SessionDep, user: CurrentUser) -> dict[str, Any]:
    a, b = stored.get(s, body.a), stored.get(s, body.b)
    return {"a": a.id, "b": b.id, "differences": plans.compare(a, b)}


@router.post("/v1/plans/{plan_id}/publish", response_model=sch.PlanPublic, tags=["plans"])
def publish_plan(plan_id: Id, request: Request, s: SessionDep, user: AdminUser) -> Any:
    row = stored.get(s, plan_id)
    plans.publish(s, row, user.name, now(request))
    return row
