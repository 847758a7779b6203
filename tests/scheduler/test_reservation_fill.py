"""Fill of GPUs held for a blocked gang: preemptible fill preempted with grace the moment
the gang can start (least lost work first), classic backfill by declared time limit, and
the gang's start slipping by at most the grace period."""

from __future__ import annotations

import dataclasses

from allotment.domain.workload import Workload
from allotment.policies import SchedulerConfig, make_policy
from allotment.sim.engine import SimConfig, SimResult, simulate
from tests.builders import cluster, job, org, team


def limited(w: Workload, limit_s: float) -> Workload:
    return dataclasses.replace(w, estimate_s=limit_s)


# two 8-GPU nodes; a and b guaranteed 8 each. a's long (8) and b's short (4) run; a's
# 16-GPU gang, beyond a's guarantee, waits for both and holds node 1's 4 free GPUs. a's
# 2-GPU fill-a (a borrower of the gang's own team) runs there meanwhile. When long ends at
# 1,000 s the gang could start but for fill-a: fill-a is preempted (within its minimum run
# time: fill has none) and killed after the 60 s grace; the gang starts then.
FILL = [
    job("long", "a", 8, 0.0, 1000.0, seq=0),
    job("short", "b", 4, 0.0, 500.0, seq=1),
    job("gang", "a", 16, 10.0, 100.0, seq=2),
    job("fill-a", "a", 2, 20.0, 2000.0, seq=3),
]
# fifo never preempts: only classic backfill. bf declares a 300 s limit that ends long
# before the gang's expected start (1,000 s, from long's and short's limits): it runs on the
# held GPUs; np declares none and waits.
BACKFILL = [
    limited(job("long", "a", 8, 0.0, 1000.0, seq=0), 1000.0),
    limited(job("short", "b", 4, 0.0, 500.0, seq=1), 500.0),
    job("gang", "a", 16, 10.0, 100.0, seq=2),
    limited(job("bf", "b", 2, 30.0, 250.0, seq=4, preemptible=False), 300.0),
    job("np", "b", 2, 40.0, 50.0, seq=5),
]
TWO = org([team("a", 8), team("b", 8)], 16)


def sim(policy: str, jobs: list[Workload], grace_s: float = 60.0) -> SimResult:
    cfg = SchedulerConfig(policy=policy, grace_s=grace_s, min_runtime_s=300.0,
                          checkpoint_s=None, reserve_after_s=0.0)
    return simulate(jobs, cluster(16), TWO, make_policy(policy, cfg), SimConfig())


def starts(res: SimResult, job_id: str) -> list[float]:
    return [e.time for e in res.events if e.event == "admit" and e.job_id == job_id]


def test_fill_runs_on_held_gpus_and_leaves_within_grace() -> None:
    """The exact log: fill-a starts on the held node, the gang starts one grace period
    after its GPUs (bar the fill) are free, fill-a is requeued and later completes."""
    res = sim("fairshare", FILL)
    log = [tuple(e) for e in res.events if e[1] != "submit"]
    assert log == [
        (0.0, "admit", "long", "0:8"),
        (0.0, "admit", "short", "1:4"),
        (20.0, "admit", "fill-a", "1:2 borrowed=2 fill-for=gang"),
        (500.0, "finish", "short", ""),
        (1000.0, "finish", "long", ""),
        (1000.0, "preempt", "fill-a", "for gang"),
        (1060.0, "requeue", "fill-a", "lost 2080 GPU-s"),  # (1060 - 20) s x 2, no checkpoint
        (1060.0, "admit", "gang", "0:8,1:8 borrowed=8"),
        (1160.0, "finish", "gang", ""),
        (1160.0, "admit", "fill-a", "0:2"),
        (3160.0, "finish", "fill-a", ""),
    ]
    assert res.metrics.completed == len(FILL)


def test_gang_start_slips_by_the_grace_period_at_most() -> None:
    """With fill the gang starts exactly grace_s after the GPUs it waited for were free
    (1,000 s), for several grace periods; without the fill job, at 1,000 s."""
    for grace in (0.0, 30.0, 120.0):
        assert starts(sim("fairshare", FILL, grace), "gang") == [1000.0 + grace]
    assert starts(sim("fairshare", FILL[:3]), "gang") == [1000.0]


def test_least_lost_work_is_preempted_first() -> None:
    """Two fill jobs; the gang needs the GPUs of only one: the one that started later (less
    work lost since its start, no checkpoints) is preempted, the other runs on."""
    jobs = [job("long", "a", 8, 0.0, 1000.0, seq=0), job("mid", "b", 6, 0.0, 500.0, seq=1),
            job("gang", "a", 15, 10.0, 100.0, seq=2),
            job("old", "a", 1, 20.0, 5000.0, seq=3), job("new", "a", 1, 400.0, 5000.0, seq=4)]
    res = sim("fairshare", jobs)
    assert [(e.time, e.job_id) for e in res.events if e.event == "preempt"] == [
        (1000.0, "new")]
    assert starts(res, "gang") == [1060.0]
    assert "fill-for=gang" in next(e.detail for e in res.events
                                   if e.event == "admit" and e.job_id == "old")


def test_backfill_by_time_limit_without_preemption() -> None:
    """fifo: bf (declared limit ends before the gang's expected start) runs on the held
    GPUs, np (no limit) does not; nothing is preempted and the gang starts at 1,000 s."""
    res = sim("fifo", BACKFILL)
    assert starts(res, "bf") == [30.0]
    assert "fill-for=gang" in next(e.detail for e in res.events
                                   if e.event == "admit" and e.job_id == "bf")
    assert starts(res, "gang") == [1000.0]
    assert starts(res, "np") == [1100.0]
    assert not any(e.event == "preempt" for e in res.events)


def test_held_gpus_do_not_idle_while_fill_waits() -> None:
    """Reserved idle GPU-hours fall with fill: the same trace without fill-a leaves node 1's
    free GPUs idle until the gang starts."""
    with_fill = sim("fairshare", FILL).metrics.reserved_idle_gpu_hours
    without = sim("fairshare", FILL[:3]).metrics.reserved_idle_gpu_hours
    assert with_fill < without
