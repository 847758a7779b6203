"""Launch reservations under attack: what a user or an insider sent to a live ``allot up``
that it got wrong, each a test first (``governance.reservations`` has the rules)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from allotment.storage.models import AuditRow, ReservationRow
from tests.service.conftest import T0, World


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


GOOD = {"team": "llama", "gpus": 2, "start": iso(T0 + 86400), "hours": 4, "reason": "x"}


def count(w: World, model: Any) -> int:
    with w.db.session() as s:
        return int(s.execute(select(func.count()).select_from(model)).scalar_one())


@pytest.mark.parametrize(("case", "fields", "field"), [
    # the end (start + hours) is past what a date can say: was a 500 (ValueError in iso)
    ("ends in year 10000", {"start": "9999-12-31T23:00:00Z", "hours": 48}, "start"),
    ("ends in year 10000 (an offset)", {"start": "9999-12-31T23:59:59-14:00"}, "start"),
    ("named, ends in year 10000", {"start": "9999-12-31T23:59:59Z", "name": "far"}, "start"),
    # before year 1 in UTC: was a 500 (the "in the past" message could not print it)
    ("year 1 with an offset", {"start": "0001-01-01T00:00:00+01:00"}, "start"),
    # the window is empty (start + hours == start in floating point): was stored
    ("hours 1e-300", {"hours": 1e-300}, "hours"),
    ("hours 5e-324", {"hours": 5e-324}, "hours"),
    # path segments: "/v1/reservations/.." is normalised away by every client, so such a
    # reservation could not be read, approved or cancelled by the CLI or the dashboard
    ("name ..", {"name": ".."}, "name"),
    ("name .", {"name": "."}, "name"),
])
def test_bad_times_and_names_are_a_422_naming_the_field(world: World, case: str,
                                                        fields: dict[str, Any],
                                                        field: str) -> None:
    before = count(world, ReservationRow), count(world, AuditRow)
    r = world.call("lead_own", "POST", "/v1/reservations", json={**GOOD, **fields})
    assert (r.status_code, r.json().get("field")) == (422, field), (case, r.text)
    assert (count(world, ReservationRow), count(world, AuditRow)) == before


def test_a_dot_name_cannot_be_made_through_the_dashboard(world: World) -> None:
    from tests.service.dashboard_login import ORIGIN, csrf_on, ui_login

    lead = ui_login(world, "lead_own")
    data = {**{k: str(v) for k, v in GOOD.items()}, "gpu_type": "a100", "name": "..",
            "csrf": csrf_on(lead, "/ui/reservations")}
    r = lead.post("/ui/reservations", data=data, headers={"Origin": ORIGIN})
    assert r.status_code == 422 and 'id="e-name"' in r.text, r.text[-500:]
    data["start"] = "9999-12-31T23:59:59Z"
    data["name"] = "far"
    r = lead.post("/ui/reservations", data=data, headers={"Origin": ORIGIN})
    assert r.status_code == 422 and 'id="e-start"' in r.text
    assert count(world, ReservationRow) == 0


def test_an_approve_racing_a_cancel_never_revives_a_cancelled_reservation(
        world: World) -> None:
    """An admin approves while a lead of the team cancels, at the same moment, 12 times:
    whatever the order, the reservation ends cancelled (a cancelled one is never approved),
    neither side gets a 5xx, and the cancel's audit entry says what it cancelled (an
    approved one, if the approval came first). On PostgreSQL both read the row before
    either takes the audit lock: the approval overwrote the cancellation, or the two
    deadlocked (a 500)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from tests.service.conftest import LiveServer

    names = [f"race{k}" for k in range(12)]
    for k, name in enumerate(names):  # 12 GPUs: beyond llama's 8, so pending
        r = world.call("lead_own", "POST", "/v1/reservations", json={
            **GOOD, "gpus": 12, "name": name, "start": iso(T0 + (k + 1) * 86400)})
        assert r.json()["status"] == "pending", r.text
    codes: dict[str, list[tuple[str, int]]] = {n: [] for n in names}
    with LiveServer(world.client.app) as server:
        def act(job: tuple[str, str, threading.Barrier]) -> None:
            name, what, barrier = job
            who, method, path = (("admin", "POST", f"/v1/reservations/{name}/approve")
                                 if what == "approve" else
                                 ("lead_own", "DELETE", f"/v1/reservations/{name}"))
            with httpx.Client(base_url=server.url, timeout=60, headers=world.h(who)) as c:
                barrier.wait()
                codes[name].append((what, c.request(method, path).status_code))

        jobs = []
        for name in names:
            barrier = threading.Barrier(2)
            jobs += [(name, "approve", barrier), (name, "cancel", barrier)]
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(act, jobs))
    items = {x["name"]: x for x in world.call(
        "admin", "GET", "/v1/reservations", params={"limit": 100}).json()["items"]}
    audit = [a for a in reversed(world.call("admin", "GET", "/v1/audit",
                                            params={"limit": 500}).json()["items"])]
    for name in names:
        got = dict(codes[name])
        assert got["cancel"] == 200 and got["approve"] in (200, 409), (name, codes[name])
        assert items[name]["status"] == "cancelled", (name, codes[name], items[name])
        steps = [(a["action"], a["data"].get("was")) for a in audit
                 if a["subject"] == f"reservation:{name}"][1:]
        want = ([("reservation.approved", None), ("reservation.cancelled", "approved")]
                if got["approve"] == 200 else [("reservation.cancelled", "pending")])
        assert steps == want, (name, codes[name], steps)


def test_reservations_are_counted_in_the_whole_nodes_the_scheduler_holds(
        world: World) -> None:
    """2 nodes of 8 a100. The scheduler holds whole nodes for a reservation, one node each
    for three overlapping reservations of 4: the third got no node and its gang waited
    forever beside 4 free GPUs ("waiting for 4 free GPUs on its nodes"). So the third is
    refused, naming the whole nodes; the two accepted ones' gangs both start at the
    start."""
    from allotment.backends.fake import FakeBackend
    from tests.service.test_reservations import HOUR, loop_for

    fb = FakeBackend()
    loop = loop_for(world, fb, 30)
    start = T0 + HOUR
    for who, team, name in (("lead_own", "llama", "l1"), ("lead_other", "vision", "v1")):
        r = world.call(who, "POST", "/v1/reservations", json={
            **GOOD, "team": team, "gpus": 4, "name": name, "start": iso(start), "hours": 2})
        assert r.status_code == 201 and r.json()["status"] == "approved", r.text
    r = world.call("lead_own", "POST", "/v1/reservations", json={
        **GOOD, "gpus": 4, "name": "l2", "start": iso(start + HOUR), "hours": 2})
    assert r.status_code == 409, r.text
    detail = r.json()["detail"]
    assert "l1" in detail and "v1" in detail and "whole nodes of 8" in detail, detail
    assert "need 24 of the 16 a100 GPUs, 8 GPUs short" in detail, detail
    assert count(world, ReservationRow) == 2
    gangs = [world.submit("member_own", gpus=4, reservation="l1")["id"],
             world.submit("member_other", team="vision", gpus=4, reservation="v1")["id"]]
    while world.clock() < start + 60:
        loop.tick()
        world.clock.advance(10)
    for job in gangs:
        body = world.call("admin", "GET", f"/v1/jobs/{job}").json()
        assert body["state"] == "running", body["reason"]


def test_the_dashboard_shows_the_latest_reservations_past_500(world: World) -> None:
    """501 reservations (a year or two of launches): the page showed the first 500 by
    start, so the newest, pending one was not on it and an admin could not approve it
    there. It shows the latest 500, by start, and says how many there are."""
    from allotment.storage import reservations as stored
    from tests.service.dashboard_login import ui_get, ui_login

    with world.db.session() as s:
        for k in range(501):
            stored.add(s, name=f"old{k}", team="llama", gpu_type="a100", gpus=1,
                       start_time=T0 - 86400 * (600 - k), end_time=T0 - 86400 * (600 - k) + 60,
                       reason="past", status=stored.APPROVED, requested_by="lead_own",
                       approved_by="auto", created_at=T0 - 86400 * 700, impact={})
    r = world.call("lead_own", "POST", "/v1/reservations", json={
        **GOOD, "gpus": 12, "name": "late"})
    assert r.json()["status"] == "pending", r.text
    html = ui_get(ui_login(world, "admin"), "/ui/reservations")
    assert "Approve reservation late" in html
    assert "502 reservation(s)" in html and 'id="resv-old0"' not in html
    assert html.index('id="resv-old500"') < html.index('id="resv-late"')


def test_an_approved_reservation_that_ended_is_history_not_cancellable(world: World) -> None:
    """Once its window is over an approved reservation happened: cancelling it then
    (409, nothing written) would make the calendar say that a launch which ran was
    cancelled; the dashboard offers no Cancel for it. A pending one that ended may still
    be cancelled (tidying up)."""
    from tests.service.dashboard_login import ui_get, ui_login

    r = world.call("lead_own", "POST", "/v1/reservations", json={**GOOD, "name": "done"})
    assert r.json()["status"] == "approved"
    r = world.call("lead_own", "POST", "/v1/reservations", json={
        **GOOD, "gpus": 12, "name": "stale", "start": iso(T0 + 3 * 86400)})
    assert r.json()["status"] == "pending"
    world.clock.advance(4 * 86400)
    audits = count(world, AuditRow)
    for who in ("lead_own", "admin"):
        r = world.call(who, "DELETE", "/v1/reservations/done")
        assert r.status_code == 409 and "ended at" in r.json()["detail"], r.text
    assert count(world, AuditRow) == audits
    assert world.call("admin", "GET", "/v1/reservations/done").json()["status"] == "approved"
    html = ui_get(ui_login(world, "lead_own"), "/ui/reservations")
    assert "Cancel reservation done" not in html and "Cancel reservation stale" in html
    r = world.call("lead_own", "DELETE", "/v1/reservations/stale")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"


@pytest.mark.parametrize("hours", ["nan", "inf", "-inf", "1e309"])
def test_allot_reserve_with_hours_not_finite_says_so(world: World, hours: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """``allot reserve --hours nan`` printed a Python traceback ("Out of range float values
    are not JSON compliant"); it is one line naming hours, exit status 2, nothing stored."""
    from typer.testing import CliRunner

    from allotment.cli.main import app as cli
    from tests.service.conftest import LiveServer

    with LiveServer(world.client.app) as srv:
        monkeypatch.setenv("ALLOTMENT_URL", srv.url)
        monkeypatch.setenv("ALLOTMENT_TOKEN", world.tokens["lead_own"])
        out = CliRunner().invoke(cli, ["reserve", "--team", "llama", "--gpus", "1", "--start",
                                       iso(T0 + 86400), "--hours", hours, "--reason", "x"])
    assert out.exit_code == 2, (out.output, out.exception)
    assert "hours" in out.output and "finite" in out.output, out.output
    assert "Traceback" not in out.output
    assert count(world, ReservationRow) == 0


def test_allot_submit_with_a_time_limit_not_finite_says_so(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same for ``allot submit --reservation NAME --time-limit-s nan``: one line naming
    the field, exit status 2, no job."""
    from typer.testing import CliRunner

    from allotment.cli.main import app as cli
    from allotment.storage.models import JobRow
    from tests.service.conftest import LiveServer

    assert world.call("lead_own", "POST", "/v1/reservations", json={
        **GOOD, "name": "flag"}).status_code == 201
    with LiveServer(world.client.app) as srv:
        monkeypatch.setenv("ALLOTMENT_URL", srv.url)
        monkeypatch.setenv("ALLOTMENT_TOKEN", world.tokens["member_own"])
        out = CliRunner().invoke(cli, ["submit", "--team", "llama", "--gpus", "1",
                                       "--reservation", "flag", "--time-limit-s", "nan",
                                       "--", "x"])
    assert out.exit_code == 2, (out.output, out.exception)
    assert "time_limit_s" in out.output and "finite" in out.output, out.output
    assert count(world, JobRow) == 0


def test_a_default_name_always_fits_the_64_characters_of_a_name(world: World) -> None:
    """A team with a long name (up to 128 characters) whose lead asked and cancelled 100
    times at the same minute: the default name ``<team>-<start>-<k>`` grew to 65
    characters, past the column (a 500 on PostgreSQL) and past what a path may name (on
    SQLite stored, but never readable or cancellable). It stays within 64."""
    from allotment.storage import repo
    from allotment.storage import reservations as stored

    team = "t" * 60
    org = [{"name": "research", "children": [
        {"name": "llama", "guaranteed": {"a100": 8}}, {"name": team}]}]
    with world.db.session() as s:
        repo.set_org(s, {"org": org}, "test", world.clock())
        _, token = repo.create_user(s, "longlead", "lead", team, world.clock())
    world.tokens["longlead"] = token
    body = {**GOOD, "team": team, "gpus": 1}
    r = world.call("longlead", "POST", "/v1/reservations", json=body)
    assert r.status_code == 201, r.text
    base = r.json()["name"]
    with world.db.session() as s:  # 99 more at the same minute, cancelled
        stored.get(s, base).status = stored.CANCELLED
        for k in range(2, 101):
            stored.add(s, name=f"{base}-{k}", team=team, gpu_type="a100", gpus=1,
                       start_time=T0 + 86400, end_time=T0 + 90000, reason="x",
                       status=stored.CANCELLED, requested_by="longlead", approved_by=None,
                       created_at=T0, impact={})
    r = world.call("longlead", "POST", "/v1/reservations", json=body)
    assert r.status_code == 201, r.text
    name = r.json()["name"]
    assert len(name) <= 64, name
    got = world.call("longlead", "DELETE", f"/v1/reservations/{name}")
    assert got.status_code == 200 and got.json()["status"] == "cancelled", got.text


def test_a_request_racing_a_reorg_that_removes_its_team_is_never_left_open(
        world: World) -> None:
    """vision is removed (PUT /v1/org) while its lead's requests arrive: each request is
    refused (422: not a team) or stored before the removal and cancelled by it; none is
    left pending or approved for a team that is gone (the loop would free GPUs for it). A
    request checked the team before it took the audit lock, then wrote after the
    reorganisation had committed."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from tests.service.conftest import LiveServer

    org = {"org": [{"name": "research", "children": [
        {"name": "llama", "guaranteed": {"a100": 8}}]},
        {"name": "platform", "children": [{"name": "infra"}]}]}
    for attempt in range(3):
        go = threading.Barrier(9)
        with LiveServer(world.client.app) as server:
            def ask(k: int, go: threading.Barrier = go, attempt: int = attempt) -> int:
                who = "admin" if k == 0 else "lead_other"
                with httpx.Client(base_url=server.url, timeout=60, headers=world.h(who)) as c:
                    go.wait()
                    if k == 0:
                        return c.put("/v1/org", json=org).status_code
                    return c.post("/v1/reservations", json={
                        **GOOD, "team": "vision", "gpus": 1, "name": f"r{attempt}-{k}",
                        "start": iso(T0 + (attempt * 10 + k) * 86400)}).status_code

            with ThreadPoolExecutor(9) as pool:
                codes = list(pool.map(ask, range(9)))
        assert codes[0] == 200 and set(codes[1:]) <= {201, 403, 422}, codes
        items = world.call("admin", "GET", "/v1/reservations",
                           params={"limit": 500}).json()["items"]
        left = [(x["name"], x["status"]) for x in items if x["team"] == "vision"
                and x["status"] != "cancelled"]
        assert left == [], (attempt, codes, left)
        # vision again, for the next attempt
        r = world.call("admin", "PUT", "/v1/org", json={"org": [
            {"name": "research", "children": [{"name": "llama", "guaranteed": {"a100": 8}},
                                              {"name": "vision", "guaranteed": {"a100": 8}}]},
            {"name": "platform", "children": [{"name": "infra"}]}]})
        assert r.status_code == 200, r.text


def test_a_job_kept_off_reserved_gpus_is_told_so(world: World) -> None:
    """vision's 16-GPU job, preempted so that llama's reservation of 8 is free by its
    start, waits: its reason said "waiting for 16 free a100 GPUs (free now: 8)" while 8 more
    stood free, held, with no word of the reservation. It names the reservation."""
    from allotment.backends.fake import FakeBackend
    from tests.service.test_reservations import HOUR, loop_for

    loop = loop_for(world, FakeBackend(), 30)
    start = T0 + HOUR
    r = world.call("lead_own", "POST", "/v1/reservations", json={
        **GOOD, "gpus": 8, "name": "flag", "start": iso(start), "hours": 2})
    assert r.json()["status"] == "approved", r.text
    job = world.submit("member_other", team="vision", gpus=16)["id"]
    assert loop.tick().admitted == [job]
    world.clock.advance(start - 20 - world.clock())
    for _ in range(4):
        loop.tick()
        world.clock.advance(5)
    body = world.call("member_other", "GET", f"/v1/jobs/{job}").json()
    assert body["state"] == "pending", body
    assert "held for launch reservation flag" in body["reason"], body["reason"]
