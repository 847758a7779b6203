"""Disputes: the rows, and the conditions that select the ones a reader may see."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, String, cast, literal, or_, select
from sqlalchemy.orm import Session

from allotment.storage import repo
from allotment.storage.models import DisputeRow

OPEN, RESOLVED = "open", "resolved"
Where = ColumnElement[bool]  # a condition on disputes (``about_or_assigned``)


def add(s: Session, **values: Any) -> DisputeRow:
    row = DisputeRow(**values)
    s.add(row)
    s.flush()
    return row


def get(s: Session, dispute_id: int) -> DisputeRow:
    row = s.get(DisputeRow, dispute_id)
    if row is None:
        raise repo.NotFound(f"dispute {dispute_id}")
    return row


def about_or_assigned(teams: Iterable[str], nodes: Iterable[str]) -> Where:
    """The disputes about one of ``teams`` or assigned to one of ``nodes``."""
    return or_(DisputeRow.team.in_(list(teams)), DisputeRow.assigned_to.in_(list(nodes)))


def page(s: Session, where: Where | None, limit: int,
         offset: int) -> tuple[list[DisputeRow], int]:
    """Disputes matching ``where`` (None: all), oldest first."""
    return repo.paginate(s, DisputeRow, [where] if where is not None else [], DisputeRow.id,
                         limit, offset)


def recent(s: Session, where: Where | None, limit: int) -> list[DisputeRow]:
    """The newest ``limit`` disputes matching ``where`` (None: all), newest first."""
    q = select(DisputeRow).order_by(DisputeRow.id.desc()).limit(limit)
    if where is not None:
        q = q.where(where)
    return list(s.execute(q).scalars())


def matches(s: Session, dispute_id: int, where: Where) -> bool:
    return s.scalar(select(DisputeRow.id).where(DisputeRow.id == dispute_id, where)) is not None


def scopes(where: Where | None) -> Any:
    """The audit scopes (``dispute:N``) of the disputes matching ``where``, as a subquery."""
    q = select(literal("dispute:", String) + cast(DisputeRow.id, String))
    return q if where is None else q.where(where)


def due(s: Session, now: float) -> list[DisputeRow]:
    """Open disputes whose escalation time has come."""
    return list(s.execute(select(DisputeRow).where(
        DisputeRow.state == OPEN, DisputeRow.escalate_at.is_not(None),
        DisputeRow.escalate_at <= now)).scalars())
