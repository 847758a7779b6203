"""``fifo``: one global queue in submission order, no quotas, backfill around the head."""

from __future__ import annotations

from mypy_extensions import mypyc_attr

from allotment.scheduler.policy import Policy


@mypyc_attr(native_class=False)  # plain class: may be subclassed, patched
class FifoPolicy(Policy):
    """First come, first served over the whole cluster; teams and guarantees are ignored."""

    name = "fifo"
