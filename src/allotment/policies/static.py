"""``static``: each team owns a fixed share of GPUs (its guarantee) and never borrows.

The baseline of the problem Allotment solves: hardware cut into fixed pieces per team.
A team's jobs run in submission order inside its own share; idle GPUs of one team are
never lent to another. A gang larger than its team's whole share can never run and is
rejected.
"""

from __future__ import annotations

from mypy_extensions import mypyc_attr

from allotment.domain.workload import Workload
from allotment.scheduler.policy import Policy
from allotment.scheduler.snapshot import Snapshot


@mypyc_attr(native_class=False)  # plain class: may be subclassed, patched
class StaticPolicy(Policy):
    """Fixed per-team partitions (counted per GPU type), no borrowing, no preemption."""

    name = "static"
    has_guarantees = True

    def quota_block(self, sc: Snapshot, w: Workload) -> str | None:
        i = sc.team_index(w)
        used = sc.usage[w.gpu_type][i]
        share = sc.state.org.guaranteed[w.gpu_type][i]
        if used + w.gpus > share:
            return f"team {w.team} partition full: {used}/{share} {w.gpu_type} GPUs in use"
        return None

    def never_fits(self, sc: Snapshot, w: Workload) -> str | None:
        share = sc.state.org.guarantee_of(w.team, w.gpu_type)
        if w.gpus > share:
            return f"gang of {w.gpus} exceeds team {w.team}'s partition of {share} GPUs"
        return None
