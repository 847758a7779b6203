"""What one group-commit batch (``storage.group``) keeps for the length of its transaction,
on SQLite, where the batch holds the write lock and so no other transaction can change
what it reads:

- reads its functions repeat (the team exists, the GPU types installed, the teams under an
  org node), answered once per batch (``once``);
- the scheduler inbox's notes of its submits, written in one statement at the end of the
  batch instead of one each (``storage.inbox``).

Every statement costs a hand-over of the interpreter lock to the many request threads and
back, and while a batch holds the write lock every other writer waits: fewer statements,
shorter holds. On PostgreSQL concurrent transactions commit meanwhile: no batch memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.orm import Session

T = TypeVar("T")

_KEY = "allotment_batch"
NOTES = "inbox notes"  # the memo's list of (kind, job id) to write at the end


def begin(s: Session) -> None:
    """Give the batch transaction of ``s`` its memory (on SQLite only)."""
    if s.get_bind().dialect.name == "sqlite":
        s.info[_KEY] = {NOTES: []}


def memo(s: Session) -> dict[object, Any] | None:
    """The batch's memory (None outside a batch, or on PostgreSQL): a read other
    transactions cannot change while the batch runs may be kept here, keyed by what it
    asked."""
    return s.info.get(_KEY)


def once(s: Session, key: object, compute: Callable[[], T]) -> T:
    """``compute()``, answered once per batch under ``key`` (every time outside a batch);
    the answer is shared: a caller that may change it hands out a copy."""
    kept = memo(s)
    if kept is None:
        return compute()
    if key not in kept:
        kept[key] = compute()
    return kept[key]  # type: ignore[no-any-return]


def mark(s: Session) -> int:
    """Where one function of the batch starts (see ``undo``)."""
    kept = memo(s)
    return len(kept[NOTES]) if kept is not None else 0


def undo(s: Session, at: int) -> None:
    """Forget what a function whose savepoint was rolled back left to write."""
    kept = memo(s)
    if kept is not None:
        del kept[NOTES][at:]


def end(s: Session) -> None:
    s.info.pop(_KEY, None)
