"""Accounting: GPU-hours per team and GPU type in a period, from the hourly usage rows the
scheduler loop (and ``allot slurm usage``) writes."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from allotment.domain.period import Period
from allotment.storage import usage


def hoarding_score(idle_gpu_hours: float, used_gpu_hours: float) -> float:
    """Idle-allocated over used GPU-time: 0 when every held GPU worked (and when nothing
    was used: no use, no hoarding), 1 when a GPU sat idle for every GPU-hour that worked.
    Rounded to 4 places."""
    return round(idle_gpu_hours / used_gpu_hours, 4) if used_gpu_hours > 0 else 0.0


def usage_summary(s: Session, period: Period) -> list[dict[str, Any]]:
    """Per team and GPU type: GPU-hours used, borrowed, lent, idle-allocated, guaranteed,
    preemptions, and the hoarding score = idle-allocated / used GPU-hours."""
    acc: dict[tuple[str, str], list[float]] = {}
    preemptions: dict[tuple[str, str], int] = {}
    for r in usage.rows_between(s, period.start, period.end):
        a = acc.setdefault((r.team, r.gpu_type), [0.0] * 5)
        for k, v in enumerate((r.used_gpu_s, r.borrowed_gpu_s, r.lent_gpu_s, r.idle_gpu_s,
                               r.guaranteed_gpu_s)):
            a[k] += v
        preemptions[(r.team, r.gpu_type)] = (preemptions.get((r.team, r.gpu_type), 0)
                                             + (r.preemptions or 0))
    out = []
    for (team, t), a in sorted(acc.items()):
        used, borrowed, lent, idle, guaranteed = (x / 3600 for x in a)
        out.append({"team": team, "gpu_type": t, "period": str(period),
                    "preemptions": preemptions[(team, t)],
                    "used_gpu_hours": round(used, 4), "borrowed_gpu_hours": round(borrowed, 4),
                    "lent_gpu_hours": round(lent, 4), "idle_allocated_gpu_hours": round(idle, 4),
                    "guaranteed_gpu_hours": round(guaranteed, 4),
                    "hoarding_score": hoarding_score(idle, used)})
    return out


def history_for(s: Session, period: Period) -> dict[str, dict[str, float]]:
    """Per team: GPU-hours used and idle-allocated in ``period`` (the planner's
    ``history`` input)."""
    out: dict[str, dict[str, float]] = {}
    for row in usage.rows_between(s, period.start, period.end):
        h = out.setdefault(row.team, {"used_gpu_hours": 0.0, "idle_gpu_hours": 0.0})
        h["used_gpu_hours"] += row.used_gpu_s / 3600
        h["idle_gpu_hours"] += row.idle_gpu_s / 3600
    return out
