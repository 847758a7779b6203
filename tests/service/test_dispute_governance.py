"""A dispute is never resolved by the person who filed it, nor by the lead of the team it
concerns: it goes to the next lead up (assignment and escalation skip the node the filer
leads); admins may resolve unless they filed it."""

from __future__ import annotations

from typing import Any

from tests.service.conftest import World


def _plan(w: World) -> int:
    r = w.call("admin", "POST", "/v1/plans", json={"period": "2026-12"})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _file(w: World, who: str, team: str = "llama") -> dict[str, Any]:
    r = w.call(who, "POST", "/v1/disputes", json={
        "team": team, "subject_kind": "plan", "subject_id": str(_plan(w)),
        "wants": "8 more GPUs", "why": "launch", "gpu_type": "a100", "wanted_gpus": 8,
        "period": "2026-12"})
    assert r.status_code == 201, r.text
    return dict(r.json())


def _resolve(w: World, who: str, dispute: int, guaranteed: int | None = None) -> Any:
    return w.call(who, "POST", f"/v1/disputes/{dispute}/resolve", json={
        "decision": "granted", "reason": "fine", "guaranteed": guaranteed})


def test_group_lead_filing_for_its_team_cannot_resolve_it(world: World) -> None:
    """lead_parent (research) files for llama: research is skipped, the dispute goes to the
    admins, and lead_parent's own resolution in its favour is 403 (nothing changed)."""
    d = _file(world, "lead_parent")
    assert d["assigned_to"] is None
    assert d["history"][0]["to"] == "admins"
    r = _resolve(world, "lead_parent", d["id"], guaranteed=12)
    assert r.status_code == 403 and "filed" in r.json()["detail"]
    got = world.call("admin", "GET", f"/v1/disputes/{d['id']}").json()
    assert got["state"] == "open"
    org = world.call("admin", "GET", "/v1/org").json()
    assert all(q["guaranteed"] == 8 for n in org["nodes"] if n["name"] == "llama"
               for q in n["quotas"])
    for who in ("lead_own", "member_own", "lead_other"):
        assert _resolve(world, who, d["id"]).status_code == 403, who
    assert _resolve(world, "admin", d["id"]).status_code == 200


def test_team_lead_files_and_the_lead_above_resolves(world: World) -> None:
    """lead_own files for llama: it goes to research; lead_own may not resolve it, the lead
    of research may."""
    d = _file(world, "lead_own")
    assert d["assigned_to"] == "research"
    assert _resolve(world, "lead_own", d["id"]).status_code == 403
    assert _resolve(world, "lead_parent", d["id"]).status_code == 200


def test_admin_filer_cannot_resolve_its_own_dispute(world: World) -> None:
    """An admin files for llama: that admin gets 403, another admin or the lead above may
    resolve it; llama's own lead may not."""
    d = _file(world, "admin")
    assert d["assigned_to"] == "research"
    r = _resolve(world, "admin", d["id"])
    assert r.status_code == 403 and "filed" in r.json()["detail"]
    assert _resolve(world, "lead_own", d["id"]).status_code == 403
    r = world.call("admin", "POST", "/v1/users", json={"name": "root2", "role": "admin"})
    assert r.status_code == 201
    world.tokens["admin2"] = r.json()["token"]
    assert _resolve(world, "admin2", d["id"]).status_code == 200


def test_escalation_skips_the_node_the_filer_leads(world: World) -> None:
    """In lab{research{llama, vision}}, a lead of lab files for llama: it goes to research;
    the lab lead may not resolve it even though lab is above research; after the
    escalation time it skips lab and goes to the admins."""
    org = {"org": [{"name": "lab", "children": [{"name": "research", "children": [
        {"name": "llama", "guaranteed": {"a100": 8}},
        {"name": "vision", "guaranteed": {"a100": 8}}]}]},
        {"name": "platform", "children": [{"name": "infra"}]}]}
    assert world.call("admin", "PUT", "/v1/org", json=org).status_code == 200
    r = world.call("admin", "POST", "/v1/users", json={"name": "lab_lead", "role": "lead",
                                                       "team": "lab"})
    assert r.status_code == 201
    world.tokens["lab_lead"] = r.json()["token"]
    d = _file(world, "lab_lead")
    assert d["assigned_to"] == "research"
    assert _resolve(world, "lab_lead", d["id"]).status_code == 403
    from allotment.governance import disputes

    world.clock.advance(3601)
    with world.db.session() as s:
        assert disputes.escalate_due(s, world.clock(), 3600.0) == [d["id"]]
    got = world.call("admin", "GET", f"/v1/disputes/{d['id']}").json()
    assert got["assigned_to"] is None and got["level"] == 1
    assert got["history"][-1]["to"] == "admins"
    assert _resolve(world, "lab_lead", d["id"]).status_code == 403
    assert _resolve(world, "lead_parent", d["id"]).status_code == 403
    assert _resolve(world, "admin", d["id"]).status_code == 200
