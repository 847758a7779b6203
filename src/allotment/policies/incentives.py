"""Budgets and credit in the fair-share order (the ledger is ``scheduler.ledger``).

Budgets. A team past its GPU-hour budget for a GPU type is treated as beyond its guarantee
for every new job of that type: its work is ordered after every team within budget (the
``beyond`` class 2 of ``FairSharePolicy``'s key), it preempts nothing and reserves GPUs only
as a borrower does, so its idle guarantee goes to the others first and its jobs run on
GPUs no one within budget waits for. Its running jobs are left alone: the budget is never a
reason to preempt (victims are chosen by the quota tree, which a budget does not change).

Credit. For team T whose job would run beyond its guarantee (within budget), the team's
own level of its fair-share path uses

    v'_T = max(0, A_T + D_T / H - C_T / H_c) / (w_T * max(E_T, 1))

  A_T, D_T / H, w_T, E_T  as in ``policies.fairshare`` (GPUs held now, decayed usage)
  C_T / H_c               T's credit in GPUs (``scheduler.ledger``: at most m x E_T)

Range [0, inf); credit lowers v_T by at most m / w_T, so a lender that gave back E_T GPUs
for a long time is served as if it held up to m x E_T GPUs fewer when it borrows. Work
within the guarantee and the ancestors' values are unchanged: credit never lets a team
pass another team's guaranteed work, nor changes which jobs are preempted.

Not twice for the same GPU-hours: the planner's idle penalty (next period's weight) counts
GPU-hours a team *held* while they sat idle (idle-allocated); credit counts GPU-hours of
its guarantee it did *not* hold, while another team used them. A GPU-hour is held by the
team or not, so no GPU-hour is counted by both, and credit is earned only while the team
had no pending work of that type (so it cannot earn by keeping work waiting either).
"""

from __future__ import annotations

from allotment.domain.workload import Workload
from allotment.scheduler.snapshot import Snapshot

CREDIT_RESOLUTION = 100  # the fair-share RESOLUTION


def over_budget(sc: Snapshot, w: Workload) -> bool:
    """Whether ``w``'s team is past its budget for ``w``'s GPU type at the cycle's time."""
    ledger = sc.state.ledger
    return bool(ledger.budget_gpu_s) and ledger.over_budget(sc.state, w.team, w.gpu_type,
                                                            sc.now)


def within_guarantee(sc: Snapshot, w: Workload) -> bool:
    """The snapshot's rule, except that a team past its budget only borrows."""
    return sc.within_guarantee(w) and not over_budget(sc, w)


def beyond_class(sc: Snapshot, w: Workload) -> int:
    """0: within its guarantee; 1: beyond it (borrowing); 2: its team is past its budget."""
    if over_budget(sc, w):
        return 2
    return 0 if sc.within_guarantee(w) else 1


def credited_value(sc: Snapshot, team: str) -> int | None:
    """v'_T in units of 1/RESOLUTION (rounded down), or None when T has no credit."""
    state = sc.state
    ledger = state.ledger
    h_c = ledger.credit_half_life_s
    if h_c is None:
        return None
    credit = ledger.credit_at(state, team, sc.now)
    if credit <= 0:
        return None
    org = state.org
    i = org.index[team]
    held = sc.alloc_total[i] + state.decayed_usage(i, sc.now) / state.half_life_s
    v = max(0.0, held - credit / h_c) / (org.weight[i] * max(org.total_guaranteed[i], 1))
    return int(v * CREDIT_RESOLUTION)


def credited_path(sc: Snapshot, team: str, path: tuple[int, ...]) -> tuple[int, ...]:
    """The fair-share path with the team's own level lowered by its credit."""
    v = credited_value(sc, team)
    return path if v is None else (*path[:-1], v)
