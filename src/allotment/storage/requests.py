"""Quota requests: the rows leads store for a period's plan (the planner's ``requests``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from allotment.storage import repo
from allotment.storage.models import RequestRow


def page(s: Session, period: str | None, teams: set[str] | None, limit: int,
         offset: int) -> tuple[list[RequestRow], int]:
    """Requests of ``period`` (None: all) and ``teams`` (None: all), oldest first."""
    where = [RequestRow.period == period] if period else []
    if teams is not None:
        where.append(RequestRow.team.in_(teams))
    return repo.paginate(s, RequestRow, where, RequestRow.id, limit, offset)


def get(s: Session, request_id: int) -> RequestRow:
    row = s.get(RequestRow, request_id)
    if row is None:
        raise repo.NotFound(f"request {request_id}")
    return row


def other_for(s: Session, team: str, period: str, gpu_type: str,
              request_id: int | None = None) -> int | None:
    """The id of the request of ``team``, ``period`` and ``gpu_type`` other than
    ``request_id``, if there is one."""
    return s.scalar(select(RequestRow.id).where(
        RequestRow.team == team, RequestRow.period == period, RequestRow.gpu_type == gpu_type,
        RequestRow.id != (request_id or 0)))


def add(s: Session, **values: Any) -> RequestRow:
    """Store a new request; ``Conflict`` if another writer stored the same team, period and
    GPU type first (the unique key)."""
    row = RequestRow(**values)
    s.add(row)
    try:
        s.flush()
    except IntegrityError:
        raise repo.Conflict(f"team {row.team} already has a request for {row.period} "
                            f"{row.gpu_type}: change it with PATCH") from None
    return row


def delete(s: Session, row: RequestRow) -> None:
    s.delete(row)
