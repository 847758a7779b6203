"""Requests are checked against the planner's own rules when created or patched (its tiers;
one request per team, period and GPU type), so that no stored request can make planning or
publishing a period fail for everyone."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, text
from sqlalchemy.exc import IntegrityError

from allotment.planner.scenario import Rules
from allotment.storage.models import PlanRow, QuotaRow, RequestRow
from tests.service.conftest import World

REQ = {"team": "llama", "period": "2026-12", "gpu_type": "a100", "gpus": 4}


def test_an_unknown_tier_is_refused_naming_the_planners_tiers(world: World) -> None:
    """tier "bogus" was stored (201) and then every plan of the period failed."""
    r = world.call("lead_own", "POST", "/v1/requests", json={**REQ, "tier": "bogus"})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "tier"
    for tier in Rules().tiers:
        assert tier in r.json()["detail"]
    assert world.call("admin", "GET", "/v1/requests").json()["total"] == 0


def test_patching_to_an_unknown_tier_is_refused(world: World) -> None:
    rid = world.call("lead_own", "POST", "/v1/requests", json=REQ).json()["id"]
    r = world.call("lead_own", "PATCH", f"/v1/requests/{rid}", json={"tier": "bogus"})
    assert r.status_code == 422 and r.json()["field"] == "tier", r.text
    assert world.call("admin", "GET", "/v1/requests").json()["items"][0]["tier"] == "normal"


def test_a_second_request_for_the_same_team_period_and_type_is_a_409(world: World) -> None:
    """The 409 names the request already there, so the lead can patch it instead."""
    first = world.call("lead_own", "POST", "/v1/requests", json=REQ)
    assert first.status_code == 201
    r = world.call("lead_parent", "POST", "/v1/requests", json={**REQ, "gpus": 6})
    assert r.status_code == 409, r.text
    assert f"request {first.json()['id']}" in r.json()["detail"]
    assert world.call("admin", "GET", "/v1/requests").json()["total"] == 1
    other_period = world.call("lead_own", "POST", "/v1/requests",
                              json={**REQ, "period": "2027-01"})
    assert other_period.status_code == 201


def test_the_database_refuses_a_duplicate_request(world: World) -> None:
    """A unique constraint backs the check (two writers racing past it cannot both win)."""
    with world.db.session() as s:
        s.add(RequestRow(team="llama", period="2026-12", gpu_type="a100", gpus=1,
                         created_by="x", updated_at=0.0, cooperates_with=[]))
    with pytest.raises(IntegrityError), world.db.session() as s:
        s.add(RequestRow(team="llama", period="2026-12", gpu_type="a100", gpus=2,
                         created_by="y", updated_at=0.0, cooperates_with=[]))


TEAMS = ["llama", "vision", "infra"]
request_bodies = st.fixed_dictionaries({
    "team": st.sampled_from(TEAMS),
    "period": st.sampled_from(["2026-12", "2026-12", "2027-01"]),
    "gpu_type": st.sampled_from(["a100", "a100", "a100", "h999"]),
    "gpus": st.integers(0, 40),
}, optional={
    "min_gpus": st.integers(0, 40),
    "tier": st.sampled_from([*Rules().tiers, "bogus", "Normal", "normal "]),
    "launch": st.dates(date(2026, 1, 1), date(2028, 12, 31)).map(date.isoformat),
    "cooperates_with": st.lists(st.sampled_from([*TEAMS, "research", "nope"]), max_size=3),
    "justification": st.text(max_size=20),
})
patches = st.fixed_dictionaries({}, optional={
    "gpus": st.integers(0, 40), "min_gpus": st.integers(0, 40),
    "tier": st.sampled_from([*Rules().tiers, "bogus"]),
    "launch": st.one_of(st.none(), st.dates(date(2026, 1, 1), date(2028, 12, 31))
                        .map(date.isoformat)),
})


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(bodies=st.lists(request_bodies, min_size=1, max_size=8),
       edits=st.lists(st.tuples(st.integers(0, 7), patches), max_size=4))
def test_every_accepted_request_plans_and_publishes(world: World, bodies: list[dict[str, Any]],
                                                    edits: list[tuple[int, dict[str, Any]]]
                                                    ) -> None:
    """Whatever requests and patches the API accepts (201/200), planning their period from
    the stored requests and publishing the plan both succeed; refusals are 4xx."""
    with world.db.session() as s:
        for model in (RequestRow, PlanRow):
            s.execute(delete(model))
        s.execute(delete(QuotaRow).where(QuotaRow.period != "default"))
    accepted = []
    for body in bodies:
        r = world.call("admin", "POST", "/v1/requests", json=body)
        assert r.status_code in (201, 409, 422), (body, r.status_code, r.text)
        if r.status_code == 201:
            accepted.append(r.json()["id"])
    for k, patch in edits:
        if accepted:
            rid = accepted[k % len(accepted)]
            r = world.call("admin", "PATCH", f"/v1/requests/{rid}", json=patch)
            assert r.status_code in (200, 422), (patch, r.status_code, r.text)
    for period in ("2026-12", "2027-01"):
        r = world.call("admin", "POST", "/v1/plans", json={"period": period})
        assert r.status_code == 201, (period, r.text)
        r = world.call("admin", "POST", f"/v1/plans/{r.json()['id']}/publish")
        assert r.status_code == 200, (period, r.text)


def test_one_small_request_does_not_block_the_periods_plan(world: World) -> None:
    """infra (no default guarantee) asks for 1 GPU: the plan gives it 1 and publishing
    used to fail (llama's and vision's default 8 + 8 plus 1 > 16 GPUs). A published plan is
    the period's whole split: teams it gives nothing hold 0 in that period."""
    r = world.call("admin", "POST", "/v1/requests", json={**REQ, "team": "infra", "gpus": 1})
    assert r.status_code == 201
    plan = world.call("admin", "POST", "/v1/plans", json={"period": "2026-12"}).json()
    r = world.call("admin", "POST", f"/v1/plans/{plan['id']}/publish")
    assert r.status_code == 200, r.text
    with world.db.session() as s:
        got = {(q.org_node, q.guaranteed) for q in s.query(QuotaRow).filter(
            QuotaRow.period == "2026-12")}
    assert got == {("infra", 1), ("llama", 0), ("vision", 0)}


def test_a_group_with_its_own_guarantee_takes_its_teams_plan(world: World) -> None:
    """A group that sets its own guarantee in the org file holds, in a planned period,
    what the plan gives its teams (its default 14 would not fit beside the plan)."""
    org = [{"name": "research", "guaranteed": {"a100": 14}, "children": [
        {"name": "llama", "guaranteed": {"a100": 6}}, {"name": "vision"}]},
        {"name": "platform", "children": [{"name": "infra"}]}]
    assert world.call("admin", "PUT", "/v1/org", json={"org": org}).status_code == 200
    for team, gpus in (("llama", 3), ("infra", 10)):
        r = world.call("admin", "POST", "/v1/requests", json={**REQ, "team": team,
                                                              "gpus": gpus})
        assert r.status_code == 201
    plan = world.call("admin", "POST", "/v1/plans", json={"period": "2026-12"}).json()
    r = world.call("admin", "POST", f"/v1/plans/{plan['id']}/publish")
    assert r.status_code == 200, r.text
    with world.db.session() as s:
        got = {q.org_node: q.guaranteed for q in s.query(QuotaRow).filter(
            QuotaRow.period == "2026-12")}
    assert got == {"llama": 3, "infra": 10, "research": 3}


def test_a_duplicate_already_in_the_database_stops_the_migration(tmp_path: Any) -> None:
    """Upgrading a database that holds two requests for one team, period and GPU type
    fails, naming both, instead of dropping one of them."""
    from allotment.storage.db import Database, alembic_config

    db = Database(f"sqlite:///{tmp_path / 'old.db'}", tmp_path / "data")
    from alembic import command

    with db.engine.connect() as conn:
        cfg = alembic_config(db.url)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
        conn.commit()
    with db.engine.begin() as conn:
        for gpus in (4, 6):
            conn.execute(text(
                "INSERT INTO requests (team, period, gpu_type, gpus, min_gpus, tier, "
                "justification, cooperates_with, created_by, updated_at) VALUES "
                "('llama', '2026-12', 'a100', :g, 0, 'normal', '', '[]', 'x', 0)"), {"g": gpus})
    with pytest.raises(Exception, match=r"requests 1 and 2"):
        db.upgrade()
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM requests")).scalar_one() == 2
    db.dispose()
