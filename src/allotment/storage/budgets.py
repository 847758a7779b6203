"""GPU-hour budgets: rows in, rows out (``BudgetRow``), keyed by period, team, GPU type."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from allotment.domain.cluster import GpuType
from allotment.storage.models import BudgetRow

Budgets = dict[tuple[str, GpuType], float]  # (team, GPU type) -> GPU-hours


def set_period(s: Session, period: str, budgets: Budgets, source: str) -> None:
    """Replace the budgets of ``period`` (``default``: the org file's)."""
    s.execute(delete(BudgetRow).where(BudgetRow.period == period))
    for (team, t), hours in sorted(budgets.items()):
        s.add(BudgetRow(period=period, team=team, gpu_type=str(t), gpu_hours=hours,
                        source=source))


def of_period(s: Session, period: str) -> Budgets:
    """The budgets in force in ``period``: its own rows, else the ``default`` ones."""
    for p in (period, "default"):
        rows = s.execute(select(BudgetRow).where(BudgetRow.period == p)).scalars().all()
        if rows:
            return {(r.team, GpuType(r.gpu_type)): r.gpu_hours for r in rows}
    return {}


def used_in(s: Session, period: str, now: float) -> dict[tuple[str, GpuType], float]:
    """GPU-seconds used per (team, GPU type) in ``period`` up to ``now``, from the hourly
    usage rows (``default``: all of them)."""
    from allotment.domain.period import Period
    from allotment.storage import usage

    if period == "default":
        start, end = 0, int(now) + 1
    else:
        start, end = Period.parse(period).start, Period.parse(period).end
    out: dict[tuple[str, GpuType], float] = {}
    for r in usage.rows_between(s, start, end):
        key = (r.team, GpuType(r.gpu_type))
        out[key] = out.get(key, 0.0) + r.used_gpu_s
    return out
