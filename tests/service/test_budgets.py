"""GPU-hour budgets in the service (issue 14, item 2), on SQLite and PostgreSQL: a plan
sets them for its period; the loop warns at 80% and at 100% once each (a log line and a
notification row, also after a restart); ``GET /v1/usage`` shows budget, used and what is
left; a pending job of a team past its budget says so in ``allot why``'s words; bad budgets
in a scenario are refused naming the field."""

from __future__ import annotations

from sqlalchemy import select

from allotment.backends.fake import FakeBackend
from allotment.service.loop import LoopConfig, SchedulerLoop
from allotment.storage.models import NotificationRow
from tests.service.conftest import World

SCENARIO = {
    "period": "2026-11", "as_of": "2026-11-01", "inventory": {"a100": 16},
    "org": [{"name": "research", "children": [{"name": "llama"}, {"name": "vision"}]},
            {"name": "platform", "children": [{"name": "infra"}]}],
    "requests": [{"team": "llama", "gpu_type": "a100", "gpus": 8},
                 {"team": "vision", "gpu_type": "a100", "gpus": 8}],
    "budgets": [{"team": "llama", "gpu_hours": 10}],
}


def publish(w: World, scenario: dict) -> None:  # type: ignore[type-arg]
    r = w.call("admin", "POST", "/v1/plans", json={"scenario": scenario})
    assert r.status_code == 201, r.text
    r = w.call("admin", "POST", f"/v1/plans/{r.json()['id']}/publish")
    assert r.status_code == 200, r.text


def warnings(w: World) -> list[tuple[str, dict]]:  # type: ignore[type-arg]
    with w.db.session() as s:
        rows = s.execute(select(NotificationRow).order_by(NotificationRow.id)).scalars()
        return [(r.kind, dict(r.payload)) for r in rows if r.kind.startswith("budget_")]


def test_budget_warnings_usage_and_why(world: World) -> None:
    """80% then 100% of llama's 10 GPU-hour budget: one warning each, none again after a
    restart; usage shows budget, used, remaining; a pending job says why it waits."""
    publish(world, SCENARIO)
    loop = SchedulerLoop(world.db, FakeBackend(), LoopConfig(accounting_flush_s=0.0),
                         clock=world.clock)
    job = world.submit("member_own", gpus=8)
    loop.tick()
    assert world.call("member_own", "GET", f"/v1/jobs/{job['id']}").json()["state"] == \
        "running"
    for _ in range(3):  # 8 GPUs for 1 h = 8 GPU-hours: 80%
        world.clock.advance(1200)
        loop.tick()
    got = warnings(world)
    assert [k for k, _ in got] == ["budget_80"]
    assert got[0][1]["team"] == "llama" and got[0][1]["budget_gpu_hours"] == 10.0
    world.clock.advance(600)  # 9.33 GPU-hours
    loop.tick()
    assert [k for k, _ in warnings(world)] == ["budget_80"]
    world.clock.advance(600)  # 10.67 GPU-hours: past it
    loop.tick()
    loop.tick()
    assert [k for k, _ in warnings(world)] == ["budget_80", "budget_100"]
    assert "idle GPUs only" in warnings(world)[1][1]["reason"]
    rows = {r["team"]: r for r in world.call("member_own", "GET", "/v1/usage",
                                             params={"period": "2026-11"}).json()}
    llama = rows["llama"]
    assert llama["budget_gpu_hours"] == 10.0
    assert 10.0 < llama["used_gpu_hours"] <= 10.7
    assert llama["remaining_gpu_hours"] == 0.0
    assert rows["vision"]["budget_gpu_hours"] is None
    # a second llama job waits: vision's idle GPUs are not free for it? They are: it runs on
    # them (idle GPUs), so first fill vision's guarantee, then llama's next job must wait
    world.submit("member_other", team="vision", gpus=8)
    loop.tick()
    waiting = world.submit("member_own", gpus=8)
    loop.tick()
    why = world.call("member_own", "GET", f"/v1/jobs/{waiting['id']}").json()["reason"]
    assert why.startswith("team llama is 1"), why
    assert "% of its 10 GPU-hour budget for 2026-11; its jobs run on idle GPUs only" in why
    # the running job of the team past its budget was never preempted
    assert world.call("member_own", "GET", f"/v1/jobs/{job['id']}").json()["state"] == \
        "running"
    # a restarted scheduler keeps what was sent: no warning twice
    loop2 = SchedulerLoop(world.db, FakeBackend(), LoopConfig(accounting_flush_s=0.0),
                          clock=world.clock, holder=loop.holder)
    world.clock.advance(60)
    loop2.tick()
    assert [k for k, _ in warnings(world)] == ["budget_80", "budget_100"]


def test_bad_budget_in_a_scenario_names_the_field(world: World) -> None:
    """A budget of an unknown GPU type, or a negative one, is a 422 naming budgets[0]."""
    for bad in ({"team": "llama", "gpu_type": "h100", "gpu_hours": 1},
                {"team": "llama", "gpu_hours": -1}):
        r = world.call("admin", "POST", "/v1/plans", json={"scenario": {**SCENARIO,
                                                                        "budgets": [bad]}})
        assert r.status_code == 422, r.text
        assert "budgets" in r.text
    # a team not in the stored org: refused at publish
    r = world.call("admin", "POST", "/v1/plans", json={"scenario": {
        **SCENARIO, "budgets": [{"team": "ghost", "gpu_hours": 1}]}})
    assert r.status_code == 201
    r = world.call("admin", "POST", f"/v1/plans/{r.json()['id']}/publish")
    assert r.status_code == 422 and "budgets" in r.text, r.text
