"""Heads that can only start where they fit (``Policy.passive_test``) are passed over at
once by a cycle that writes no reasons: its decisions are those of a cycle that asks the
policy every question of every head (one that writes reasons), on random states with LAS
queue-2 jobs, partly full nodes, preemption and launch-free and launch-held clusters; and
the test keeps its promise for each job it passes."""

from __future__ import annotations

import random

import pytest

from allotment.policies import make_policy
from allotment.scheduler.config import SchedulerConfig
from allotment.scheduler.cycle import decide
from allotment.scheduler.decisions import Decisions
from allotment.scheduler.snapshot import Snapshot
from allotment.scheduler.state import ClusterState
from tests.builders import cluster, job, org, start_random_runs, team

SIZES = [1, 1, 2, 4, 8, 8, 16, 32]
CONFIG = SchedulerConfig(min_runtime_s=0, las_threshold_gpu_s=3600.0)


def random_state(seed: int) -> tuple[ClusterState, float]:
    rng = random.Random(seed)
    gpus = 8 * rng.choice([4, 8, 16])
    teams = [f"t{k}" for k in range(rng.randint(2, 6))]
    policy = make_policy("las", CONFIG)
    state = ClusterState(cluster(gpus), org([team(t, 0) for t in teams], gpus),
                         pending_key=policy.pending_key)
    start_random_runs(state, rng, teams, rng.randint(0, gpus // 4), CONFIG.checkpoint_s)
    for k in range(rng.randint(5, 120)):
        w = job(f"p{k}", rng.choice(teams), rng.choice(SIZES), rng.uniform(0, 3600),
                100.0, seq=1000 + k, priority=rng.choice([0, 0, 1]))
        # queue 1 (attained nothing) or queue 2 (attained past the threshold)
        state.submit(w, rng.choice([0.0, 0.0, 4000.0, 1e6]))
    return state, 3600.0


def summary(d: Decisions) -> tuple[object, ...]:
    return (d.admits, d.preempts, d.rejects, d.wake_at,
            [(r.job_id, r.nodes, r.domain) for r in d.reservations])


def test_passing_over_decides_as_asking() -> None:
    passed_over = 0
    compared = 0
    for seed in range(80):
        state, now = random_state(seed)
        policy = make_policy("las", CONFIG)
        sc = Snapshot(state, now)
        test = policy.passive_test(sc)
        assert test is not None
        # heads the fast path may pass over at the cycle's start (queue 2, no room)
        passed_over += sum(1 for b in state.buckets.values() for w in b.jobs
                           if test(w) and not sc.fits(w))
        fast = decide(state, policy, now, reasons=False)
        slow = decide(state, policy, now, reasons=True)  # reasons: every question asked
        assert summary(fast) == summary(slow), seed
        compared += bool(slow.admits or slow.preempts)
    assert passed_over > 100  # the comparison saw the fast path at work ...
    assert compared > 40  # ... in cycles that decided something


@pytest.mark.parametrize("seed", range(20))
def test_a_passed_job_is_asked_nothing_else(seed: int) -> None:
    """What ``passive_test`` promises of each job it passes, asked of ``las``."""
    state, now = random_state(seed)
    policy = make_policy("las", CONFIG)
    sc = Snapshot(state, now)
    test = policy.passive_test(sc)
    assert test is not None
    passed = [w for b in state.buckets.values() for w in b.jobs if test(w)]
    for w in passed:
        assert policy.never_fits(sc, w) is None
        assert not policy.may_preempt_for(sc, w)
        assert not policy.may_reserve(sc, w)
        assert policy.reserve_wakeup(sc, w) is None
    held = [w for b in state.buckets.values() for w in b.jobs if not test(w)]
    assert all(policy.may_preempt_for(sc, w) for w in held)  # queue 1: it may preempt


def test_other_policies_pass_nobody() -> None:
    state, now = random_state(0)
    for name in ("static", "fifo", "fairshare"):
        assert make_policy(name, CONFIG).passive_test(Snapshot(state, now)) is None
