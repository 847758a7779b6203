"""The two engines give the same event log and the same figures: ``--engine memory`` (the
in-memory simulator) and ``--engine service`` (the real scheduler loop on a temporary
SQLite database, with a virtual clock). Hand-made traces exercise preemption with grace,
requeues that keep checkpointed work, gangs across nodes, reservations held for a blocked
gang, LAS demotions and rejections; a slice of Philly exercises everything at once."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest

from allotment.domain.cluster import Cluster, GpuType
from allotment.domain.org import OrgTree
from allotment.domain.workload import Workload
from allotment.policies import make_policy
from allotment.scheduler.config import SchedulerConfig
from allotment.service.replay import replay
from allotment.sim.engine import SimConfig, SimResult, simulate
from allotment.sim.orgs import trace_org
from allotment.sim.traces import load_trace, traces_dir
from tests.builders import cluster, job, org, team, trace

POLICIES = ["static", "fifo", "las", "fairshare"]


def both(jobs: Sequence[Workload], c: Cluster, o: OrgTree,
         cfg: SchedulerConfig) -> tuple[SimResult, SimResult]:
    memory = simulate(jobs, c, o, make_policy(cfg.policy, cfg), SimConfig())
    service = replay(jobs, c, o, cfg, SimConfig())
    return memory, service


def figures(r: SimResult) -> dict[str, object]:
    out = dataclasses.asdict(r.metrics)
    return {"cycles": r.cycles, **out}


def assert_same(memory: SimResult, service: SimResult) -> None:
    assert [tuple(e) for e in service.events] == [tuple(e) for e in memory.events]
    assert figures(service) == figures(memory)


# a borrows b's idle half; b's job takes it back (preemption, grace, requeue with the work
# up to its last checkpoint); a 16-GPU gang across both nodes waits for a reservation; a
# job that ends at once; a long job that LAS demotes; a non-preemptible gang too large for
# its team's guarantee (rejected under fairshare and static)
HAND = trace(
    ("a1", "a", 8, 0.0, 4000.0),
    ("a2", "a", 8, 0.0, 9000.0),
    ("b1", "b", 4, 100.0, 500.0),
    ("z0", "b", 1, 100.0, 0.0),
    ("g1", "a", 16, 200.0, 300.0),
    ("b2", "b", 2, 3000.0, 7000.0),
    ("a3", "a", 1, 3100.0, 50.0),
    ("b3", "b", 8, 5000.0, 100.0),
)
NONPREEMPTIBLE = job("np", "b", 12, 150.0, 10.0, seq=99, preemptible=False)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("grace", [0.0, 60.0])
def test_hand_made_trace(policy: str, grace: float) -> None:
    """Preemption, requeue, gangs, a reservation, LAS demotion, a rejection: same logs."""
    jobs = sorted([*HAND, NONPREEMPTIBLE], key=lambda w: (w.submit_time, w.seq))
    cfg = SchedulerConfig(policy=policy, grace_s=grace, min_runtime_s=120.0,
                          checkpoint_s=600.0, las_threshold_gpu_s=3600.0,
                          reserve_after_s=100.0)
    memory, service = both(jobs, cluster(16), org([team("a", 8), team("b", 8)], 16), cfg)
    assert any(e[1] == "admit" for e in memory.events)
    if policy in ("las", "fairshare"):
        assert any(e[1] == "requeue" for e in memory.events), "the trace must preempt"
    assert_same(memory, service)


def test_groups_and_several_racks() -> None:
    """A two-level org on 4 nodes in 2 racks, many small jobs and two gangs."""
    jobs = [job(f"j{k}", "abc"[k % 3], [1, 2, 4, 8, 12][k % 5], float(k * 37 % 900),
                float(200 + k * 131 % 2500), seq=k) for k in range(60)]
    from tests.builders import group

    o = org([group("g"), team("a", 8, "g"), team("b", 8, "g"), team("c", 16)], 32)
    cfg = SchedulerConfig(min_runtime_s=60.0, grace_s=30.0, checkpoint_s=300.0)
    memory, service = both(jobs, cluster(32, 8, 2, 2), o, cfg)
    assert sum(e[1] == "preempt" for e in memory.events) > 0
    assert_same(memory, service)


@pytest.mark.skipif(traces_dir() is None, reason="the Philly slice needs ../shared/traces "
                    "(or $ALLOTMENT_TRACES); not found")
@pytest.mark.parametrize("policy", ["las", "fairshare"])
def test_philly_slice(policy: str) -> None:
    """The first 400 Philly jobs on 32 GPUs (busy enough to preempt and reserve)."""
    jobs = load_trace("philly")[:400]
    c = cluster(32, 8, 2, 2)
    o = trace_org(jobs, {GpuType("gpu"): 32})
    jobs = [w for w in jobs if w.gpus <= 32]
    memory, service = both(jobs, c, o, SchedulerConfig(policy=policy))
    assert sum(e[1] == "requeue" for e in memory.events) > 0
    assert_same(memory, service)
