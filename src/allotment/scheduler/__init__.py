"""The scheduling cycle and the state it reads: ``decide(state, policy, now)`` over a
``ClusterState``, through a per-cycle ``Snapshot``; preemption; reservations; estimates; and
``apply`` (the one path by which decisions change the state)."""

from __future__ import annotations

from allotment.scheduler.config import DEFAULTS, LasPreemption, SchedulerConfig
from allotment.scheduler.cycle import decide
from allotment.scheduler.decisions import Admit, Decisions, Preempt, Reject, Reservation
from allotment.scheduler.state import ClusterState

__all__ = ["DEFAULTS", "Admit", "ClusterState", "Decisions", "LasPreemption", "Preempt",
           "Reject", "Reservation", "SchedulerConfig", "decide"]
