"""Launch reservations in the scheduler (``scheduler.launch``): GPUs free by the start and
not earlier than needed, borrowers preempted so that their grace ends at the start,
backfill by time limit before it, preemptible fill during the window, the gang naming it
started at the start, jobs naming an ended one rejected, and jobs of a reservation never
victims of other jobs."""

from __future__ import annotations

import dataclasses

import pytest

from allotment.domain.reservation import LaunchReservation
from allotment.domain.workload import Workload
from allotment.policies import SchedulerConfig, make_policy
from allotment.sim.engine import SimConfig, SimResult, simulate
from tests.builders import cluster, job, org, team

TWO = org([team("a", 8), team("b", 8)], 16)
R = LaunchReservation("R", "a", "gpu", 16, 10_000.0, 13_600.0)  # both nodes, one hour


def named(w: Workload, reservation: str = "R") -> Workload:
    return dataclasses.replace(w, reservation=reservation)


def sim(policy: str, jobs: list[Workload], launches: list[LaunchReservation] | None = None,
        lead_s: float = 600.0) -> SimResult:
    cfg = SchedulerConfig(policy=policy, grace_s=60.0, min_runtime_s=300.0, checkpoint_s=None,
                          reservation_lead_s=lead_s)
    return simulate(jobs, cluster(16), TWO, make_policy(policy, cfg), SimConfig(),
                    launches=[R] if launches is None else launches)


def log(res: SimResult) -> list[tuple[float, str, str, str]]:
    return [(e.time, str(e.event), e.job_id, e.detail) for e in res.events
            if e.event != "submit"]


@pytest.mark.parametrize("policy", ["fairshare", "fifo", "las", "static"])
def test_gang_submitted_at_start_starts_at_start_after_borrowers_leave(policy: str) -> None:
    """b runs on both nodes from 0 (the second job beyond its guarantee where the policy
    lends); at S - grace both are preempted (under every policy: an approved booking), they
    leave at S, and a's 16-GPU gang naming R, submitted at S, starts at S on R's nodes."""
    jobs = [job("b1", "b", 8, 0.0, 100_000.0, seq=0), job("b2", "b", 8, 0.0, 100_000.0, seq=1),
            named(job("g", "a", 16, 10_000.0, 1800.0, seq=2))]
    res = sim(policy, jobs)
    events = log(res)
    started = [e for e in events if e[1] == "admit" and e[2] == "g"]
    assert started == [(10_000.0, "admit", "g", "0:8,1:8")]
    preempts = [e for e in events if e[1] == "preempt"]
    assert preempts and all(e[0] == 9_940.0 and e[3] == "for reservation:R"
                            for e in preempts)
    summary = res.metrics.reservations["R"]
    assert summary["ready_s"] == 10_000.0
    assert summary["used_gpu_hours"] == pytest.approx(16 * 0.5)
    assert res.metrics.completed == len(jobs)  # the preempted jobs ran again and finished


def test_gang_submitted_before_start_waits_for_the_start() -> None:
    """Submitted an hour early with the cluster empty, the gang still starts at S (R's GPUs
    are R's only in its window), and the free GPUs held before S stay within grace + lead."""
    res = sim("fairshare", [named(job("g", "a", 16, 6_400.0, 1800.0, seq=0))])
    assert [e for e in log(res) if e[1] == "admit"] == [(10_000.0, "admit", "g", "0:8,1:8")]
    summary = res.metrics.reservations["R"]
    # nodes chosen at S - 60 - 600; idle from then to S: 16 GPUs x 660 s
    assert summary["held_idle_before_start_gpu_hours"] == pytest.approx(16 * 660 / 3600, abs=1e-3)
    assert summary["ready_s"] == pytest.approx(10_000.0 - 660.0)


def test_backfill_by_time_limit_before_start_and_no_later() -> None:
    """Nodes held from S - 660 (lead 600 s): b's job with a 300 s limit submitted then runs
    there (it ends by S) and is not preempted; one without a limit, not preemptible, may not
    fill R's GPUs, neither before S nor in the window once R's gang is done: it waits for E."""
    bf = dataclasses.replace(job("bf", "b", 8, 9_400.0, 250.0, seq=0, preemptible=False),
                             estimate_s=300.0)
    np_ = job("np", "b", 8, 9_400.0, 250.0, seq=1, preemptible=False)
    res = sim("fairshare", [bf, np_, named(job("g", "a", 16, 10_000.0, 1800.0, seq=2))])
    events = log(res)
    assert (9_400.0, "admit", "bf", "0:8") in events
    assert not [e for e in events if e[1] == "preempt"]
    assert [e for e in events if e[2] == "g" and e[1] == "admit"] == [
        (10_000.0, "admit", "g", "0:8,1:8")]
    assert [e[0] for e in events if e[2] == "np" and e[1] == "admit"] == [13_600.0]


def test_window_lends_unused_gpus_as_preemptible_fill_and_takes_them_back() -> None:
    """R's 8-GPU job runs from S; b's preemptible job fills R's other node, and is preempted
    (grace 60 s) when R's second job arrives; R's jobs are never victims of b."""
    jobs = [named(job("r1", "a", 8, 10_000.0, 3000.0, seq=0)),
            job("b1", "b", 8, 10_100.0, 50_000.0, seq=1),
            named(job("r2", "a", 8, 11_000.0, 600.0, seq=2))]
    events = log(sim("fairshare", jobs))
    assert (10_000.0, "admit", "r1", "0:8") in events
    assert (10_100.0, "admit", "b1", "1:8") in events  # on R's free node: fill
    assert (11_000.0, "preempt", "b1", "for reservation:R") in events
    assert (11_060.0, "admit", "r2", "1:8") in events
    assert not [e for e in events if e[1] == "preempt" and e[2] in ("r1", "r2")]


def test_reservation_gpus_outside_the_window_are_ordinary_capacity() -> None:
    """Before S - grace - lead nothing is held: b's jobs start on both nodes; after E they
    start there again; a's jobs naming R still waiting at E are rejected."""
    jobs = [job("early", "b", 16, 0.0, 1000.0, seq=0),
            named(job("late", "a", 16, 10_000.0, 10_000.0, seq=1)),
            named(job("after", "a", 8, 10_500.0, 100.0, seq=2)),
            job("b2", "b", 16, 13_000.0, 100.0, seq=3)]
    events = log(sim("fairshare", jobs))
    assert (0.0, "admit", "early", "0:8,1:8 borrowed=8") in events
    assert (10_000.0, "admit", "late", "0:8,1:8") in events
    # "after" waits behind "late" (R's 16 GPUs run it), then R ends at 13,600 s
    assert any(e[1] == "reject" and e[2] == "after" and "ended" in e[3] for e in events)
    # late's run goes on past E as an ordinary job; b2 starts when it ends
    assert (20_000.0, "finish", "late", "") in events
    assert [e for e in events if e[2] == "b2" and e[1] == "admit"] == [
        (20_000.0, "admit", "b2", "0:8,1:8 borrowed=8")]


def test_smallest_domain_and_least_work_to_free() -> None:
    """A reservation of 8 GPUs takes one node: the one where freeing costs least (here the
    node running a borrower rather than a job within its team's guarantee)."""
    small = LaunchReservation("S", "a", "gpu", 8, 5_000.0, 8_600.0)
    jobs = [job("b-own", "b", 8, 0.0, 50_000.0, seq=0),
            job("b-borrow", "b", 8, 1.0, 50_000.0, seq=1),
            named(job("g", "a", 8, 5_000.0, 100.0, seq=2), "S")]
    events = log(sim("fairshare", jobs, [small]))
    assert (1.0, "admit", "b-borrow", "1:8 borrowed=8") in events
    assert [e[2] for e in events if e[1] == "preempt"] == ["b-borrow"]
    assert (5_000.0, "admit", "g", "1:8") in events
