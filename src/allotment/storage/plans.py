"""Plans: drafts with their scenario and full JSON report, and the one published per period."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from allotment.storage import repo
from allotment.storage.models import PlanRow

DRAFT, PUBLISHED, SUPERSEDED = "draft", "published", "superseded"


def add_draft(s: Session, period: str, scenario: dict[str, Any], result: dict[str, Any],
              actor: str, now: float) -> PlanRow:
    row = PlanRow(period=period, status=DRAFT, scenario=scenario, result=result,
                  created_by=actor, created_at=now)
    s.add(row)
    s.flush()
    return row


def get(s: Session, plan_id: int) -> PlanRow:
    row = s.get(PlanRow, plan_id)
    if row is None:
        raise repo.NotFound(f"plan {plan_id}")
    return row


def page(s: Session, period: str | None, limit: int, offset: int) -> tuple[list[PlanRow], int]:
    """Plans of ``period`` (None: all), newest first."""
    where = [PlanRow.period == period] if period else []
    return repo.paginate(s, PlanRow, where, PlanRow.id.desc(), limit, offset)


def recent(s: Session, limit: int) -> list[PlanRow]:
    """The newest ``limit`` plans, newest first."""
    return list(s.execute(select(PlanRow).order_by(PlanRow.id.desc()).limit(limit)).scalars())


def published(s: Session, period: str) -> PlanRow | None:
    """The plan published for ``period``, if any."""
    return s.execute(select(PlanRow).where(PlanRow.period == period,
                                           PlanRow.status == PUBLISHED)).scalar()


def supersede(s: Session, period: str) -> None:
    """Mark the plans published for ``period`` superseded."""
    for old in s.execute(select(PlanRow).where(PlanRow.period == period,
                                               PlanRow.status == PUBLISHED)).scalars():
        old.status = SUPERSEDED
