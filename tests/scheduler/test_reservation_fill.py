"""Fill of GPUs held for a blocked gang: backfill by declared time limit, preemptible fill
preempted with grace the moment the gang can start (least lost work first), and the gang's
start slipping by at most the grace period."""

from __future__ import annotations

import dataclasses

from allotment.domain.workload import Workload
from allotment.policies import SchedulerConfig, make_policy
from allotment.sim.engine import SimConfig, SimResult, simulate
from tests.builders import cluster, job, org, team


def limited(w: Workload, limit_s: float) -> Workload:
    return dataclasses.replace(w, estimate_s=limit_s)


# two 8-GPU nodes. long (8) and short (4) run; the 16-GPU gang waits for both and holds the
# 4 free GPUs of node 1. fill-a (2, preemptible) and bf (2, not preemptible, but declares a
# 300 s limit ending long before the gang's expected start at 1,000 s) run there meanwhile;
# np (not preemptible, no limit) may not. When long ends at 1,000 s the gang could start
# but for fill-a: fill-a is preempted and killed after the 60 s grace; the gang starts then.
FILL = [
    limited(job("long", "a", 8, 0.0, 1000.0, seq=0), 1000.0),
    limited(job("short", "b", 4, 0.0, 500.0, seq=1), 500.0),
    job("gang", "a", 16, 10.0, 100.0, seq=2),
    job("fill-a", "b", 2, 20.0, 2000.0, seq=3),
    limited(job("bf", "b", 2, 30.0, 250.0, seq=4, preemptible=False), 300.0),
    job("np", "b", 2, 40.0, 50.0, seq=5, preemptible=False),
]


def fifo(jobs: list[Workload], grace_s: float = 60.0) -> SimResult:
    cfg = SchedulerConfig(policy="fifo", grace_s=grace_s, min_runtime_s=300.0,
                          checkpoint_s=None)
    return simulate(jobs, cluster(16), org([team("a", 8), team("b", 8)], 16),
                    make_policy("fifo", cfg), SimConfig())


def test_fill_runs_on_held_gpus_and_leaves_within_grace() -> None:
    """The exact log: fill and backfill start on the held node, the gang starts one grace
    period after its GPUs (bar the fill) are free, the fill job is requeued, none lost."""
    res = fifo(FILL)
    log = [tuple(e) for e in res.events if e[1] != "submit"]
    assert log == [
        (0.0, "admit", "long", "0:8"),
        (0.0, "admit", "short", "1:4"),
        (20.0, "admit", "fill-a", "1:2 fill-for=gang"),
        (30.0, "admit", "bf", "1:2 fill-for=gang"),
        (280.0, "finish", "bf", ""),
        (500.0, "finish", "short", ""),
        (1000.0, "finish", "long", ""),
        (1000.0, "preempt", "fill-a", "for gang"),  # within its minimum run time: fill
        (1060.0, "requeue", "fill-a", "lost 2080 GPU-s"),
        (1060.0, "admit", "gang", "0:8,1:8"),
        (1160.0, "finish", "gang", ""),
        (1160.0, "admit", "fill-a", "0:2"),
        (1160.0, "admit", "np", "0:2"),
        (1210.0, "finish", "np", ""),
        (3160.0, "finish", "fill-a", ""),
    ]
    assert res.metrics.completed == len(FILL)


def test_gang_start_slips_by_the_grace_period_at_most() -> None:
    """With fill the gang starts exactly grace_s after the GPUs it waited for were free
    (1,000 s), for several grace periods; without the fill jobs, at 1,000 s."""
    for grace in (0.0, 30.0, 120.0):
        start = [e.time for e in fifo(FILL, grace).events
                 if e.event == "admit" and e.job_id == "gang"]
        assert start == [1000.0 + grace]
    alone = [w for w in FILL if w.id in ("long", "short", "gang")]
    assert [e.time for e in fifo(alone).events
            if e.event == "admit" and e.job_id == "gang"] == [1000.0]


def test_least_lost_work_is_preempted_first() -> None:
    """Two fill jobs; the gang needs the GPUs of only one: the one that started later (less
    work lost since its start, no checkpoints) is preempted, the other runs on."""
    jobs = [job("long", "a", 8, 0.0, 1000.0, seq=0), job("mid", "b", 6, 0.0, 500.0, seq=1),
            job("gang", "a", 15, 10.0, 100.0, seq=2),
            job("old", "b", 1, 20.0, 5000.0, seq=3), job("new", "b", 1, 400.0, 5000.0, seq=4)]
    res = fifo(jobs)
    preempts = [(e.time, e.job_id) for e in res.events if e.event == "preempt"]
    assert preempts == [(1000.0, "new")]
    assert [e.time for e in res.events if e.event == "admit" and e.job_id == "gang"] == [1060.0]


def test_held_gpus_do_not_idle_while_fill_waits() -> None:
    """Reserved idle GPU-hours fall with fill: the same trace without fill-a and bf leaves
    node 1's free GPUs idle until the gang starts."""
    with_fill = fifo(FILL).metrics.reserved_idle_gpu_hours
    without = fifo([w for w in FILL if w.id not in ("fill-a", "bf")]).metrics
    assert with_fill < without.reserved_idle_gpu_hours
