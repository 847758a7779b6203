"""Accounting: GPU-hours per team in a period (``governance.accounting``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from allotment.domain.period import Period
from allotment.governance import accounting
from allotment.service import schemas as sch
from allotment.service.bounds import CheckedJsonRoute, PeriodQuery
from allotment.service.deps import CurrentUser, SessionDep, now

router = APIRouter(route_class=CheckedJsonRoute)


def _period(request: Request, period: str | None) -> Period:
    return Period.parse(period) if period else Period.of(now(request))


@router.get("/v1/usage", response_model=list[sch.UsagePublic], tags=["usage"])
def usage(request: Request, s: SessionDep, user: CurrentUser,
          period: PeriodQuery = None) -> list[dict[str, Any]]:
    return accounting.usage_summary(s, _period(request, period))


@router.get("/v1/usage/history", tags=["usage"])
def usage_history(request: Request, s: SessionDep, user: CurrentUser,
                  period: PeriodQuery = None) -> dict[str, Any]:
    """The planner's ``history`` input for a period (GPU-hours used and idle per team)."""
    return accounting.history_for(s, _period(request, period))
