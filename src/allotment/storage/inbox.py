"""The scheduler's inbox: what changed since the loop last looked.

Writers note a change in the same transaction as the change itself, so the loop sees every
committed change exactly once, in any commit order: it reads every row present, applies
them, and deletes exactly the rows it read (a row committed meanwhile stays for the next
tick). Kinds: ``submit`` and ``cancel`` (with the job), ``reshape`` (inventory, org tree,
quotas or the approved launch reservations changed: the loop rebuilds its state from the
database).
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

from sqlalchemy import Table, delete, insert, select
from sqlalchemy.orm import Session

from allotment.storage import batch
from allotment.storage.models import InboxRow


class Change(StrEnum):
    SUBMIT = "submit"
    CANCEL = "cancel"
    RESHAPE = "reshape"


class Note(NamedTuple):
    id: int
    kind: Change
    job_id: int | None


def note(s: Session, kind: Change, job_id: int | None = None) -> None:
    """Record a change for the loop (inside the caller's transaction; in a group-commit
    batch, written with the batch's other notes at its end: ``storage.batch``)."""
    kept = batch.memo(s)
    if kept is not None:
        kept[batch.NOTES].append((str(kind), job_id))
        return
    s.add(InboxRow(kind=str(kind), job_id=job_id))


def write_deferred(s: Session) -> None:
    """Write the notes a batch kept back, in one statement."""
    kept = batch.memo(s)
    if kept is not None and kept[batch.NOTES]:
        table: Table = InboxRow.__table__  # type: ignore[assignment]
        s.connection().execute(insert(table), [{"kind": k, "job_id": j}
                                               for k, j in kept[batch.NOTES]])
        kept[batch.NOTES].clear()


def read(s: Session) -> list[Note]:
    rows = s.execute(select(InboxRow.id, InboxRow.kind, InboxRow.job_id)
                     .order_by(InboxRow.id)).all()
    return [Note(i, Change(k), j) for i, k, j in rows]


def consume(s: Session, notes: list[Note]) -> None:
    """Delete what was read (and only that)."""
    ids = [n.id for n in notes]
    for k in range(0, len(ids), 500):
        s.execute(delete(InboxRow).where(InboxRow.id.in_(ids[k:k + 500])))


def clear(s: Session) -> None:
    """Forget every note (the loop is about to rebuild its state from the database)."""
    s.execute(delete(InboxRow))
