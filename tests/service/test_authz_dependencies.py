"""Authorisation runs as a dependency, before the body or the path is looked at: a caller
without the role learns nothing about what it sent, or about what exists."""

from __future__ import annotations

from tests.service.conftest import World


def test_a_member_gets_403_for_a_bad_body_to_an_admin_route(world: World) -> None:
    """A malformed body to an admin route: 403 for a member, 422 naming the field for an
    admin."""
    bad = {"name": "x", "role": "emperor"}
    r = world.call("member_own", "POST", "/v1/users", json=bad)
    assert r.status_code == 403 and "needs admin" in r.json()["detail"]
    r = world.call("admin", "POST", "/v1/users", json=bad)
    assert r.status_code == 422 and r.json()["field"] == "role"


def test_a_member_cannot_probe_which_requests_exist(world: World) -> None:
    """A member gets the same 403 for a request that exists and one that does not; a lead
    of another team learns that it exists (404 vs 403), as before."""
    r = world.call("admin", "POST", "/v1/requests", json={
        "team": "llama", "period": "2031-01", "gpu_type": "a100", "gpus": 4})
    assert r.status_code == 201
    real = r.json()["id"]
    got = {rid: world.call("member_own", "PATCH", f"/v1/requests/{rid}", json={"gpus": 2})
           .status_code for rid in (real, 999_999)}
    assert got == {real: 403, 999_999: 403}
    assert world.call("lead_other", "PATCH", f"/v1/requests/{real}",
                      json={"gpus": 2}).status_code == 403
    assert world.call("lead_other", "PATCH", "/v1/requests/999999",
                      json={"gpus": 2}).status_code == 404


def test_another_team_gets_403_before_its_body_is_read(world: World) -> None:
    """Samples with a bad body for another team's job: 403, not a 422 about the body."""
    job = world.submit("member_own")["id"]
    bad = {"samples": [{"util_pct": 500}]}
    assert world.call("member_other", "POST", f"/v1/jobs/{job}/samples",
                      json=bad).status_code == 403
    assert world.call("member_own", "POST", f"/v1/jobs/{job}/samples",
                      json=bad).status_code == 422
