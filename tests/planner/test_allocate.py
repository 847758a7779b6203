"""The planner on small hand-computed scenarios, explanation strings included."""

from __future__ import annotations

from typing import Any

import pytest

from allotment.errors import ScenarioError
from allotment.planner import allocate, cooperation_options, parse_scenario, plan_to_org


def scenario(requests: list[dict[str, Any]], capacity: int = 100, org: Any = None,
             **extra: Any) -> dict[str, Any]:
    teams = sorted({r["team"] for r in requests})
    return {
        "period": "2026-12", "as_of": "2026-11-22", "inventory": {"h100": capacity},
        "org": org or [{"name": t} for t in teams],
        "requests": [{"gpu_type": "h100", **r} for r in requests], **extra,
    }


def alloc(data: dict[str, Any], **kw: Any) -> dict[str, tuple[int, str]]:
    plan = allocate(parse_scenario(data), **kw)
    return {a.team: (a.allocated, a.reason) for a in plan.allocations}


def test_equal_weights_split_evenly_and_demand_caps() -> None:
    """100 GPUs among asks of 80, 80 and 10: the small ask is met, the rest split evenly."""
    got = alloc(scenario([{"team": "a", "gpus": 80}, {"team": "b", "gpus": 80},
                          {"team": "c", "gpus": 10}]))
    assert got == {
        "a": (45, "water level of the organisation reached at 45 GPUs (the organisation "
                  "shares 100)"),
        "b": (45, "water level of the organisation reached at 45 GPUs (the organisation "
                  "shares 100)"),
        "c": (10, "capped by demand"),
    }


def test_double_weight_double_share() -> None:
    """A tier of weight 2 gets twice the GPUs of a normal tier while both are uncapped."""
    got = alloc(scenario([{"team": "a", "gpus": 100, "tier": "high"},
                          {"team": "b", "gpus": 100}], capacity=90))
    assert got["a"][0] == 60 and got["b"][0] == 30
    assert got["a"][1].endswith("; tier high x2")


def test_remainders_go_by_lowest_next_price_then_name() -> None:
    """100 among three equal teams: 33.3 each, the spare GPU goes to the first name."""
    got = alloc(scenario([{"team": t, "gpus": 50} for t in ("c", "b", "a")]))
    assert [got[t][0] for t in ("a", "b", "c")] == [34, 33, 33]


def test_more_capacity_never_takes_a_gpu_away() -> None:
    """The case where rounding down and giving the rest to the largest fractional parts
    took a GPU from t4 (2 -> 1) when the capacity grew from 56 to 59: every capacity from
    56 to 80 gives each team at least what the one before gave it."""
    kids = {"g0": [("t0", 2), ("t1", 2), ("t4", 0.5), ("t6", 2)],
            "g1": [("t2", 1), ("t3", 2), ("t5", 0.5)]}
    org = [{"name": g, "weight": gw, "children": [{"name": t, "weight": w} for t, w in kids[g]]}
           for g, gw in (("g0", 1), ("g1", 2))]
    asks = {"t0": (5, "high"), "t1": (49, "low"), "t2": (9, "high"), "t3": (358, "normal"),
            "t4": (4, "low"), "t5": (166, "normal"), "t6": (312, "low")}
    data = scenario([{"team": t, "gpus": g, "tier": tier} for t, (g, tier) in asks.items()],
                    org=org)
    last: dict[str, int] = {}
    for cap in range(56, 81):
        got = {t: a for t, (a, _) in alloc(data, capacity_override={"h100": cap}).items()}
        assert sum(got.values()) == cap
        assert all(got[t] >= last.get(t, 0) for t in got), (cap, last, got)
        last = got


def test_floor_is_honoured_and_named() -> None:
    """A minimum-viable floor above the water level holds, and says so."""
    got = alloc(scenario([{"team": "a", "gpus": 100, "min_gpus": 70},
                          {"team": "b", "gpus": 100}]))
    assert got["a"] == (70, "minimum-viable floor (70 GPUs)")
    assert got["b"][0] == 30


def test_infeasible_floor_is_reported_never_silently_cut() -> None:
    """Two floors of 60 on 100 GPUs: the higher tier's holds, the other is reported."""
    data = scenario([{"team": "a", "gpus": 80, "min_gpus": 60, "tier": "high"},
                     {"team": "b", "gpus": 80, "min_gpus": 60}])
    plan = allocate(parse_scenario(data))
    got = {a.team: (a.allocated, a.reason, a.floor) for a in plan.allocations}
    assert got["a"][0] == 80
    assert got["b"] == (0, "minimum-viable floor of 60 GPUs does not fit", "infeasible")
    assert plan.infeasible == (
        "b: minimum viable 60 h100 GPUs does not fit (only 40 of 100 left after "
        "higher-priority floors); allocated 0",
    )


def test_hierarchy_splits_groups_first() -> None:
    """Groups of weight 3 and 1 split 80 GPUs 60/20, then teams share their group's part."""
    org = [{"name": "research", "weight": 3, "children": [{"name": "a"}, {"name": "b"}]},
           {"name": "product", "weight": 1, "children": [{"name": "c"}]}]
    got = alloc(scenario([{"team": "a", "gpus": 100}, {"team": "b", "gpus": 100},
                          {"team": "c", "gpus": 100}], capacity=80, org=org))
    assert got["a"] == (30, "water level of group research reached at 30 GPUs (group "
                            "research shares 60)")
    assert got["c"][0] == 20


def test_launch_boost_and_idle_penalty_are_explained() -> None:
    """Launch in 45 of 90 days: x1.5; 25% of last period's GPU-hours idle: -25%."""
    data = scenario(
        [{"team": "a", "gpus": 100, "launch": "2027-01-06"}, {"team": "b", "gpus": 100}],
        history={"b": {"allocated_gpus": 10, "used_gpu_hours": 3000, "idle_gpu_hours": 1000}},
    )
    got = alloc(data)
    assert got["a"][0] == 67 and got["b"][0] == 33  # weights 1.5 and 0.75
    assert got["a"][1].endswith("; launch boost x1.50")
    assert got["b"][1].endswith("; idle penalty -25% (1,000 idle GPU-hours last period)")


def test_capacity_override_and_plan_to_org() -> None:
    """More capacity raises the allocations; the plan becomes the scheduler's guarantees."""
    data = scenario([{"team": "a", "gpus": 80}, {"team": "b", "gpus": 80}])
    sc = parse_scenario(data)
    plan = allocate(sc, {"h100": 140})
    assert [a.allocated for a in plan.allocations] == [70, 70]
    org = plan_to_org(allocate(sc), sc)
    assert org.guarantee_of("a", "h100") == 50  # type: ignore[arg-type]
    assert org.capacity == {"h100": 100}


def test_cooperation_shows_both_options() -> None:
    """Two teams whose floors cannot both fit get more together than apart."""
    data = scenario([
        {"team": "a", "gpus": 70, "min_gpus": 60, "tier": "high", "cooperates_with": ["b"]},
        {"team": "b", "gpus": 70, "min_gpus": 60},
        {"team": "c", "gpus": 100},
    ])
    sc = parse_scenario(data)
    plan = allocate(sc)
    [opt] = cooperation_options(sc, plan)
    assert opt.kind == "declared" and opt.teams == ("a", "b")
    # apart: a (weight 2) and c (weight 1) split 100 -> 66.7/33.3; b's floor cannot fit
    assert opt.separate == {"a": 67, "b": 0}
    # pooled: weight 2+1 against c's 1 -> 75/25, above the pool's floor of 60
    assert opt.pooled == 75
    assert "b cannot reach its minimum" in opt.note


def test_requests_for_other_periods_are_left_out() -> None:
    data = scenario([{"team": "a", "gpus": 10, "period": "2027-01"},
                     {"team": "b", "gpus": 10, "period": "2026-12"}])
    sc = parse_scenario(data)
    assert [r.team for r in sc.requests] == ["b"] and sc.other_period_requests == 1


def test_shared_tags_are_flagged_as_possible_overlap() -> None:
    data = scenario([{"team": "a", "gpus": 10, "tags": ["llm"]},
                     {"team": "b", "gpus": 10, "tags": ["llm", "x"]}])
    sc = parse_scenario(data)
    [opt] = cooperation_options(sc, allocate(sc))
    assert (opt.kind, opt.shared_tags) == ("possible overlap", ("llm",))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"requests": [{"team": "zz", "gpu_type": "h100", "gpus": 1}]}, "requests[0].team"),
        ({"requests": [{"team": "a", "gpu_type": "tpu", "gpus": 1}]}, "requests[0].gpu_type"),
        ({"requests": [{"team": "a", "gpu_type": "h100", "gpus": -1}]}, "requests[0].gpus"),
        ({"requests": [{"team": "a", "gpu_type": "h100", "gpus": 1, "min_gpus": 5}]},
         "requests[0]"),
        ({"requests": [{"team": "a", "gpu_type": "h100", "gpus": 1, "tier": "vip"}]},
         "requests[0].tier"),
        ({"as_of": "yesterday"}, "as_of"),
        ({"inventory": None}, "scenario"),
        ({"history": {"ghost": {}}}, "history.ghost"),
    ],
)
def test_bad_scenarios_name_the_field(change: dict[str, Any], field: str) -> None:
    data = scenario([{"team": "a", "gpus": 1}])
    data.update(change)
    with pytest.raises(ScenarioError) as err:
        parse_scenario(data)
    assert err.value.field == field
