"""Every read of the audit log shows a user only what the user may see: admins all; others
their own teams' entries, the disputes they may see (GET /v1/disputes/{id}'s rule) and the
org-wide entries that carry nothing private."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from tests.service.conftest import World
from tests.service.dashboard_login import ui_get, ui_login

SECRET_WHY = "SECRET-WHY our launch slips without it"
SECRET_WANTS = "SECRET-WANTS 8 more a100"
SECRET_DECISION = "SECRET-DECISION granted for the launch"


def _plan(w: World) -> int:
    r = w.call("admin", "POST", "/v1/plans", json={"period": "2026-12"})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _file(w: World, who: str = "lead_own", team: str = "llama", why: str = SECRET_WHY,
          wants: str = SECRET_WANTS) -> int:
    r = w.call(who, "POST", "/v1/disputes", json={
        "team": team, "subject_kind": "plan", "subject_id": str(_plan(w)), "wants": wants,
        "why": why})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _audit(w: World, who: str, **params: Any) -> dict[str, Any]:
    r = w.call(who, "GET", "/v1/audit", params=params)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_other_team_sees_no_dispute_text_anywhere(world: World) -> None:
    """A dispute of llama, filed and resolved: vision's member and lead get 403 for it, and
    neither its reason, what it asks for, nor its decision shows in the API's audit list
    (any filter), /ui/audit or /ui/disputes; llama and the lead above see all three."""
    d = _file(world)
    r = world.call("lead_parent", "POST", f"/v1/disputes/{d}/resolve", json={
        "decision": "denied", "reason": SECRET_DECISION})
    assert r.status_code == 200, r.text
    secrets = (SECRET_WHY, SECRET_WANTS, SECRET_DECISION)
    for who in ("member_other", "lead_other"):
        assert world.call(who, "GET", f"/v1/disputes/{d}").status_code == 403
        for params in ({}, {"action": "dispute.filed"}, {"action": "dispute.resolved"},
                       {"subject": f"dispute:{d}"}, {"limit": 500}):
            r = world.call(who, "GET", "/v1/audit", params=params)
            assert r.status_code == 200
            assert not any(x in r.text for x in secrets), (who, params)
        c = ui_login(world, who)
        for path in ("/ui/audit", "/ui/audit?action=dispute", f"/ui/audit?subject=dispute:{d}",
                     "/ui/disputes"):
            html = ui_get(c, path)
            assert not any(x in html for x in secrets), (who, path)
    for who in ("member_own", "lead_own", "lead_parent", "admin"):
        body = _audit(world, who, subject=f"dispute:{d}")
        assert {a["action"] for a in body["items"]} == {"dispute.filed", "dispute.resolved"}
        assert SECRET_WHY in str(body) and SECRET_WANTS in str(body), who
        html = ui_get(ui_login(world, who), "/ui/audit?action=dispute")
        assert SECRET_WHY in html and SECRET_DECISION in html, who


def test_total_and_pages_count_only_what_the_reader_sees(world: World) -> None:
    """Three llama disputes and two vision ones: vision's member sees exactly its two, with
    ``total`` 2 on every page, and llama's member its three."""
    for k in range(3):
        _file(world, why=f"llama reason {k}")
    for k in range(2):
        _file(world, "lead_other", "vision", why=f"vision reason {k}", wants="more")
    body = _audit(world, "member_other", action="dispute.filed")
    assert body["total"] == 2
    assert sorted(a["reason"] for a in body["items"]) == ["vision reason 0", "vision reason 1"]
    pages = [_audit(world, "member_other", action="dispute.filed", limit=1, offset=k)
             for k in range(3)]
    assert [p["total"] for p in pages] == [2, 2, 2]
    assert [len(p["items"]) for p in pages] == [1, 1, 0]
    assert _audit(world, "member_own", action="dispute.filed")["total"] == 3
    assert _audit(world, "admin", action="dispute.filed")["total"] == 5
    html = ui_get(ui_login(world, "member_other"), "/ui/audit?action=dispute.filed")
    assert "2 entries" in html and "llama reason" not in html


def test_team_entries_org_entries_and_admin_entries(world: World) -> None:
    """A job cancelled in llama is llama's (and the group lead's), not vision's; the
    inventory, org and plans are org-wide; user creation is for admins only."""
    job = world.submit("member_own", command="secret-cmd")["id"]
    assert world.call("member_own", "POST", f"/v1/jobs/{job}/cancel").status_code == 200
    _plan(world)
    for who, sees_job in (("member_own", True), ("lead_parent", True), ("member_other", False),
                          ("lead_other", False), ("admin", True)):
        actions = {(a["action"], a["subject"]) for a in _audit(world, who, limit=500)["items"]}
        assert (("job.cancelled", f"job:{job}") in actions) == sees_job, who
        assert {("inventory.set", "inventory"), ("org.set", "org")} <= actions, who
        assert any(a == "plan.drafted" for a, _ in actions), who
        assert any(a == "user.created" for a, _ in actions) == (who == "admin"), who


def test_scope_is_stored_when_appended(world: World) -> None:
    """Each entry's scope is a stored column decided at append time."""
    d = _file(world)
    job = world.submit("member_own")["id"]
    world.call("member_own", "POST", f"/v1/jobs/{job}/cancel")
    with world.db.session() as s:
        rows = dict(s.execute(text("SELECT subject, scope FROM audit")).all())
    assert rows[f"dispute:{d}"] == f"dispute:{d}"
    assert rows[f"job:{job}"] == "team:llama"
    assert rows["inventory"] == "org" and rows["org"] == "org"
    assert rows["user:member_own"] == "admin"
    with world.db.session() as s:
        from allotment.storage import audit

        req = world.call("lead_own", "POST", "/v1/requests", json={
            "team": "llama", "period": "2026-12", "gpu_type": "a100", "gpus": 4}).json()["id"]
        assert audit.scope_for(s, "request.created", f"request:{req}") == "team:llama"
        assert audit.scope_for(s, "request.created", "request:999999") == "admin"
        assert audit.scope_for(s, "something.new", "thing:1") == "admin"


def test_verify_tells_non_admins_only_ok_and_count(world: World) -> None:
    """With the chain broken at a llama dispute, an admin learns which entry; vision's
    member learns only that it is broken and how many entries there are."""
    _file(world)
    with world.db.session() as s:
        seq = s.execute(text("SELECT seq FROM audit WHERE action = 'dispute.filed'")).scalar()
        s.execute(text("UPDATE audit SET reason = 'edited' WHERE seq = :seq"), {"seq": seq})
    admin = world.call("admin", "GET", "/v1/audit/verify").json()
    other = world.call("member_other", "GET", "/v1/audit/verify").json()
    assert admin["ok"] is False and any(f"entry {seq}" in p for p in admin["problems"])
    assert other["ok"] is False and other["entries"] == admin["entries"]
    assert not any(f"entry {seq}" in p for p in other["problems"])
    html = ui_get(ui_login(world, "member_other"), "/ui/audit")
    assert "Chain broken" in html and f"entry {seq}" not in html
    assert f"entry {seq}" in ui_get(ui_login(world, "admin"), "/ui/audit")
