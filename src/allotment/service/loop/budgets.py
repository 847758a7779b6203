"""Budgets in the live loop: the warning at 80% and at 100% of a team's GPU-hour budget
(a log line and a row of the notification outbox, once each per period: the ledger keeps
what was sent, and it is saved in the same transaction as the rows), and the sentence
``allot why`` shows for a job of a team past its budget."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from allotment.domain.cluster import GpuType
from allotment.scheduler.state import ClusterState
from allotment.storage import audit, outbox

log = logging.getLogger("allotment.scheduler")


def _period_words(period: str) -> str:
    return "the period" if period == "default" else period


def warn(s: Session, st: ClusterState, now: float) -> list[tuple[str, str, int]]:
    """Send the warnings due now; returns (team, GPU type, percent) of each."""
    ledger = st.ledger
    sent = []
    for (team, t), pct in ledger.due_warnings(st, now):
        budget = ledger.budget_gpu_s[(team, t)] / 3600
        used = ledger.used_at(st, (team, t), now) / 3600
        share = used / budget * 100 if budget > 0 else 100.0
        reason = (f"team {team} has used {used:,.0f} of its {budget:,.0f} {t} GPU-hour budget "
                  f"for {_period_words(ledger.period)} ({share:.0f}%)")
        if pct >= 100:
            reason += "; its new jobs run on idle GPUs only"
        kind = f"budget_{pct}"
        log.warning("%s: %s", kind, reason,
                    extra={"event": kind, "team": team, "reason": reason})
        outbox.add(s, now, kind, {"event": kind, "team": team, "gpu_type": str(t),
                                  "subject": f"team {team}", "percent": pct,
                                  "used_gpu_hours": round(used, 3),
                                  "budget_gpu_hours": round(budget, 3),
                                  "period": ledger.period, "reason": reason})
        audit.append(s, now, "scheduler", f"budget.warned_{pct}", f"team:{team}", reason,
                     {"team": team, "gpu_type": str(t), "percent": pct},
                     scope=f"team:{team}")
        ledger.warned[(team, t)] = pct
        sent.append((team, str(t), pct))
    return sent


def over_note(st: ClusterState, team: str, gpu_type: GpuType, now: float) -> str | None:
    """"team X is 112% of its 50,000 GPU-hour budget for 2026-12; its jobs run on idle
    GPUs only", when X is past its budget for ``gpu_type``; else None."""
    ledger = st.ledger
    budget = ledger.budget_gpu_s.get((team, gpu_type))
    if budget is None or not ledger.over_budget(st, team, gpu_type, now):
        return None
    used = ledger.used_at(st, (team, gpu_type), now)
    share = used / budget * 100 if budget > 0 else 100.0
    return (f"team {team} is {share:.0f}% of its {budget / 3600:,.0f} GPU-hour budget for "
            f"{_period_words(ledger.period)}; its jobs run on idle GPUs only")


def credit_note(st: ClusterState, team: str, now: float) -> str | None:
    """"credit for lending: 120 GPU-hours (lowers its fair-share value when it borrows)",
    when the team has credit; else None."""
    credit = st.ledger.credit_at(st, team, now) / 3600
    if credit < 0.005:
        return None
    return f"credit for lending: {credit:,.2f} GPU-hours (lowers its fair-share value when " \
           "it borrows)"
