"""The two orders of queue heads (``scheduler.heads``) give the same decisions: a cycle
with a heap of teams over heaps of their heads (``TeamHeads``, fair share's) decides
exactly as one with a single heap of every head (``FlatHeads``), on random states with
nested groups, priorities, LAS levels, borrowing and preemption; and so does a replay."""

from __future__ import annotations

import random

import pytest

from allotment.domain.workload import JobId
from allotment.policies import make_policy
from allotment.scheduler.config import LasPreemption, SchedulerConfig
from allotment.scheduler.cycle import decide
from allotment.scheduler.decisions import Decisions
from allotment.scheduler.heads import FlatHeads, TeamHeads, heads
from allotment.scheduler.snapshot import Snapshot
from allotment.scheduler.state import ClusterState
from allotment.sim.engine import SimConfig, simulate
from tests.builders import cluster, group, job, org, start_random_runs, team

SIZES = [1, 1, 2, 4, 8, 8, 16, 32]


def random_state(seed: int, config: SchedulerConfig) -> tuple[ClusterState, float]:
    rng = random.Random(seed)
    gpus = 8 * rng.choice([8, 16, 32])
    nodes = [group("g0"), group("g1"), group("g2", parent="g1")]
    teams = [f"t{k}" for k in range(rng.randint(4, 12))]
    left = gpus
    for k, name in enumerate(teams):
        share = min(left, rng.choice([0, 8, 16, 24, 32]))
        left -= share
        parent = "g0" if k < 2 else rng.choice(["g0", "g1", "g2", None])  # g0 groups two
        nodes.append(team(name, share, parent=parent,
                          weight=rng.choice([1.0, 1.0, 2.0])))
    policy = make_policy("fairshare", config)
    state = ClusterState(cluster(gpus), org(nodes, gpus), pending_key=policy.pending_key)
    start_random_runs(state, rng, teams, rng.randint(0, gpus // 8), config.checkpoint_s,
                      borrowed=True)
    for k in range(rng.randint(20, 300)):
        w = job(f"p{k}", rng.choice(teams), rng.choice(SIZES), rng.uniform(0, 3600),
                100.0, seq=1000 + k, priority=rng.choice([0, 0, 0, 1]))
        state.submit(w, rng.choice([0.0, 0.0, 1e6]))
    return state, 3600.0


def flat(policy: object) -> object:
    """The same policy with no ``local_key``: its cycles use ``FlatHeads``."""
    clone = make_policy("fairshare", policy.config)  # type: ignore[attr-defined]
    clone.local_key = None  # type: ignore[assignment,misc]
    return clone


def summary(d: Decisions) -> tuple[object, ...]:
    return (d.admits, d.preempts, d.rejects, sorted(d.waiting.items()),
            [(r.job_id, r.nodes) for r in d.reservations])


CONFIGS = [SchedulerConfig(min_runtime_s=0),
           SchedulerConfig(min_runtime_s=0, las_preemption=LasPreemption.SURPLUS)]


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("config", CONFIGS, ids=["none", "surplus"])
def test_team_heap_decides_as_one_heap(seed: int, config: SchedulerConfig) -> None:
    state, now = random_state(seed, config)
    policy = make_policy("fairshare", config)
    sc = Snapshot(state, now)
    assert isinstance(heads(state, sc, policy), TeamHeads)
    assert isinstance(heads(state, sc, flat(policy)), FlatHeads)  # type: ignore[arg-type]
    got = decide(state, policy, now, explain=True)
    want = decide(state, flat(policy), now, explain=True)  # type: ignore[arg-type]
    assert summary(got) == summary(want)
    assert got.queue == want.queue


@pytest.mark.parametrize("seed", range(10))
def test_queue_keys_agree_with_order_keys(seed: int) -> None:
    """``bucket_order_keys`` (a queue's keys at once, for the queue order) is
    ``order_key`` of each of its jobs."""
    config = CONFIGS[0]
    state, now = random_state(seed, config)
    policy = make_policy("fairshare", config)
    sc = Snapshot(state, now)
    attained = state.pending_attained
    for bucket in state.buckets.values():
        assert policy.bucket_order_keys(sc, bucket.jobs, attained) == [
            policy.order_key(sc, w, attained[w.id]) for w in bucket.jobs]


def test_a_flat_org_keeps_one_heap() -> None:
    """Where every top-level node is a team, a change re-keys only that team's heads:
    the one heap serves (and a group of two teams makes it the heap of teams)."""
    config = CONFIGS[0]
    policy = make_policy("fairshare", config)
    for nodes, kind in (([team("a", 8), team("b", 8)], FlatHeads),
                        ([group("g"), team("a", 8, parent="g"), team("c", 0, parent="g"),
                          team("b", 8)], TeamHeads)):
        state = ClusterState(cluster(16), org(nodes, 16), pending_key=policy.pending_key)
        state.submit(job("p", "a", 1, 0.0, 10.0), 0.0)
        assert isinstance(heads(state, Snapshot(state, 0.0), policy), kind)


def test_jobs_that_tie_are_taken_as_by_one_heap() -> None:
    """Two queues of one team whose heads tie (the same submit time and sequence number,
    which nothing forbids a caller to give) are taken in the one heap's order, the order
    of the queues, instead of comparing the queues themselves."""
    config = CONFIGS[0]
    policy = make_policy("fairshare", config)
    nodes = [group("g"), team("a", 8, parent="g"), team("b", 8, parent="g")]
    state = ClusterState(cluster(16), org(nodes, 16), pending_key=policy.pending_key)
    state.submit(job("x1", "a", 1, 0.0, 10.0, seq=7), 0.0)
    state.submit(job("x2", "a", 2, 0.0, 10.0, seq=7), 0.0)
    got = decide(state, policy, 0.0)
    assert summary(got) == summary(decide(state, flat(policy), 0.0))  # type: ignore[arg-type]
    assert [a.job_id for a in got.admits] == ["x1", "x2"]


def test_a_wrong_local_key_is_caught() -> None:
    """The comparison above can fail: a local key that drops "beyond the guarantee" (so a
    team's borrowing job may pass its own guaranteed one) decides differently."""
    config = CONFIGS[0]
    differs = 0
    for seed in range(40):
        state, now = random_state(seed, config)
        wrong = make_policy("fairshare", config)
        wrong.local_key = lambda key: key[4:]  # type: ignore[assignment,misc]
        differs += summary(decide(state, wrong, now)) != summary(
            decide(state, flat(wrong), now))  # type: ignore[arg-type]
    assert differs > 0


def test_replays_are_identical() -> None:
    rng = random.Random(5)
    nodes = [group("ga"), group("gb")] + [
        team(f"t{k}", 16, parent="ga" if k < 3 else "gb") for k in range(6)]
    jobs = [job(f"j{k}", f"t{rng.randrange(6)}", rng.choice(SIZES), rng.uniform(0, 20_000),
                rng.uniform(60, 7200), seq=k) for k in range(600)]
    config = SchedulerConfig(min_runtime_s=0)
    results = [simulate(jobs, cluster(96), org(nodes, 96), p, SimConfig())
               for p in (make_policy("fairshare", config),
                         flat(make_policy("fairshare", config)))]  # type: ignore[arg-type]
    a, b = (list(r.events) for r in results)
    assert len(a) > 1200 and a == b
    assert any("preempt" in str(e).lower() for e in a)
    assert JobId("j0") in results[0].jobs
