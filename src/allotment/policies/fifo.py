"""``fifo``: one global queue in submission order, no quotas, backfill around the head."""

from __future__ import annotations

from allotment.scheduler.policy import Policy


class FifoPolicy(Policy):
    """First come, first served over the whole cluster; teams and guarantees are ignored."""

    name = "fifo"
