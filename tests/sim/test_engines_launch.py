"""The two engines agree on launch reservations: borrowers preempted at start - grace,
backfill by time limit before the start, the gang naming it started at the start, fill in
the window preempted for a job of the reservation, a job naming it rejected once it ended:
the same event log and figures (``reservations`` included) in ``--engine memory`` and
``--engine service``, for every policy."""

from __future__ import annotations

import dataclasses

import pytest

from allotment.domain.reservation import LaunchReservation
from allotment.domain.workload import Workload
from allotment.policies import make_policy
from allotment.scheduler.config import SchedulerConfig
from allotment.service.replay import replay
from allotment.sim.engine import SimConfig, simulate
from tests.builders import cluster, job, org, team
from tests.sim.test_engines import POLICIES, assert_same

LAUNCHES = [LaunchReservation("R", "a", "gpu", 16, 10_000.0, 13_600.0),
            LaunchReservation("S", "b", "gpu", 8, 20_000.0, 23_600.0)]


def named(w: Workload, reservation: str) -> Workload:
    return dataclasses.replace(w, reservation=reservation)


TRACE = [
    job("b1", "b", 8, 0.0, 50_000.0, seq=0),
    job("b2", "b", 8, 0.0, 12_000.0, seq=1),
    dataclasses.replace(job("bf", "b", 8, 9_500.0, 250.0, seq=2), estimate_s=400.0),
    named(job("g", "a", 16, 9_000.0, 1_800.0, seq=3), "R"),
    named(job("r1", "a", 8, 12_000.0, 600.0, seq=4), "R"),
    job("a-fill", "a", 8, 12_100.0, 5_000.0, seq=5),
    named(job("r2", "a", 8, 12_300.0, 300.0, seq=6), "R"),
    named(job("late", "a", 16, 13_590.0, 100.0, seq=7), "R"),
    named(job("s1", "b", 8, 20_000.0, 1_000.0, seq=8), "S"),
    job("a2", "a", 8, 19_000.0, 3_000.0, seq=9),
]


@pytest.mark.parametrize("policy", POLICIES)
def test_launch_reservations_same_in_both_engines(policy: str) -> None:
    cfg = SchedulerConfig(policy=policy, grace_s=60.0, min_runtime_s=300.0, checkpoint_s=600.0)
    c, o = cluster(16), org([team("a", 8), team("b", 8)], 16)
    memory = simulate(TRACE, c, o, make_policy(policy, cfg), SimConfig(), launches=LAUNCHES)
    service = replay(TRACE, c, o, cfg, SimConfig(), launches=LAUNCHES)
    events = [tuple(e) for e in memory.events]
    assert [e for e in events if e[1] == "admit" and e[2] == "g"] == [
        (10_000.0, "admit", "g", "0:8,1:8")]
    assert any(e[1] == "preempt" and e[3] == "for reservation:R" for e in events)
    assert any(e[1] == "reject" and e[2] == "late" for e in events)
    assert memory.metrics.reservations["S"]["used_gpu_hours"] > 0
    assert_same(memory, service)
