"""Found by an adversarial re-check of issue 11: ids and counters in paths and queries.
An id is its ASCII digits: ``1_0`` is not job 10, nor ``+1``, `` 1`` or ``1.0`` job 1
(a careless ``allot cancel 1_0`` or a hand-typed URL must not act on another job)."""

from __future__ import annotations

import pytest

from tests.service.conftest import World
from tests.service.dashboard_login import ui_login

LAX = ["1_0", "+1", "%201", "1%20", "1.0", "1%0A", "%091"]


@pytest.mark.parametrize("text", LAX)
def test_path_ids_are_plain_digits(world: World, text: str) -> None:
    for _ in range(10):
        world.submit("member_own")
    for path in [f"/v1/jobs/{text}", f"/v1/jobs/{text}/log"]:
        r = world.call("member_own", "GET", path)
        assert r.status_code == 422, (path, r.status_code, r.text[:200])
        assert r.json()["field"] == "job_id"
    r = world.call("member_own", "POST", f"/v1/jobs/{text}/cancel")
    assert r.status_code == 422, (r.status_code, r.text[:200])
    assert all(j["state"] != "cancelled" for j in
               world.call("member_own", "GET", "/v1/jobs").json()["items"])
    c = ui_login(world, "member_own")
    assert c.get(f"/ui/jobs/{text}").status_code == 422


@pytest.mark.parametrize("text", ["1_0", "+1", "1.0", "%201"])
def test_query_counters_are_plain_digits(world: World, text: str) -> None:
    for path in [f"/v1/jobs?offset={text}", f"/v1/jobs?limit={text}",
                 f"/v1/audit?offset={text}"]:
        r = world.call("admin", "GET", path)
        assert r.status_code == 422, (path, r.status_code, r.text[:200])
