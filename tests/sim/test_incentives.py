"""GPU-hour budgets and credit for lending in the simulator (issue 14, items 2 and 3)."""

from __future__ import annotations

from pathlib import Path

import yaml

from allotment.domain.cluster import GpuType, make_cluster
from allotment.domain.orgspec import budgets_from_data, org_from_data
from allotment.policies import make_policy
from allotment.scheduler.config import SchedulerConfig
from allotment.sim.engine import SimConfig, SimResult, simulate
from allotment.sim.report import summary
from allotment.sim.traces import load_trace
from tests.builders import cluster, job, org, team

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "credit"
GPU = GpuType("gpu")


def burst_wait_s(r: SimResult, team_name: str) -> float:
    """Mean wait from submission to first start of a team's burst jobs (the 2 h ones)."""
    waits = [rec.first_start - rec.workload.submit_time for rec in r.jobs.values()
             if rec.workload.team == team_name and rec.workload.duration == 7200
             and rec.first_start is not None]
    assert len(waits) == 20
    return sum(waits) / len(waits)


def run_credit_example(credit_half_life_s: float | None) -> SimResult:
    jobs = load_trace(str(EXAMPLE / "trace.csv"))
    c = make_cluster({GPU: 32}, 8, 4, 8)
    o = org_from_data(yaml.safe_load((EXAMPLE / "org.yaml").read_text()), {GPU: 32})
    cfg = SchedulerConfig(credit_half_life_s=credit_half_life_s, credit_cap=1.0)
    return simulate(jobs, c, o, make_policy("fairshare", cfg), SimConfig())


def test_credit_lets_the_lender_borrow_sooner_than_the_hoarder() -> None:
    """With credits the lender's bursts wait less than the hoarder's; without, they do not
    (the lender's are no more than 3% shorter: its lower decayed usage alone)."""
    with_credit = run_credit_example(86400.0)
    without = run_credit_example(None)
    lender, hoarder = burst_wait_s(with_credit, "lender"), burst_wait_s(with_credit, "hoarder")
    assert lender < 0.75 * hoarder, (lender, hoarder)
    lender0, hoarder0 = burst_wait_s(without, "lender"), burst_wait_s(without, "hoarder")
    assert lender0 >= 0.97 * hoarder0, (lender0, hoarder0)
    assert with_credit.ledger is not None
    assert with_credit.ledger.credit_gpu_s.get("lender", 0) > 0
    assert "hoarder" not in with_credit.ledger.credit_gpu_s  # it never lent
    # the cap: at most m x guarantee x half-life
    assert with_credit.ledger.credit_gpu_s["lender"] <= 1.0 * 8 * 86400.0
    # every job of both finished in both runs
    for r in (with_credit, without):
        assert all(rec.finish is not None for rec in r.jobs.values())


BUDGET_ORG = {"org": [{"name": "capped", "guaranteed": 8}, {"name": "a", "guaranteed": 4},
                      {"name": "b", "guaranteed": 4}],
              "budgets": [{"team": "capped", "gpu_hours": 10}]}


def budget_trace() -> list:  # type: ignore[type-arg]
    """``capped`` wants 8 GPUs for 24 h (192 GPU-hours, its budget is 10); a and b have a
    steady stream of 4-GPU jobs within their guarantees, and some work beyond them."""
    jobs = [job(f"c{k}", "capped", 8, k * 3600.0, 3600.0, seq=k) for k in range(24)]
    seq = 100
    for k in range(48):
        for t in "ab":
            jobs.append(job(f"{t}{k}", t, 4, k * 1800.0, 1800.0, seq=seq))
            seq += 1
        if k % 6 == 3:
            jobs.append(job(f"x{k}", "a", 8, k * 1800.0, 3000.0, seq=seq))
            seq += 1
    return sorted(jobs, key=lambda w: (w.submit_time, w.seq))


def test_budget_far_under_demand() -> None:
    """A team far past its budget finishes all its jobs, none of its running jobs is
    preempted for the budget, the others keep >= 0.95 of their guarantees; summary.json
    shows budget, used and when it went over."""
    c = cluster(16)
    o = org_from_data(BUDGET_ORG, {GPU: 16})
    budgets = budgets_from_data(BUDGET_ORG, o)
    assert budgets == {("capped", GPU): 10.0}
    r = simulate(budget_trace(), c, o, make_policy("fairshare"), SimConfig(), budgets=budgets)
    capped = [rec for rec in r.jobs.values() if rec.workload.team == "capped"]
    assert all(rec.finish is not None for rec in capped)
    assert sum(rec.preemptions for rec in capped) == 0
    for name in ("a", "b"):
        assert r.metrics.teams[name].satisfaction >= 0.95
    doc = summary([r], {})["policies"]["fairshare"]["teams"]
    assert doc["capped"]["budget_gpu_hours"] == 10.0
    assert doc["capped"]["used_gpu_hours"] > 100
    assert doc["capped"]["over_budget_since_s"] is not None
    assert 0 < doc["capped"]["over_budget_since_s"] <= 2 * 3600
    assert doc["a"]["budget_gpu_hours"] is None
    # without a budget the same trace lets capped hold its guarantee against a's borrowing:
    # with it, a's borrowed work runs first (capped's idle guarantee is lent first)
    plain = simulate(budget_trace(), c, o, make_policy("fairshare"), SimConfig())
    borrowed = [rec for rec in r.jobs.values() if rec.workload.id.startswith("x")]
    borrowed0 = [rec for rec in plain.jobs.values() if rec.workload.id.startswith("x")]
    wait = sum(x.first_start - x.workload.submit_time for x in borrowed)  # type: ignore[operator]
    wait0 = sum(x.first_start - x.workload.submit_time for x in borrowed0)  # type: ignore[operator]
    assert wait < wait0, (wait, wait0)


def test_over_budget_work_goes_after_teams_within_budget() -> None:
    """Two teams borrow the same idle GPUs; the one past its budget goes second even though
    its fair-share value is lower, and its guarantee is lent to the other first."""
    c = cluster(16)
    o = org([team("over", 8), team("ok", 8)], 16)
    jobs = [job("o0", "over", 8, 0.0, 3600.0, seq=0),
            job("o1", "over", 8, 7200.0, 600.0, seq=1),
            job("k0", "ok", 8, 0.0, 10000.0, seq=2),
            job("k1", "ok", 8, 7200.0, 600.0, seq=3)]
    budgets = {("over", GPU): 0.5}
    r = simulate(jobs, c, o, make_policy("fairshare"), SimConfig(), budgets=budgets)
    # at 7200 s: over holds nothing but is past its budget; ok holds its guarantee; 8 GPUs
    # idle: ok's borrowing job k1 gets them, o1 (within over's guarantee) waits
    assert r.jobs["k1"].first_start == 7200.0
    assert r.jobs["o1"].first_start == 7800.0
    plain = simulate(jobs, c, o, make_policy("fairshare"), SimConfig())
    assert plain.jobs["o1"].first_start == 7200.0


def test_zero_budget_is_over_from_the_start() -> None:
    """A budget of 0 GPU-hours: over from the team's first GPU-second; its work still runs
    on idle GPUs."""
    c = cluster(16)
    o = org([team("z", 8), team("ok", 8)], 16)
    jobs = [job("z0", "z", 8, 0.0, 600.0, seq=0), job("k0", "ok", 8, 100.0, 600.0, seq=1)]
    r = simulate(jobs, c, o, make_policy("fairshare"), SimConfig(), budgets={("z", GPU): 0.0})
    assert r.jobs["z0"].finish == 600.0
    assert r.ledger is not None and r.ledger.over_since[("z", GPU)] == 0.0
