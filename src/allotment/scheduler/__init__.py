"""The scheduling cycle and the state it reads.

``decide`` lives in ``allotment.scheduler.cycle`` (imported lazily here, since policies
import the scratch and decision types of this package).
"""

from __future__ import annotations

from typing import Any

from allotment.scheduler.decisions import Admit, Decisions, Preempt, Reject, Reservation
from allotment.scheduler.state import ClusterState

__all__ = ["Admit", "ClusterState", "Decisions", "Preempt", "Reject", "Reservation", "decide"]


def __getattr__(name: str) -> Any:
    if name == "decide":
        from allotment.scheduler.cycle import decide

        return decide
    raise AttributeError(name)
