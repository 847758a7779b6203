"""Scheduling policies, selectable by name."""

from __future__ import annotations

from allotment.errors import InputError
from allotment.policies.fairshare import FairSharePolicy
from allotment.policies.fifo import FifoPolicy
from allotment.policies.las import LasPolicy
from allotment.policies.static import StaticPolicy
from allotment.scheduler.policy import Policy, SchedulerConfig

POLICIES: dict[str, type[Policy]] = {
    "static": StaticPolicy,
    "fifo": FifoPolicy,
    "las": LasPolicy,
    "fairshare": FairSharePolicy,
}
DEFAULT_POLICY = "fairshare"


def make_policy(name: str, config: SchedulerConfig | None = None) -> Policy:
    """The policy called ``name``; raises ``InputError`` naming the valid choices."""
    cls = POLICIES.get(name)
    if cls is None:
        raise InputError("policies", f"unknown policy {name!r}; choose from {', '.join(POLICIES)}")
    return cls(config)


__all__ = [
    "DEFAULT_POLICY", "POLICIES", "FairSharePolicy", "FifoPolicy", "LasPolicy", "Policy",
    "SchedulerConfig", "StaticPolicy", "make_policy",
]
