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
