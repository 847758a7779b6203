"""The two engines agree on fill of reserved GPUs: the hand-made fill trace (backfill by
time limit, preemptible fill preempted with grace when the gang can start) gives the same
event log and figures in ``--engine memory`` and ``--engine service``, for every policy."""

from __future__ import annotations

import dataclasses

import pytest

from allotment.domain.workload import JobId
from allotment.scheduler.config import SchedulerConfig
from tests.builders import cluster, job, org, team
from tests.scheduler.test_reservation_fill import BACKFILL, FILL, limited
from tests.sim.test_engines import POLICIES, assert_same, both

# FILL, BACKFILL from 2,000 s on, then a borrowing gang of team b behind team a's jobs
MORE = [
    *FILL,
    *(dataclasses.replace(w, id=JobId(f"{w.id}-2"), submit_time=w.submit_time + 2000.0,
                          seq=w.seq + 100) for w in BACKFILL),
    limited(job("a-late", "a", 8, 4000.0, 900.0, seq=6), 1200.0),
    job("b-gang", "b", 14, 4010.0, 200.0, seq=7),
    job("a-fill", "a", 4, 4020.0, 3000.0, seq=8),
    job("b-small", "b", 2, 4030.0, 100.0, seq=9),
]


@pytest.mark.parametrize("policy", POLICIES)
def test_fill_same_in_both_engines(policy: str) -> None:
    """Fill admissions (``fill-for=``), fill preemptions and the gangs' starts match."""
    cfg = SchedulerConfig(policy=policy, grace_s=60.0, min_runtime_s=300.0, checkpoint_s=600.0,
                          reserve_after_s=0.0)
    memory, service = both(MORE, cluster(16), org([team("a", 8), team("b", 8)], 16), cfg)
    fills = {e.job_id for e in memory.events if "fill-for=" in e.detail}
    if policy in ("fifo", "fairshare"):
        assert fills
    if policy == "fairshare":
        assert any(e.event == "preempt" and e.job_id in fills for e in memory.events)
    assert_same(memory, service)
