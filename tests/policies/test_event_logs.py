"""Each policy on small hand-written traces, checked against exact event logs."""

from __future__ import annotations

import pytest

from tests.builders import cluster, log_without_submits, org, run, team, trace

TWO_TEAMS = [team("a", 8), team("b", 8)]
# a submits two whole-node gangs at once; b arrives later with a half-node gang
SCENARIO = trace(
    ("j1", "a", 8, 0.0, 100.0),
    ("j2", "a", 8, 0.0, 100.0),
    ("j3", "b", 4, 10.0, 50.0),
)

EXPECTED = {
    # static: a's second gang exceeds its 8-GPU partition and waits although node 1 is idle
    "static": [
        (0.0, "admit", "j1", "0:8"),
        (10.0, "admit", "j3", "1:4"),
        (60.0, "finish", "j3", ""),
        (100.0, "finish", "j1", ""),
        (100.0, "admit", "j2", "0:8"),
        (200.0, "finish", "j2", ""),
    ],
    # fifo: no quotas; j3 waits for a node, which is reserved for it (node 0)
    "fifo": [
        (0.0, "admit", "j1", "0:8"),
        (0.0, "admit", "j2", "1:8"),
        (100.0, "finish", "j1", ""),
        (100.0, "finish", "j2", ""),
        (100.0, "admit", "j3", "0:4"),
        (150.0, "finish", "j3", ""),
    ],
    # fairshare: j2 borrows b's idle guarantee; when b's job arrives the borrowed gang (not
    # a's guaranteed j1) is preempted, killed after the 60 s grace, and requeued
    "fairshare": [
        (0.0, "admit", "j1", "0:8"),
        (0.0, "admit", "j2", "1:8 borrowed=8"),
        (10.0, "preempt", "j2", "for j3"),
        (70.0, "requeue", "j2", "lost 560 GPU-s"),
        (70.0, "admit", "j3", "1:4"),
        (100.0, "finish", "j1", ""),
        (100.0, "admit", "j2", "0:8"),
        (120.0, "finish", "j3", ""),
        (200.0, "finish", "j2", ""),
    ],
}


@pytest.mark.parametrize("policy", sorted(EXPECTED))
def test_two_teams_event_log(policy: str) -> None:
    """Static partitions, FIFO with a reservation, and fairshare lend-and-reclaim."""
    result = run(policy, SCENARIO, cluster(16), org(TWO_TEAMS, 16))
    assert log_without_submits(result) == EXPECTED[policy]


LAS_TRACE = trace(("j1", "a", 8, 0.0, 1000.0), ("j2", "a", 4, 20.0, 10.0))


def test_las_demotes_and_preempts_the_long_job() -> None:
    """j1 passes 100 GPU-s at 12.5 s (queue 2); j2 (queue 1) preempts it after 5 s grace."""
    result = run("las", LAS_TRACE, cluster(8), org([team("a", 8)], 8), grace_s=5.0,
                 las_threshold_gpu_s=100.0)
    assert log_without_submits(result) == [
        (0.0, "admit", "j1", "0:8"),
        (20.0, "preempt", "j1", "for j2"),
        (25.0, "requeue", "j1", "lost 200 GPU-s"),
        (25.0, "admit", "j2", "0:4"),
        (35.0, "finish", "j2", ""),
        (35.0, "admit", "j1", "0:8"),
        (1035.0, "finish", "j1", ""),
    ]


def test_checkpoints_limit_lost_work() -> None:
    """With a 10 s checkpoint, the kill at 25 s loses only 5 s x 8 GPUs and j1 resumes."""
    result = run("las", LAS_TRACE, cluster(8), org([team("a", 8)], 8), grace_s=5.0,
                 las_threshold_gpu_s=100.0, checkpoint_s=10.0)
    log = log_without_submits(result)
    assert (25.0, "requeue", "j1", "lost 40 GPU-s") in log
    assert log[-1] == (1015.0, "finish", "j1", "")
    assert result.jobs["j1"].lost_gpu_s == 40.0  # type: ignore[index]


def test_min_runtime_delays_reclaim() -> None:
    """A borrower younger than the minimum runtime is preempted only once it is old enough."""
    jobs = trace(("j1", "a", 8, 0.0, 1000.0), ("j2", "b", 8, 10.0, 10.0))
    result = run("fairshare", jobs, cluster(8), org([team("a", 0), team("b", 8)], 8),
                 grace_s=30.0, min_runtime_s=300.0)
    log = log_without_submits(result)
    assert log[:4] == [
        (0.0, "admit", "j1", "0:8 borrowed=8"),
        (300.0, "preempt", "j1", "for j2"),
        (330.0, "requeue", "j1", "lost 2640 GPU-s"),
        (330.0, "admit", "j2", "0:8"),
    ]


def test_fifo_backfill_uses_only_unreserved_nodes() -> None:
    """The head gang (16 GPUs) holds the emptier rack; a 2-GPU job backfills elsewhere."""
    jobs = trace(
        ("long0", "a", 6, 0.0, 500.0),   # node 0
        ("long1", "a", 7, 0.0, 500.0),   # node 1
        ("long2", "a", 8, 0.0, 100.0),   # node 2
        ("long3", "a", 7, 0.0, 500.0),   # node 3
        ("big", "a", 16, 1.0, 10.0),     # needs two nodes: waits
        ("small", "a", 1, 2.0, 10.0),    # fits on node 0, 1 or 3
    )
    result = run("fifo", jobs, cluster(32, 8, nodes_per_rack=2), org([team("a", 32)], 32))
    log = log_without_submits(result)
    # rack 0 (nodes 0, 1) has 3 free, rack 1 (nodes 2, 3) has 1: rack 0 is held for big,
    # so small goes to node 3 (rack 1), not to the best-fit node 1
    assert (2.0, "admit", "small", "3:1") in log
    assert (100.0, "finish", "long2", "") in log


def test_utilisation_ends_at_the_last_finish() -> None:
    """A wake-up scheduled after the last job (fairshare's starvation guard at 3,610 s)
    does not stretch the span: (8 x 100 + 4 x 100) / (8 x 200) = 0.75."""
    jobs = trace(("j1", "a", 8, 0.0, 100.0), ("j2", "a", 4, 10.0, 100.0))
    result = run("fairshare", jobs, cluster(8), org([team("a", 0)], 8))
    assert result.metrics.utilization == 0.75
    assert result.metrics.makespan_s == 200.0
