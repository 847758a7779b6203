"""A gang beyond its team's guarantee only in part reclaims that part (``fairshare``,
``FairSharePolicy.guaranteed_part``), replayed through both engines on a hand-made trace.

Team a (guarantee 16) runs 8 GPUs and submits a 16-GPU gang at 5,000 s: 8 of its GPUs are
within a's guarantee, 8 borrowed. Team b (guarantee 16) runs three 8-GPU jobs, one of them
on borrowed GPUs (a's lent guarantee), all long past the LAS threshold; 8 GPUs are free.
Before this rule the gang waited until b's jobs ended (20,000 s); now b's borrowed run is
preempted with the grace period, and the gang starts on the free 8 GPUs and the reclaimed
8 as soon as the grace ends. The victim is requeued and finishes later; nothing is lost."""

from __future__ import annotations

from allotment.scheduler.config import SchedulerConfig
from tests.builders import cluster, job, org, team
from tests.sim.test_engines import assert_same, both

GRACE = 60.0
JOBS = [
    job("b-1", "b", 8, 0.0, 20_000.0, seq=0),
    job("b-2", "b", 8, 0.0, 20_000.0, seq=1),
    job("a-own", "a", 8, 0.0, 20_000.0, seq=2),
    job("b-3", "b", 8, 10.0, 20_000.0, seq=3),  # after a-own: on borrowed GPUs
    job("a-gang", "a", 16, 5_000.0, 1_000.0, seq=4),
]
ORG = org([team("a", 16), team("b", 16)], 40)


def test_gang_reclaims_its_guaranteed_part_within_grace() -> None:
    cfg = SchedulerConfig(policy="fairshare", grace_s=GRACE, min_runtime_s=300.0,
                          checkpoint_s=600.0)
    memory, service = both(JOBS, cluster(40), ORG, cfg)
    recs = memory.jobs
    assert recs["a-gang"].first_start == 5_000.0 + GRACE
    preempts = [(e.time, e.job_id) for e in memory.events if e.event == "preempt"]
    assert preempts == [(5_000.0, "b-3")]
    assert recs["b-3"].preemptions == 1
    assert all(r.finish is not None for r in recs.values())  # the victim ran again
    assert recs["b-1"].preemptions == recs["b-2"].preemptions == 0  # b keeps its guarantee
    assert_same(memory, service)


def test_without_free_gpus_for_the_borrowed_part_nothing_is_preempted() -> None:
    """Take the 8 free GPUs away (c runs there): the gang's borrowed half has no free GPUs,
    so its guaranteed half preempts nothing and the gang waits for b's runs to end."""
    busy = [*JOBS, job("c-1", "c", 8, 0.0, 30_000.0, seq=5)]
    cfg = SchedulerConfig(policy="fairshare", grace_s=GRACE)
    memory, service = both(busy, cluster(40),
                           org([team("a", 16), team("b", 16), team("c", 8)], 40), cfg)
    assert memory.jobs["a-gang"].first_start == 20_000.0
    assert not [e for e in memory.events if e.event == "preempt"]
    assert_same(memory, service)
