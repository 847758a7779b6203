"""A policy's ``victim_test`` (one ``w``, many running jobs) answers exactly as its
``is_victim_candidate``: checked for every candidate the preemption step looks at, over
contended replays with preemption, for each policy that preempts and each LAS setting."""

from __future__ import annotations

import random

import pytest

from allotment.domain.workload import RunningJob, Workload
from allotment.policies import SchedulerConfig, make_policy
from allotment.scheduler.config import LasPreemption
from allotment.scheduler.snapshot import Snapshot
from allotment.sim.engine import SimConfig, simulate
from tests.builders import GPU, cluster, job, org, team


def _trace(seed: int) -> list[Workload]:
    rng = random.Random(seed)
    return [job(f"j{k}", rng.choice("abc"), rng.choice([1, 2, 4, 8, 16]),
                rng.uniform(0, 20_000), rng.expovariate(1 / 3_000), seq=k,
                priority=rng.choice([0, 0, 1]), preemptible=rng.random() > 0.1)
            for k in range(300)]


@pytest.mark.parametrize(("policy", "las", "budget"), [
    ("las", LasPreemption.NONE, False), ("fairshare", LasPreemption.NONE, False),
    ("fairshare", LasPreemption.TEAM, False), ("fairshare", LasPreemption.SURPLUS, False),
    ("fairshare", LasPreemption.SURPLUS, True)])
def test_victim_test_agrees_with_is_victim_candidate(policy: str, las: LasPreemption,
                                                     budget: bool) -> None:
    """(with ``budget``: team a has a GPU-hour budget it soon passes, so it only borrows)"""
    cfg = SchedulerConfig(grace_s=30.0, min_runtime_s=0.0, las_threshold_gpu_s=2_000.0,
                          las_preemption=las)
    p = make_policy(policy, cfg)
    fast = p.victim_test
    checked = [0, 0]

    def checking(sc: Snapshot, w: Workload):  # type: ignore[no-untyped-def]
        test = fast(sc, w)

        def both(job: RunningJob) -> bool:
            answer = test(job)
            assert answer == p.is_victim_candidate(sc, w, job), (w.id, job.workload.id)
            checked[answer] += 1
            return answer
        return both

    p.victim_test = checking  # type: ignore[method-assign]
    for seed in range(3):
        simulate(_trace(seed), cluster(32),
                 org([team("a", 8), team("b", 8), team("c", 16)], 32), p, SimConfig(),
                 budgets={("a", GPU): 20 * 3600.0} if budget else None)
    assert checked[True] > 20 and checked[False] > 20  # both answers were exercised
