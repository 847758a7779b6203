"""Launch reservations: rows in, rows out (``ReservationRow``), keyed by name; the
workflow (validation, conflicts, approval) is ``governance.reservations``."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from allotment.domain.cluster import GpuType
from allotment.domain.reservation import LaunchReservation
from allotment.storage import repo
from allotment.storage.models import ReservationRow
from allotment.storage.reorg import Moves

PENDING, APPROVED, CANCELLED = "pending", "approved", "cancelled"
STATUSES = (PENDING, APPROVED, CANCELLED)
# ended reservations the scheduler still knows, so that a job naming one is refused with
# a clear reason rather than "no such reservation"
KEEP_ENDED_S = 86400.0


def add(s: Session, **values: object) -> ReservationRow:
    """Store a new reservation; ``Conflict`` if its name is taken (also by another writer
    that committed first: the unique key)."""
    row = ReservationRow(**values)
    if find(s, row.name) is not None:
        raise repo.Conflict(f"a reservation named {row.name!r} exists; choose another name")
    s.add(row)
    try:
        s.flush()
    except IntegrityError:
        raise repo.Conflict(f"a reservation named {row.name!r} exists; choose another "
                            "name") from None
    return row


def find(s: Session, name: str) -> ReservationRow | None:
    return s.execute(select(ReservationRow).where(ReservationRow.name == name)).scalar()


def get(s: Session, name: str) -> ReservationRow:
    row = find(s, name)
    if row is None:
        raise repo.NotFound(f"reservation {name!r}")
    return row


def page(s: Session, statuses: Iterable[str] | None, limit: int,
         offset: int) -> tuple[list[ReservationRow], int]:
    """Reservations (of ``statuses``; None: all), by start, then id."""
    q, c = select(ReservationRow), select(func.count()).select_from(ReservationRow)
    if statuses is not None:
        cond = ReservationRow.status.in_(list(statuses))
        q, c = q.where(cond), c.where(cond)
    total = int(s.execute(c).scalar_one())
    q = q.order_by(ReservationRow.start_time, ReservationRow.id).limit(limit).offset(offset)
    return list(s.execute(q).scalars()), total


def overlapping(s: Session, gpu_type: str, start: float, end: float,
                statuses: Iterable[str] = (PENDING, APPROVED),
                other_than: str | None = None) -> list[ReservationRow]:
    """Reservations of ``gpu_type`` in ``statuses`` whose window ``[start_time, end_time)``
    overlaps ``[start, end)``, by start then name (``other_than``: left out)."""
    q = select(ReservationRow).where(
        ReservationRow.gpu_type == gpu_type, ReservationRow.status.in_(list(statuses)),
        ReservationRow.start_time < end, ReservationRow.end_time > start)
    if other_than is not None:
        q = q.where(ReservationRow.name != other_than)
    return list(s.execute(q.order_by(ReservationRow.start_time, ReservationRow.name)).scalars())


def launches(s: Session, now: float, keep_ended_s: float = KEEP_ENDED_S
             ) -> list[LaunchReservation]:
    """The approved reservations the scheduler holds at ``now``: every one not ended, and
    those ended within ``keep_ended_s``, by name."""
    rows = s.execute(select(ReservationRow).where(
        ReservationRow.status == APPROVED, ReservationRow.end_time > now - keep_ended_s)
        .order_by(ReservationRow.name)).scalars()
    return [LaunchReservation(r.name, r.team, GpuType(r.gpu_type), r.gpus, r.start_time,
                              r.end_time) for r in rows]


def rekey(s: Session, m: Moves) -> int:
    """Reservations follow their team (a rename, a merge, a split's heir); a removed team's
    stay under its name (history), and those not cancelled yet are cancelled: no GPUs are
    freed for a team that is gone."""
    n = 0
    for old, new in sorted(m.to.items()):
        n += s.execute(update(ReservationRow).where(ReservationRow.team == old)
                       .values(team=new)).rowcount  # type: ignore[attr-defined]
    if m.removed:
        n += s.execute(update(ReservationRow).where(
            ReservationRow.team.in_(sorted(m.removed)),
            ReservationRow.status.in_((PENDING, APPROVED))).values(status=CANCELLED)
        ).rowcount  # type: ignore[attr-defined]
    return n
