"""Every route x every role x own/other team answers with exactly the expected status."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from tests.service.conftest import World

WHO = ["anon", "member_own", "lead_own", "member_other", "lead_other", "lead_parent", "admin"]
_n = itertools.count()


def _job(w: World) -> int:
    return int(w.submit("admin")["id"])


def _period() -> str:
    """A period of its own for each request (one request per team, period and GPU type)."""
    n = next(_n)
    return f"{2030 + n // 12}-{n % 12 + 1:02d}"


def _request(w: World) -> int:
    r = w.call("admin", "POST", "/v1/requests", json={
        "team": "llama", "period": _period(), "gpu_type": "a100", "gpus": 8})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _plan(w: World) -> int:
    r = w.call("admin", "POST", "/v1/plans", json={"period": "2026-12"})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _dispute(w: World) -> int:
    plan = _plan(w)
    r = w.call("lead_own", "POST", "/v1/disputes", json={
        "team": "llama", "subject_kind": "plan", "subject_id": str(plan),
        "wants": "8 more GPUs", "why": "launch in January"})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _user_id(w: World) -> int:
    """A fresh member (so each role's call acts on a user of its own)."""
    r = w.call("admin", "POST", "/v1/users", json={"name": f"t{next(_n)}", "role": "member",
                                                   "team": "llama"})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _token_id(w: World) -> int:
    r = w.call("admin", "POST", f"/v1/users/{_user_id(w)}/tokens")
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _start() -> str:
    """A window of its own for each reservation (so none conflicts with another)."""
    return f"{2030 + next(_n) // 300}-01-01T00:00:00Z".replace(
        "-01-01", f"-{next(_n) % 12 + 1:02d}-{next(_n) % 28 + 1:02d}")


RESV = {"team": "llama", "gpus": 2, "hours": 1, "reason": "launch"}


def _reservation(w: World, gpus: int = 2) -> str:
    """A reservation of llama: approved at once (within its guarantee of 8), else pending."""
    r = w.call("admin", "POST", "/v1/reservations", json={
        **RESV, "gpus": gpus, "start": _start(), "name": f"r{next(_n)}"})
    assert r.status_code == 201, r.text
    return str(r.json()["name"])


Make = Callable[[World], tuple[str, dict[str, Any] | None]]
INV = {"nodes": [{"name": "n1", "gpu_type": "a100", "gpus": 8, "rack": 0},
                 {"name": "n2", "gpu_type": "a100", "gpus": 8, "rack": 1}]}
ORG = {"org": [{"name": "research", "children": [
    {"name": "llama", "guaranteed": {"a100": 8}}, {"name": "vision", "guaranteed": {"a100": 8}}]},
    {"name": "platform", "children": [{"name": "infra"}]}]}
JOB = {"team": "llama", "gpu_type": "a100", "gpus": 1, "command": "sleep 1"}
REQ = {"team": "llama", "period": "2026-12", "gpu_type": "a100", "gpus": 4}
DISPUTE = {"team": "llama", "subject_kind": "preemption", "subject_id": "1", "wants": "x",
           "why": "y"}
ALL_OK = 200

# (method, route, make(world) -> (path, body), {who: status}); missing roles: default
ROUTES: list[tuple[str, str, Make, dict[str, int]]] = [
    ("GET", "/v1/me", lambda w: ("/v1/me", None), {}),
    ("GET", "/v1/users", lambda w: ("/v1/users", None), {"*": 403, "admin": 200}),
    ("POST", "/v1/users", lambda w: ("/v1/users", {
        "name": f"u{next(_n)}", "role": "member", "team": "llama"}), {"*": 403, "admin": 201}),
    ("GET", "/v1/users/{user_id}/tokens", lambda w: (f"/v1/users/{_user_id(w)}/tokens", None),
     {"*": 403, "admin": 200}),
    ("POST", "/v1/users/{user_id}/tokens", lambda w: (f"/v1/users/{_user_id(w)}/tokens", None),
     {"*": 403, "admin": 201}),
    ("DELETE", "/v1/tokens/{token_id}", lambda w: (f"/v1/tokens/{_token_id(w)}", None),
     {"*": 403, "admin": 204}),
    ("POST", "/v1/users/{user_id}/disable", lambda w: (f"/v1/users/{_user_id(w)}/disable", None),
     {"*": 403, "admin": 200}),
    ("POST", "/v1/users/{user_id}/enable", lambda w: (f"/v1/users/{_user_id(w)}/enable", None),
     {"*": 403, "admin": 200}),
    ("GET", "/v1/inventory", lambda w: ("/v1/inventory", None), {}),
    ("PUT", "/v1/inventory", lambda w: ("/v1/inventory", INV), {"*": 403, "admin": 200}),
    ("GET", "/v1/org", lambda w: ("/v1/org", None), {}),
    ("PUT", "/v1/org", lambda w: ("/v1/org", ORG), {"*": 403, "admin": 200}),
    ("GET", "/v1/org/history", lambda w: ("/v1/org/history", None), {"*": 403, "admin": 200}),
    ("POST", "/v1/jobs", lambda w: ("/v1/jobs", JOB),
     {"*": 201, "member_other": 403, "lead_other": 403}),
    ("GET", "/v1/jobs", lambda w: ("/v1/jobs", None), {}),
    ("GET", "/v1/jobs/{job_id}", lambda w: (f"/v1/jobs/{_job(w)}", None),
     {"member_other": 403, "lead_other": 403}),
    ("POST", "/v1/jobs/{job_id}/cancel", lambda w: (f"/v1/jobs/{_job(w)}/cancel", None),
     {"member_other": 403, "lead_other": 403}),
    ("GET", "/v1/jobs/{job_id}/log", lambda w: (f"/v1/jobs/{_job(w)}/log", None),
     {"*": 404, "member_other": 403, "lead_other": 403}),
    ("POST", "/v1/jobs/{job_id}/samples", lambda w: (f"/v1/jobs/{_job(w)}/samples", {
        "samples": [{"util_pct": 0}]}), {"*": 409, "member_other": 403, "lead_other": 403}),
    ("GET", "/v1/queue", lambda w: ("/v1/queue", None), {}),
    ("GET", "/v1/usage", lambda w: ("/v1/usage", None), {}),
    ("GET", "/v1/usage/history", lambda w: ("/v1/usage/history", None), {}),
    ("GET", "/v1/requests", lambda w: ("/v1/requests", None), {}),
    ("POST", "/v1/requests", lambda w: ("/v1/requests", {**REQ, "period": _period()}),
     {"*": 403, "lead_own": 201, "lead_parent": 201, "admin": 201}),
    ("PATCH", "/v1/requests/{request_id}", lambda w: (f"/v1/requests/{_request(w)}",
                                                      {"gpus": 6}),
     {"*": 403, "lead_own": 200, "lead_parent": 200, "admin": 200}),
    ("DELETE", "/v1/requests/{request_id}", lambda w: (f"/v1/requests/{_request(w)}", None),
     {"*": 403, "lead_own": 204, "lead_parent": 204, "admin": 204}),
    ("POST", "/v1/reservations", lambda w: ("/v1/reservations", {
        **RESV, "start": _start(), "name": f"r{next(_n)}"}),
     {"*": 403, "lead_own": 201, "lead_parent": 201, "admin": 201}),
    ("GET", "/v1/reservations", lambda w: ("/v1/reservations", None), {}),
    ("GET", "/v1/reservations/{name}",
     lambda w: (f"/v1/reservations/{_reservation(w)}", None), {}),
    ("POST", "/v1/reservations/{name}/approve",
     lambda w: (f"/v1/reservations/{_reservation(w, 10)}/approve", None),
     {"*": 403, "admin": 200}),
    ("DELETE", "/v1/reservations/{name}", lambda w: (f"/v1/reservations/{_reservation(w)}", None),
     {"*": 403, "lead_own": 200, "lead_parent": 200, "admin": 200}),
    ("POST", "/v1/plans", lambda w: ("/v1/plans", {"period": "2026-12"}),
     {"*": 403, "admin": 201}),
    ("GET", "/v1/plans", lambda w: ("/v1/plans", None), {}),
    ("GET", "/v1/plans/{plan_id}", lambda w: (f"/v1/plans/{_plan(w)}", None), {}),
    ("POST", "/v1/plans/compare", lambda w: ("/v1/plans/compare", {"a": _plan(w), "b": _plan(w)}),
     {}),
    ("POST", "/v1/plans/{plan_id}/publish", lambda w: (f"/v1/plans/{_plan(w)}/publish", None),
     {"*": 403, "admin": 200}),
    ("POST", "/v1/disputes", lambda w: ("/v1/disputes", {**DISPUTE, "subject_id": str(_job(w))}),
     {"*": 403, "lead_own": 201, "lead_parent": 201, "admin": 201}),
    ("GET", "/v1/disputes", lambda w: ("/v1/disputes", None), {}),
    ("GET", "/v1/disputes/{dispute_id}", lambda w: (f"/v1/disputes/{_dispute(w)}", None),
     {"member_other": 403, "lead_other": 403}),
    ("POST", "/v1/disputes/{dispute_id}/resolve",
     lambda w: (f"/v1/disputes/{_dispute(w)}/resolve", {"decision": "denied", "reason": "no"}),
     {"*": 403, "lead_parent": 200, "admin": 200}),
    ("GET", "/v1/audit", lambda w: ("/v1/audit", None), {}),
    ("GET", "/v1/audit/verify", lambda w: ("/v1/audit/verify", None), {}),
]


def expected(table: dict[str, int], who: str) -> int:
    if who == "anon":
        return 401
    return table.get(who, table.get("*", ALL_OK))


@pytest.mark.parametrize("route", ROUTES, ids=[f"{m} {p}" for m, p, _, _ in ROUTES])
def test_route_by_role(world: World, route: tuple[str, str, Make, dict[str, int]]) -> None:
    """Each role gets exactly the status the matrix says, on its own and another team."""
    method, _, make, table = route
    got = {}
    for who in WHO:
        path, body = make(world)
        r = world.call(who, method, path, json=body) if body is not None else \
            world.call(who, method, path)
        got[who] = r.status_code
    assert got == {who: expected(table, who) for who in WHO}


def test_matrix_covers_every_route(world: World) -> None:
    """A new route without a row in the matrix fails here."""
    paths = world.client.get("/openapi.json").json()["paths"]
    served = {(m.upper(), p) for p, ops in paths.items() if p.startswith("/v1") for m in ops}
    assert served == {(m, p) for m, p, _, _ in ROUTES}


def test_other_team_never_sees_commands(world: World) -> None:
    """Listing jobs as another team's member shows none of the first team's jobs."""
    world.submit("member_own", command="secret-training --key 42")
    own = world.call("member_own", "GET", "/v1/jobs").json()
    other = world.call("member_other", "GET", "/v1/jobs").json()
    assert [j["command"] for j in own["items"]] == ["secret-training --key 42"]
    assert other["items"] == [] and other["total"] == 0
    r = world.call("member_other", "GET", "/v1/jobs", params={"team": "llama"})
    assert r.status_code == 403
