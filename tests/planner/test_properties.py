"""Planner invariants over random org trees and requests."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from allotment.planner import allocate, parse_scenario

SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def scenarios(draw: st.DrawFn, flat: bool = False, with_floors: bool = True) -> dict[str, Any]:
    n = draw(st.integers(1, 8))
    teams = [f"t{k}" for k in range(n)]
    if flat:
        org = [{"name": t, "weight": draw(st.sampled_from([0.5, 1, 2, 3]))} for t in teams]
    else:
        groups: dict[str, list[dict[str, Any]]] = {"g0": [], "g1": []}
        for t in teams:
            groups[draw(st.sampled_from(["g0", "g1"]))].append(
                {"name": t, "weight": draw(st.sampled_from([0.5, 1, 2]))})
        org = [{"name": g, "weight": draw(st.sampled_from([1, 2])), "children": c}
               for g, c in groups.items() if c]
    requests = []
    for t in teams:
        gpus = draw(st.integers(0, 400))
        floor = draw(st.integers(0, gpus)) if with_floors else 0
        requests.append({"team": t, "gpu_type": "h100", "gpus": gpus, "min_gpus": floor,
                         "tier": draw(st.sampled_from(["normal", "high", "low"]))})
    return {"period": "p", "as_of": "2026-11-22",
            "inventory": {"h100": draw(st.integers(0, 1500))}, "org": org, "requests": requests}


def allocations(data: dict[str, Any], capacity: int | None = None) -> dict[str, Any]:
    plan = allocate(parse_scenario(data), None if capacity is None else {"h100": capacity})
    return {a.team: a for a in plan.allocations}


@SETTINGS
@given(scenarios())
def test_within_capacity_and_requests(data: dict[str, Any]) -> None:
    """Allocations add up to at most the capacity; nobody gets more than it asked."""
    got = allocations(data)
    assert sum(a.allocated for a in got.values()) <= data["inventory"]["h100"]
    for a in got.values():
        assert 0 <= a.allocated <= a.requested


@SETTINGS
@given(scenarios())
def test_work_conserving(data: dict[str, Any]) -> None:
    """Either every feasible request is met, or the whole capacity is handed out."""
    got = allocations(data)
    cap = data["inventory"]["h100"]
    total = sum(a.allocated for a in got.values())
    unmet = [a for a in got.values() if a.floor != "infeasible" and a.allocated < a.requested]
    assert total == cap or not unmet


@SETTINGS
@given(scenarios())
def test_floors_honoured_whenever_they_fit(data: dict[str, Any]) -> None:
    """Every floor is met unless reported infeasible; all floors that fit together are met."""
    got = allocations(data)
    for a in got.values():
        assert a.floor == "infeasible" or a.allocated >= a.min_gpus
    if sum(a.min_gpus for a in got.values()) <= data["inventory"]["h100"]:
        assert all(a.floor != "infeasible" for a in got.values())


@SETTINGS
@given(scenarios(flat=True, with_floors=False))
def test_max_min_optimal(data: dict[str, Any]) -> None:
    """No team can be raised without lowering one whose weighted share is no larger (to
    within one GPU of rounding on each side)."""
    got = allocations(data)
    items = list(got.values())
    for i in items:
        if i.allocated >= i.requested:
            continue
        for j in items:
            if j is i or j.allocated == 0:
                continue
            slack = 1 / i.effective_weight + 1 / j.effective_weight
            assert j.allocated / j.effective_weight <= i.allocated / i.effective_weight + slack


@SETTINGS
@given(scenarios(flat=True, with_floors=False), st.integers(1, 100))
def test_equal_demands_weights_respected(data: dict[str, Any], demand: int) -> None:
    """Equal demands, all uncapped: shares follow weights within a GPU of rounding."""
    for r in data["requests"]:
        r["gpus"], r["tier"] = 10_000, "normal"
    got = allocations(data)
    items = list(got.values())
    for a in items:
        for b in items:
            ratio = a.effective_weight / b.effective_weight
            assert abs(a.allocated - ratio * b.allocated) <= 1 + ratio


@SETTINGS
@given(scenarios(with_floors=False), st.integers(0, 500))
def test_more_capacity_never_lowers_anyone(data: dict[str, Any], extra: int) -> None:
    """Adding capacity never lowers any team (without floors, which can flip feasibility)."""
    cap = data["inventory"]["h100"]
    before = allocations(data, cap)
    after = allocations(data, cap + extra)
    for team, a in before.items():
        assert after[team].allocated >= a.allocated


@SETTINGS
@given(scenarios())
def test_identical_inputs_identical_output(data: dict[str, Any]) -> None:
    assert allocate(parse_scenario(data)) == allocate(parse_scenario(data))
