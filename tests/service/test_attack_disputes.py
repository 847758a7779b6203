"""Found by an adversarial re-check of issue 11: a preemption dispute is about a job of
the team that files it. A lead of llama used to file one about vision's job (201), and
"no job" against an existing job of another team told it which ids exist."""

from __future__ import annotations

from tests.service.conftest import World


def test_preemption_dispute_about_another_teams_job_is_refused(world: World) -> None:
    theirs = world.submit("member_other", team="vision")["id"]
    mine = world.submit("member_own")["id"]
    body = {"team": "llama", "subject_kind": "preemption", "wants": "w", "why": "y"}
    r = world.call("lead_own", "POST", "/v1/disputes", json={**body, "subject_id": str(theirs)})
    missing = world.call("lead_own", "POST", "/v1/disputes",
                         json={**body, "subject_id": "999999"})
    assert r.status_code == 422, (r.status_code, r.text[:200])
    assert r.json()["field"] == "subject_id"
    # the same answer as for a job that does not exist: no oracle for other teams' ids
    assert r.json()["detail"].replace(str(theirs), "N") == \
        missing.json()["detail"].replace("999999", "N")
    ok = world.call("lead_own", "POST", "/v1/disputes", json={**body, "subject_id": str(mine)})
    assert ok.status_code == 201, ok.text
    assert world.call("admin", "GET", "/v1/disputes").json()["total"] == 1
