"""Invariants of every policy over random clusters and workloads."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from allotment.domain.workload import Workload
from allotment.scheduler.decisions import Decisions
from allotment.scheduler.state import ClusterState
from tests.builders import cluster, group, org, run, team
from tests.strategies import guarantees, workloads

TEAMS = ["a", "b", "c"]
POLICIES = ["static", "fifo", "las", "fairshare"]
SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def check_state(state: ClusterState, d: Decisions, now: float) -> None:
    """Free GPUs within [0, node size]; every running gang holds exactly its GPUs."""
    nodes = state.cluster.nodes
    used = [0] * len(nodes)
    for job in state.running.values():
        assert sum(g for _, g in job.placement) == job.workload.gpus  # gang atomic
        for n, g in job.placement:
            used[n] += g
        if job.workload.gpus <= 8:
            assert len(job.placement) == 1  # small gangs never split
    for n, node in enumerate(nodes):
        assert 0 <= state.free[n] <= node.gpus
        assert used[n] + state.free[n] == node.gpus


@SETTINGS
@given(policy=st.sampled_from(POLICIES), nodes=st.integers(1, 4), data=st.data())
def test_never_over_allocated_and_gangs_atomic(
    policy: str, nodes: int, data: st.DataObject
) -> None:
    """No node ever holds more GPUs than it has; gangs start whole or not at all."""
    cap = nodes * 8
    g = data.draw(guarantees(TEAMS, cap))
    jobs = data.draw(workloads(TEAMS, max_gang=min(16, cap)))
    o = org([team(t, g[t]) for t in TEAMS], cap)
    result = run(policy, jobs, cluster(cap), o, observer=check_state)
    for rec in result.jobs.values():
        assert (rec.finish is not None) != (rec.rejected is not None)


@SETTINGS
@given(policy=st.sampled_from(POLICIES), data=st.data())
def test_same_inputs_same_results(policy: str, data: st.DataObject) -> None:
    """Two runs of the same inputs agree on every figure but wall time."""
    jobs = data.draw(workloads(TEAMS))
    o = org([team(t, 8) for t in TEAMS[:2]] + [team("c", 0)], 16)
    a = run(policy, jobs, cluster(16), o)
    b = run(policy, jobs, cluster(16), o)
    assert a.events == b.events
    assert a.metrics.summary() == b.metrics.summary()


@SETTINGS
@given(data=st.data(), nodes=st.integers(1, 4), hierarchical=st.booleans())
def test_fairshare_is_work_conserving(data: st.DataObject, nodes: int, hierarchical: bool) -> None:
    """Without borrow/lend limits, fairshare never leaves GPUs idle while a gang would fit."""
    cap = nodes * 8
    g = data.draw(guarantees(TEAMS, cap))
    jobs = data.draw(workloads(TEAMS, max_gang=min(16, cap)))
    tree = [team(t, g[t]) for t in TEAMS]
    if hierarchical:
        tree = [group("g1"), team("a", g["a"], "g1"), team("b", g["b"], "g1"), team("c", g["c"])]
    result = run("fairshare", jobs, cluster(cap), org(tree, cap), min_runtime_s=120.0)
    assert result.metrics.idle_while_waiting_gpu_hours == 0.0


@SETTINGS
@given(data=st.data(), nodes=st.integers(1, 3), grace=st.sampled_from([0.0, 30.0, 120.0]),
       min_runtime=st.sampled_from([0.0, 200.0]))
def test_guarantee_comes_back_within_grace(
    data: st.DataObject, nodes: int, grace: float, min_runtime: float
) -> None:
    """A team whose demand reaches its guarantee holds it again within min runtime + grace
    + one cycle, however much others borrowed (one-GPU jobs, so no fragmentation)."""
    cap = nodes * 8
    g_owner = data.draw(st.integers(1, cap))
    others: list[Workload] = data.draw(workloads(["b", "c"], max_jobs=40, one_gpu=True))
    arrive = 2500.0
    from tests.builders import job

    demand = data.draw(st.integers(g_owner, g_owner + 4))
    owner_jobs = [job(f"o{k}", "a", 1, arrive, 10_000.0, seq=10_000 + k) for k in range(demand)]
    o = org([team("a", g_owner), team("b", cap - g_owner), team("c", 0)], cap)
    deadline = arrive + min_runtime + grace
    seen: dict[str, float] = {}

    def watch(state: ClusterState, d: Decisions, now: float) -> None:
        held = state.usage["gpu"][state.org.index["a"]]
        if now >= arrive and held >= g_owner and "back" not in seen:
            seen["back"] = now

    run("fairshare", sorted(others + owner_jobs, key=lambda w: (w.submit_time, w.seq)),
        cluster(cap), o, grace_s=grace, min_runtime_s=min_runtime, observer=watch)
    assert seen["back"] <= deadline
