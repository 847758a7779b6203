"""Accounting rows: GPU-seconds per team, GPU type and hour (used, borrowed, lent,
idle-allocated, guaranteed) and preemptions."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from allotment.storage.models import UsageRow


def rows_between(s: Session, start: int, end: int) -> list[UsageRow]:
    """The rows of the hours in ``[start, end)`` (Unix times)."""
    return list(s.execute(select(UsageRow).where(UsageRow.hour >= start, UsageRow.hour < end))
                .scalars())


def row(s: Session, team: str, gpu_type: str, hour: int) -> UsageRow:
    """The usage row of a team, GPU type and hour, made (all zero) if there is none."""
    got = s.get(UsageRow, (team, gpu_type, hour))
    if got is None:
        got = UsageRow(team=team, gpu_type=gpu_type, hour=hour, used_gpu_s=0.0,
                       borrowed_gpu_s=0.0, lent_gpu_s=0.0, idle_gpu_s=0.0,
                       guaranteed_gpu_s=0.0, preemptions=0)
        s.add(got)
    return got
