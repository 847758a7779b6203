"""The notification outbox: rows in, rows out. A notification is written in the caller's
transaction (so it exists exactly when the decision it tells of was committed); the sender
(``service.notify``) claims due rows, sends them, and records the outcome."""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from allotment.storage.models import NotificationRow


def add(s: Session, now: float, kind: str, payload: dict[str, Any]) -> None:
    s.add(NotificationRow(created_at=now, kind=kind, payload=payload, attempts=0,
                          next_attempt_at=now, last_error=""))


def claim(s: Session, holder: str, now: float, hold_s: float, limit: int) -> list[Any]:
    """Claim up to ``limit`` due rows for ``holder`` (until ``now + hold_s``); a row another
    sender holds is left to it. Returns (id, kind, payload, attempts) of the claimed rows."""
    due = s.execute(select(NotificationRow.id).where(
        NotificationRow.delivered_at.is_(None), NotificationRow.gave_up_at.is_(None),
        NotificationRow.next_attempt_at <= now,
        or_(NotificationRow.claimed_until.is_(None), NotificationRow.claimed_until < now))
        .order_by(NotificationRow.id).limit(limit)).scalars().all()
    out = []
    for nid in due:
        res = s.execute(update(NotificationRow).where(
            NotificationRow.id == nid,
            or_(NotificationRow.claimed_until.is_(None), NotificationRow.claimed_until < now))
            .values(claimed_by=holder, claimed_until=now + hold_s)
            .execution_options(synchronize_session=False))
        if res.rowcount:  # type: ignore[attr-defined]
            row = s.get(NotificationRow, nid)
            assert row is not None
            out.append((row.id, row.kind, dict(row.payload), row.attempts))
    return out


def delivered(s: Session, nid: int, holder: str, now: float) -> None:
    s.execute(update(NotificationRow).where(NotificationRow.id == nid,
                                            NotificationRow.claimed_by == holder)
              .values(delivered_at=now, attempts=NotificationRow.attempts + 1,
                      claimed_by=None, claimed_until=None)
              .execution_options(synchronize_session=False))


def failed(s: Session, nid: int, holder: str, retry_at: float | None, error: str,
           now: float) -> None:
    """A failed attempt: try again at ``retry_at``, or give up (None)."""
    values: dict[str, Any] = {"attempts": NotificationRow.attempts + 1, "claimed_by": None,
                              "claimed_until": None, "last_error": error[:500]}
    if retry_at is None:
        values["gave_up_at"] = now
    else:
        values["next_attempt_at"] = retry_at
    s.execute(update(NotificationRow).where(NotificationRow.id == nid,
                                            NotificationRow.claimed_by == holder)
              .values(**values).execution_options(synchronize_session=False))


def pending_count(s: Session) -> int:
    from sqlalchemy import func

    return int(s.execute(select(func.count()).select_from(NotificationRow).where(
        NotificationRow.delivered_at.is_(None), NotificationRow.gave_up_at.is_(None)))
        .scalar_one())
