"""Fairshare rules beyond the basic lend-and-reclaim: limits, non-preemptible work,
priority classes, and several GPU types."""

from __future__ import annotations

from allotment.domain.cluster import GpuType, make_cluster
from allotment.domain.org import OrgNode, OrgTree, Quota, TeamId
from allotment.domain.workload import JobId, Workload
from allotment.scheduler.decisions import Decisions
from allotment.scheduler.state import ClusterState
from tests.builders import cluster, job, log_without_submits, org, run, team, trace


def test_non_preemptible_work_never_borrows() -> None:
    """A non-preemptible job beyond its team's guarantee waits, with the reason, even on an
    idle cluster (lent GPUs must stay reclaimable); one larger than the whole guarantee is
    rejected rather than left waiting forever."""
    jobs = [job("ok", "a", 4, 0.0, 50.0, seq=0),
            job("np4", "a", 4, 1.0, 10.0, seq=1, preemptible=False),
            job("np8", "a", 8, 2.0, 10.0, seq=2, preemptible=False)]
    reasons: dict[str, str] = {}

    def watch(state: ClusterState, d: Decisions, now: float) -> None:
        reasons.update(d.waiting)

    result = run("fairshare", jobs, cluster(16), org([team("a", 4), team("b", 12)], 16),
                 observer=watch)
    assert result.jobs[JobId("ok")].first_start == 0.0
    assert result.jobs[JobId("np4")].first_start == 50.0  # only once "ok" ended
    assert reasons["np4"] == ("non-preemptible job would exceed team a's guarantee (4+4/4 gpu "
                              "GPUs) and so cannot borrow")
    assert result.jobs[JobId("np8")].rejected == (
        "non-preemptible gang of 8 exceeds team a's guarantee of 4 gpu GPUs; it could run "
        "only on borrowed GPUs")


def test_lend_limit_keeps_idle_gpus_home_and_the_metric_says_so() -> None:
    """b lends none of its 8 idle GPUs: a's second gang waits, and that idle time counts as
    idle-while-waiting (a limit forbade the fit)."""
    jobs = trace(("a1", "a", 8, 0.0, 100.0), ("a2", "a", 8, 0.0, 100.0))
    limited = org([team("a", 8), team("b", 8, lend_limit=0)], 16)
    result = run("fairshare", jobs, cluster(16), limited)
    assert log_without_submits(result)[:2] == [(0.0, "admit", "a1", "0:8"),
                                               (100.0, "finish", "a1", "")]
    assert result.metrics.idle_while_waiting_gpu_hours == 8 * 100 / 3600
    free = run("fairshare", jobs, cluster(16), org([team("a", 8), team("b", 8)], 16))
    assert free.metrics.idle_while_waiting_gpu_hours == 0.0


def test_priority_class_orders_work_inside_a_team() -> None:
    """Of two waiting jobs of one team, the higher priority class starts first."""
    jobs = [job("running", "a", 8, 0.0, 100.0, seq=0),
            job("low", "a", 8, 1.0, 10.0, seq=1),
            job("high", "a", 8, 2.0, 10.0, seq=2, priority=5)]
    result = run("fairshare", jobs, cluster(8), org([team("a", 8)], 8))
    assert result.jobs[JobId("high")].first_start == 100.0
    assert result.jobs[JobId("low")].first_start == 110.0


def test_several_gpu_types_never_mix() -> None:
    """Jobs run only on nodes of their GPU type; each type's guarantees are separate."""
    c = make_cluster({"a100": 16, "h100": 8}, 8, 2, 2)
    a100, h100 = GpuType("a100"), GpuType("h100")
    o = OrgTree([OrgNode("x", None, {a100: Quota(8), h100: Quota(8)}),
                 OrgNode("y", None, {a100: Quota(8)})], {a100: 16, h100: 8})
    jobs = [Workload(JobId(f"j{k}"), TeamId("xy"[k % 2]), [a100, h100][k % 3 == 0], 4,
                     float(k), k, duration=30.0) for k in range(12)]
    jobs = [w for w in jobs if not (w.team == "y" and w.gpu_type == h100)]

    def check(state: ClusterState, d: Decisions, now: float) -> None:
        for r in state.running.values():
            for node, _ in r.placement:
                assert c.nodes[node].gpu_type == r.workload.gpu_type

    result = run("fairshare", jobs, c, o, observer=check)
    assert all(rec.finish is not None for rec in result.jobs.values())
