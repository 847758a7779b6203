"""A gang beyond its team's guarantee completes the GPUs held for it by preemption
(``scheduler.preemption.make_room``, fair share's ``gang_reclaim``), and a reclaim's victim
set is not spoiled by a team whose cheap victims would take it below its guarantee."""

from __future__ import annotations

from allotment.domain.org import OrgNode, Quota
from allotment.domain.workload import Workload
from allotment.policies import SchedulerConfig, make_policy
from allotment.sim.engine import SimConfig, SimResult, simulate
from tests.builders import GPU, cluster, job, org, team

LONG = 100_000.0


def sim(jobs: list[Workload], guarantees: dict[str, int]) -> SimResult:
    cfg = SchedulerConfig(policy="fairshare", grace_s=60.0, min_runtime_s=300.0,
                          checkpoint_s=None, reserve_after_s=0.0)
    # 8 nodes of 8; racks of 2 nodes, one pod: a gang of more than 16 may use any node
    c = cluster(64, 8, nodes_per_rack=2, racks_per_pod=4)
    o = org([team(name, g) for name, g in guarantees.items()], 64)
    return simulate(jobs, c, o, make_policy("fairshare", cfg), SimConfig())


def log(res: SimResult, *ids: str) -> list[tuple[float, str, str]]:
    """The events of ``ids`` before the long runs end."""
    return [(e.time, e.event, e.job_id) for e in res.events
            if e.event != "submit" and e.job_id in ids and e.time < LONG]


def preempted_for(res: SimResult, gang: str) -> list[tuple[float, str]]:
    return [(e.time, e.job_id) for e in res.events
            if e.event == "preempt" and e.detail == f"for {gang}"]


def b_jobs(n: int, start: float = 0.0) -> list[Workload]:
    return [job(f"b{k}", "b", 4, start, LONG, seq=10 + k) for k in range(1, n + 1)]


# a keeps 8 of its 24 GPUs, b runs 32 (16 beyond its guarantee), c's 24 lie idle: 24 free.
# a's 32-GPU gang lies 16 within a's guarantee: it holds the 24 free GPUs and lacks 8, no
# more than its part within the guarantee nor than the idle GPUs held for it.
PART = [job("a1", "a", 8, 0.0, LONG, seq=0), *b_jobs(8),
        job("gang", "a", 32, 1000.0, 500.0, seq=30)]
PART_ORG = {"a": 24, "b": 16, "c": 24}


def test_a_gang_partly_within_its_guarantee_takes_that_part_back() -> None:
    """Exact: two of b's runs admitted on borrowed GPUs (cheapest first) are preempted at
    once, the gang starts one grace period later, and they come back when it ends."""
    res = sim(PART, PART_ORG)
    assert log(res, "gang", "b5", "b6", "b7") == [
        (0.0, "admit", "b5"), (0.0, "admit", "b6"), (0.0, "admit", "b7"),
        (1000.0, "preempt", "b5"), (1000.0, "preempt", "b6"),
        (1060.0, "requeue", "b5"), (1060.0, "requeue", "b6"),
        (1060.0, "admit", "gang"),
        (1560.0, "finish", "gang"),
        (1560.0, "admit", "b5"), (1560.0, "admit", "b6"),
    ]
    assert res.metrics.completed == len(PART)


def test_no_preemption_below_a_victims_guarantee() -> None:
    """The same gang when b keeps only 4 GPUs beyond its guarantee (and c runs 12 within
    its own): the 8 missing GPUs cannot be taken without taking b below its guarantee, so
    nothing is preempted and the gang waits for runs to end."""
    jobs = [job("a1", "a", 8, 0.0, LONG, seq=0), *b_jobs(5),
            *[job(f"c{k}", "c", 4, 0.0, LONG, seq=20 + k) for k in range(1, 4)],
            job("gang", "a", 32, 1000.0, 500.0, seq=30)]
    res = sim(jobs, PART_ORG)
    assert [e for e in res.events if e.event == "preempt"] == []
    assert [e.time for e in res.events if e.event == "admit" and e.job_id == "gang"] == [LONG]


def test_no_preemption_for_a_gang_its_quota_would_still_block() -> None:
    """The gang of the first case when a may borrow at most 8 GPUs: with the victims gone
    it would borrow 16, so its quota would still block it. Nothing is preempted (the GPUs
    would only idle); it starts when a1 ends and it borrows 8."""
    cfg = SchedulerConfig(policy="fairshare", grace_s=60.0, min_runtime_s=300.0,
                          checkpoint_s=None, reserve_after_s=0.0)
    o = org([OrgNode("a", None, {GPU: Quota(24, 8, None)}), team("b", 16), team("c", 24)], 64)
    res = simulate(PART, cluster(64, 8, nodes_per_rack=2, racks_per_pod=4), o,
                   make_policy("fairshare", cfg), SimConfig())
    assert [e for e in res.events if e.event == "preempt"] == []
    assert [e.time for e in res.events if e.event == "admit" and e.job_id == "gang"] == [LONG]


def test_victims_must_be_long_runs() -> None:
    """Runs that have not attained the LAS threshold (3,600 GPU-s: 900 s on 4 GPUs) are
    not taken: the gang, submitted at 200 s, preempts at 900 s, when b's runs pass it."""
    jobs = [*PART[:-1], job("gang", "a", 32, 200.0, 500.0, seq=30)]
    res = sim(jobs, PART_ORG)
    assert preempted_for(res, "gang") == [(900.0, "b5"), (900.0, "b6")]
    assert [e.time for e in res.events if e.event == "admit" and e.job_id == "gang"] == [960.0]


def test_a_borrower_gang_displaces_only_borrowers_ranked_below_it() -> None:
    """a holds its whole guarantee (16); its 24-GPU gang borrows in full. b's borrowed runs
    have attained LAS queue 2, so, requeued, they sort after the gang (queue 1): two are
    preempted for the 8 missing GPUs. Under the same layout, with b's runs younger than the
    threshold, none is."""
    a = [job("a1", "a", 8, 0.0, LONG, seq=0), job("a2", "a", 8, 0.0, LONG, seq=1)]
    res = sim([*a, *b_jobs(8), job("gang", "a", 24, 1000.0, 500.0, seq=30)],
              {"a": 16, "b": 16, "c": 32})
    assert preempted_for(res, "gang") == [(1000.0, "b5"), (1000.0, "b6")]
    assert [e.time for e in res.events if e.event == "admit" and e.job_id == "gang"] == [1060.0]
    young = sim([*a, *b_jobs(8, start=900.0), job("gang", "a", 24, 1000.0, 500.0, seq=30)],
                {"a": 16, "b": 16, "c": 32})
    assert [t for t, _ in preempted_for(young, "gang")] == [1800.0, 1800.0]


def test_a_reclaim_skips_victims_that_would_take_their_team_below_its_guarantee() -> None:
    """a's 32-GPU gang lies within a's guarantee and needs 16 GPUs reclaimed. The cheapest
    runs are b's two borrowed ones, but b keeps only 4 GPUs beyond its guarantee (its b1
    ended): after b5 the set goes on with c's borrowed runs. (Taking b6 as well used to make
    the whole set fail, and the gang waited for runs to end.)"""
    jobs = [job("b1", "b", 4, 0.0, 400.0, seq=11), *b_jobs(6)[1:],
            *[job(f"c{k}", "c", 4, 0.0, LONG, seq=20 + k) for k in range(1, 8)],
            job("gang", "a", 32, 1000.0, 500.0, seq=30)]
    res = sim(jobs, {"a": 32, "b": 16, "c": 16})
    assert preempted_for(res, "gang") == [(1000.0, "b5"), (1000.0, "c5"), (1000.0, "c6"),
                                          (1000.0, "c7")]
    assert [e.time for e in res.events if e.event == "admit" and e.job_id == "gang"] == [1060.0]


def test_a_guaranteed_job_that_comes_first_delays_the_gang_by_less_than_the_grace() -> None:
    """While the gang's victims leave (1,000-1,060 s), c submits an 8-GPU job within its
    guarantee. It may not take the free GPUs held for the gang; it claims the GPUs being
    released on node 3 (it comes before a borrower) and starts when they are free. The gang,
    8 short again, preempts two more of b's borrowed runs and starts at 1,090 s: it slips
    by 30 s, less than the grace period."""
    res = sim([*PART, job("c1", "c", 8, 1030.0, 500.0, seq=31)], PART_ORG)
    assert preempted_for(res, "gang") == [(1000.0, "b5"), (1000.0, "b6"),
                                          (1030.0, "b7"), (1030.0, "b8")]
    assert [e for e in log(res, "c1", "gang") if e[1] == "admit"] == [
        (1060.0, "admit", "c1"), (1090.0, "admit", "gang")]
    admit = next(e for e in res.events if e.event == "admit" and e.job_id == "c1")
    assert admit.detail == "3:8"  # b5's and b6's node, not the gang's free held GPUs
