"""Launch reservations in the service (``governance.reservations``): the lifecycle through
the API and the CLI (auto-approved within the guarantee, pending with its impact beyond it
then approved by an admin, conflicts and infeasible requests refused with the reason,
cancelled), jobs naming one, bad input, reorganisations, the loop loading them, and a gang
starting on time on the fake backend with a test clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from allotment.backends.fake import FakeBackend
from allotment.cli.main import app as cli
from allotment.governance.reservations import impact
from allotment.scheduler.config import SchedulerConfig
from allotment.service.loop import LoopConfig, SchedulerLoop
from allotment.storage.models import AuditRow, JobRow, ReservationRow
from tests.service.conftest import T0, LiveServer, World

runner = CliRunner()
HOUR = 3600.0


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def reserve(w: World, who: str = "lead_own", **kw: Any) -> Any:
    body = {"team": "llama", "gpus": 8, "start": iso(T0 + 86400), "hours": 48,
            "reason": "flagship launch", **kw}
    return w.call(who, "POST", "/v1/reservations", json=body)


def audit_of(w: World, name: str) -> list[tuple[str, str, str]]:
    items = w.call("admin", "GET", "/v1/audit", params={"limit": 500}).json()["items"]
    return [(a["action"], a["actor"], a["reason"]) for a in reversed(items)
            if a["subject"] == f"reservation:{name}"]


def count(w: World, model: Any) -> int:
    with w.db.session() as s:
        return int(s.execute(select(func.count()).select_from(model)).scalar_one())


def loop_for(w: World, fb: FakeBackend, grace_s: float = 30) -> SchedulerLoop:
    sched = SchedulerConfig(grace_s=grace_s, min_runtime_s=0)
    return SchedulerLoop(w.db, fb, LoopConfig(scheduler=sched), clock=w.clock)


# -- the lifecycle through the API ----------------------------------------------------------
def test_within_the_guarantee_is_approved_at_once(world: World) -> None:
    """8 GPUs for llama (guarantee 8): approved by "auto"; the JSON has every key; the type
    may be left out (one type); the default name is team and start; both steps audited."""
    r = reserve(world)
    assert r.status_code == 201, r.text
    got = r.json()
    assert got == {
        "name": "llama-" + datetime.fromtimestamp(T0 + 86400, UTC).strftime("%Y%m%d%H%M"),
        "team": "llama", "gpu_type": "a100", "gpus": 8, "start": iso(T0 + 86400),
        "hours": 48.0, "end": iso(T0 + 86400 + 48 * HOUR), "reason": "flagship launch",
        "status": "approved", "requested_by": "lead_own", "approved_by": "auto",
        "impact": got["impact"]}
    assert got["impact"]["beyond_guarantee"] == 0 and got["impact"]["shrinks"] == {}
    assert world.call("member_other", "GET", f"/v1/reservations/{got['name']}").json() == got
    listed = world.call("member_other", "GET", "/v1/reservations").json()
    assert listed["total"] == 1 and listed["items"] == [got]
    assert audit_of(world, got["name"]) == [
        ("reservation.requested", "lead_own", "flagship launch"),
        ("reservation.approved", "auto",
         "auto-approved: fits llama's guarantee of 8 a100 GPUs")]


def test_beyond_the_guarantee_waits_with_its_impact_then_an_admin_approves(
        world: World) -> None:
    """12 GPUs for llama (guarantee 8, no unguaranteed capacity): pending, vision's
    guarantee shrinks by 4 over the window; a lead cannot approve; an admin can, once."""
    r = reserve(world, gpus=12, name="big-launch")
    assert r.status_code == 201, r.text
    got = r.json()
    assert (got["status"], got["approved_by"]) == ("pending", None)
    imp = got["impact"]
    assert (imp["beyond_guarantee"], imp["team_guarantee"], imp["from_unguaranteed"],
            imp["shrinks"]) == (4, 8, 0, {"vision": 4})
    assert "vision's guarantee shrinks by 4 (8 -> 4)" in imp["text"]
    assert iso(T0 + 86400) in imp["text"]
    assert world.call("lead_own", "POST", "/v1/reservations/big-launch/approve"
                      ).status_code == 403
    r = world.call("admin", "POST", "/v1/reservations/big-launch/approve")
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["approved_by"]) == ("approved", "root")
    r = world.call("admin", "POST", "/v1/reservations/big-launch/approve")
    assert r.status_code == 409 and "approved, not pending" in r.json()["detail"]
    actions = [(a, who) for a, who, _ in audit_of(world, "big-launch")]
    assert actions == [("reservation.requested", "lead_own"), ("reservation.approved", "root")]
    assert "vision's guarantee shrinks by 4" in audit_of(world, "big-launch")[1][2]


def test_a_conflict_is_refused_naming_the_others_and_the_gpus_short(world: World) -> None:
    """16 a100: llama's 8 (approved) and vision's 6 (pending) overlap a request of 4 for
    vision: refused, both named, 8 GPUs short (each holds whole nodes of 8: 8 + 8 + 8);
    nothing stored. A window after both fits."""
    assert reserve(world, name="llama-launch").status_code == 201
    assert reserve(world, "lead_other", team="vision", gpus=6, name="vision-eval",
                   start=iso(T0 + 86400 + 24 * HOUR), hours=12).status_code == 201
    before = count(world, ReservationRow)
    r = reserve(world, "lead_other", team="vision", gpus=4, name="late",
                start=iso(T0 + 86400 + 30 * HOUR), hours=2)
    assert r.status_code == 409, r.text
    detail = r.json()["detail"]
    assert "llama-launch" in detail and "vision-eval" in detail
    assert "need 24 of the 16 a100 GPUs, 8 GPUs short" in detail
    assert count(world, ReservationRow) == before
    r = reserve(world, "lead_other", team="vision", gpus=4, name="late",
                start=iso(T0 + 86400 + 49 * HOUR), hours=2)
    assert r.status_code == 201, r.text


def test_an_infeasible_request_is_refused_with_the_gpus_short(world: World) -> None:
    """20 GPUs of a type with 16: 409, 4 GPUs short, nothing stored or audited."""
    audits = count(world, AuditRow)
    r = reserve(world, gpus=20)
    assert r.status_code == 409
    assert r.json()["detail"] == ("gpus: 20 a100 GPUs asked but the cluster has 16: "
                                  "4 GPUs short")
    assert count(world, ReservationRow) == 0 and count(world, AuditRow) == audits


def test_cancel_by_a_lead_of_the_team_or_an_admin(world: World) -> None:
    """Another team's lead and a member get 403; the team's lead cancels; again is 409;
    a cancelled one no longer conflicts."""
    assert reserve(world, gpus=16, name="all").status_code == 201
    assert reserve(world, "lead_other", team="vision", gpus=1).status_code == 409
    for who in ("lead_other", "member_own"):
        assert world.call(who, "DELETE", "/v1/reservations/all").status_code == 403
    r = world.call("lead_own", "DELETE", "/v1/reservations/all")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert world.call("admin", "DELETE", "/v1/reservations/all").status_code == 409
    assert world.call("admin", "POST", "/v1/reservations/all/approve").status_code == 409
    assert world.call("lead_own", "DELETE", "/v1/reservations/nope").status_code == 404
    assert reserve(world, "lead_other", team="vision", gpus=1).status_code == 201
    assert [a for a, _, _ in audit_of(world, "all")][-1] == "reservation.cancelled"
    statuses = world.call("member_own", "GET", "/v1/reservations",
                          params={"status": "cancelled"}).json()["items"]
    assert [x["name"] for x in statuses] == ["all"]


def test_a_second_reservation_of_the_team_counts_against_its_guarantee(world: World) -> None:
    """Two overlapping 6-GPU reservations of llama (guarantee 8): the first is approved at
    once, the second waits (4 beyond), taken from vision."""
    assert reserve(world, gpus=6, name="a").json()["status"] == "approved"
    second = reserve(world, gpus=6, name="b", start=iso(T0 + 86400 + HOUR)).json()
    assert second["status"] == "pending"
    assert second["impact"]["beyond_guarantee"] == 4
    assert second["impact"]["shrinks"] == {"vision": 4}


@pytest.mark.parametrize(("case", "args", "want"), [
    ("unguaranteed first, then by guarantee",
     (14, "llama", {"llama": 8, "vision": 6, "infra": 3}, 20, {}),
     {"beyond_guarantee": 6, "team_guarantee": 8, "from_unguaranteed": 3,
      "shrinks": {"infra": 1, "vision": 2}}),
    ("largest remainder",
     (13, "llama", {"llama": 8, "vision": 6, "infra": 3}, 17, {}),
     {"beyond_guarantee": 5, "team_guarantee": 8, "from_unguaranteed": 0,
      "shrinks": {"infra": 2, "vision": 3}}),
    ("remainder tie broken by name",
     (9, "llama", {"llama": 8, "b": 4, "a": 4}, 16, {}),
     {"beyond_guarantee": 1, "team_guarantee": 8, "from_unguaranteed": 0,
      "shrinks": {"a": 1}}),
    ("another team's reservation beyond its guarantee took the free GPUs",
     (10, "llama", {"llama": 8, "vision": 4}, 16, {"vision": 8}),
     {"beyond_guarantee": 2, "team_guarantee": 8, "from_unguaranteed": 0,
      "shrinks": {"vision": 2}}),
    ("within the guarantee", (8, "llama", {"llama": 8, "vision": 8}, 16, {}),
     {"beyond_guarantee": 0, "team_guarantee": 8, "from_unguaranteed": 0, "shrinks": {}}),
])
def test_impact_rule(case: str, args: tuple[Any, ...], want: dict[str, Any]) -> None:
    """The rule of ``impact``, case by case."""
    assert impact(*args) == want, case


def test_concurrent_requests_never_overbook(world: World) -> None:
    """12 clients at once ask for 4 GPUs each over the same window of 16 GPUs on 2 nodes of
    8: exactly 2 are stored (each holds a whole node), the others refused as conflicts
    (each writer checks under the audit lock)."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    with LiveServer(world.client.app) as server:
        def ask(k: int) -> int:
            with httpx.Client(base_url=server.url, timeout=60, headers=world.h("admin")) as c:
                return c.post("/v1/reservations", json={
                    "team": "llama" if k % 2 else "vision", "gpus": 4, "hours": 2,
                    "start": iso(T0 + 86400), "reason": "race", "name": f"race{k}"}
                    ).status_code

        with ThreadPoolExecutor(12) as pool:
            codes = sorted(pool.map(ask, range(12)))
    assert codes == [201] * 2 + [409] * 10, codes
    assert count(world, ReservationRow) == 2


# -- jobs naming a reservation --------------------------------------------------------------
def test_submit_naming_a_reservation_is_checked(world: World) -> None:
    """A job may name an approved or pending reservation of its team that has not ended and
    holds its gang; otherwise 422 naming ``reservation`` and nothing is written. The job's
    JSON shows it."""
    assert reserve(world, gpus=8, name="ok").status_code == 201
    assert reserve(world, gpus=10, name="wait", start=iso(T0 + 10 * 86400)).json()[
        "status"] == "pending"
    assert reserve(world, gpus=2, name="gone", start=iso(T0 + 20 * 86400)).status_code == 201
    assert world.call("lead_own", "DELETE", "/v1/reservations/gone").status_code == 200
    job = world.submit("member_own", gpus=8, reservation="ok")
    assert job["reservation"] == "ok"
    assert world.call("member_own", "GET", f"/v1/jobs/{job['id']}").json()["reservation"] == "ok"
    assert world.submit("member_own", gpus=4, reservation="wait")["reservation"] == "wait"
    assert world.submit("member_own")["reservation"] is None
    jobs = count(world, JobRow)
    for who, team, gpus, name, words in [
            ("member_own", "llama", 1, "nope", "no reservation named 'nope'"),
            ("member_own", "llama", 1, "gone", "was cancelled"),
            ("member_other", "vision", 1, "ok", "belongs to team 'llama'"),
            ("member_own", "llama", 9, "ok", "gang of 9 exceeds the 8 GPUs")]:
        r = world.call(who, "POST", "/v1/jobs", json={
            "team": team, "gpu_type": "a100", "gpus": gpus, "command": "x",
            "reservation": name})
        assert (r.status_code, r.json()["field"]) == (422, "reservation"), r.text
        assert words in r.json()["detail"]
    world.clock.advance(86400 + 48 * HOUR)
    r = world.call("member_own", "POST", "/v1/jobs", json={
        "team": "llama", "gpu_type": "a100", "gpus": 1, "command": "x", "reservation": "ok"})
    assert r.status_code == 422 and "ended at" in r.json()["detail"]
    assert count(world, JobRow) == jobs


# -- bad input ------------------------------------------------------------------------------
GOOD = {"team": "llama", "gpus": 2, "start": iso(T0 + 86400), "hours": 4, "reason": "x"}


def _raw(**fields: str) -> bytes:
    """GOOD with some fields written as raw JSON text (NaN, escapes, huge numbers)."""
    parts = [f'"{k}": {fields.pop(k) if k in fields else json.dumps(v)}'
             for k, v in GOOD.items()]
    parts += [f'"{k}": {v}' for k, v in fields.items()]
    return ("{" + ", ".join(parts) + "}").encode()


@pytest.mark.parametrize(("case", "body", "field"), [
    ("hours NaN", _raw(hours="NaN"), "hours"),
    ("hours Infinity", _raw(hours="Infinity"), "hours"),
    ("hours 1e308", _raw(hours="1e308"), "hours"),
    ("hours 0", _raw(hours="0"), "hours"),
    ("hours over 31 days", _raw(hours="745"), "hours"),
    ("hours as a string", _raw(hours='"4"'), "hours"),
    ("gpus huge", _raw(gpus="99999999999999999999999999999"), "gpus"),
    ("gpus 0", _raw(gpus="0"), "gpus"),
    ("gpus 1.5", _raw(gpus="1.5"), "gpus"),
    ("gpus true", _raw(gpus="true"), "gpus"),
    ("reason lone surrogate", _raw(reason='"launch \\ud800"'), "reason"),
    ("reason empty", _raw(reason='""'), "reason"),
    ("reason blank", _raw(reason='"   "'), "reason"),
    ("team lone surrogate", _raw(team='"ll\\udfffama"'), "team"),
    ("unknown team", _raw(team='"nobody"'), "team"),
    ("unknown GPU type", _raw(gpu_type='"h100"'), "gpu_type"),
    ("start not a date", _raw(start='"next tuesday"'), "start"),
    ("start NUL", _raw(start='"2026-12-01\\u0000"'), "start"),
    ("start in the past", _raw(start=json.dumps(iso(T0 - HOUR))), "start"),
    ("start year 10000", _raw(start='"10000-01-01T00:00:00"'), "start"),
    ("start a number", _raw(start="1795000000"), "start"),
    ("name with a space", _raw(name='"my launch"'), "name"),
    ("name too long", _raw(name=json.dumps("n" * 65)), "name"),
    ("name lone surrogate", _raw(name='"a\\ud800"'), "name"),
    ("unknown field", _raw(priority='"high"'), "priority"),
    ("not JSON", b"{", "body"),
])
def test_bad_input_names_the_field_and_writes_nothing(world: World, case: str, body: bytes,
                                                      field: str) -> None:
    """Each bad request body: 422 naming the field, nothing stored, never a 500."""
    before = count(world, ReservationRow), count(world, AuditRow)
    r = world.client.post("/v1/reservations", content=body, headers={
        **world.h("lead_own"), "content-type": "application/json"})
    assert r.status_code == 422, (case, r.text)
    assert r.json()["field"] == field, (case, r.json())
    assert (count(world, ReservationRow), count(world, AuditRow)) == before


def test_a_64_mib_body_is_refused_unread(world: World) -> None:
    """A 64 MiB request: 413 naming the body, nothing stored."""
    body = b'{"reason": "' + b"x" * (64 << 20) + b'"}'
    r = world.client.post("/v1/reservations", content=body, headers={
        **world.h("lead_own"), "content-type": "application/json"})
    assert (r.status_code, r.json()["field"]) == (413, "body")
    assert count(world, ReservationRow) == 0


def test_bad_names_in_paths_and_queries(world: World) -> None:
    """A path name outside the pattern or a status that is none: 422, never a 500."""
    for path in ("/v1/reservations/a%20b", "/v1/reservations/" + "n" * 65,
                 "/v1/reservations/%ED%A0%80"):
        r = world.call("admin", "GET", path)
        assert r.status_code in (404, 422), (path, r.text)
    r = world.call("admin", "GET", "/v1/reservations", params={"status": "done"})
    assert (r.status_code, r.json()["field"]) == (422, "status.0")
    r = world.call("admin", "GET", "/v1/reservations", params={"limit": 10**12})
    assert r.status_code == 422


# -- the CLI ----------------------------------------------------------------------------------
def test_lifecycle_through_the_cli(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """``allot reserve`` (approved; pending with the impact), ``allot reservations`` (the
    table), ``approve``, ``cancel``, a conflict refused in one line with its reason, and
    ``allot submit --reservation`` then ``allot why``."""
    start = iso(T0 + 86400)
    with LiveServer(world.client.app) as srv:
        monkeypatch.setenv("ALLOTMENT_URL", srv.url)
        monkeypatch.setenv("ALLOTMENT_TOKEN", world.tokens["lead_own"])
        out = runner.invoke(cli, ["reserve", "--team", "llama", "--gpus", "8", "--start", start,
                                  "--hours", "48", "--reason", "flagship", "--name", "flag"])
        assert out.exit_code == 0, out.output
        assert "reservation flag: approved" in out.output and "approved by auto" in out.output
        out = runner.invoke(cli, ["reserve", "--team", "llama", "--gpus", "4", "--gpu-type",
                                  "a100", "--start", iso(T0 + 5 * 86400), "--hours", "2",
                                  "--reason", "eval burst", "--name", "burst"])
        assert out.exit_code == 0, out.output
        assert "reservation burst: pending" not in out.output  # 4 fit again (no overlap)
        out = runner.invoke(cli, ["reserve", "--team", "llama", "--gpus", "12", "--start",
                                  iso(T0 + 9 * 86400), "--hours", "2", "--reason", "big",
                                  "--name", "big"])
        assert out.exit_code == 0, out.output
        assert "reservation big: pending" in out.output
        assert "impact: 4 GPUs beyond llama's guarantee of 8 a100; vision's guarantee " \
               "shrinks by 4 (8 -> 4)" in " ".join(out.output.split())
        out = runner.invoke(cli, ["reserve", "--team", "llama", "--gpus", "10", "--start",
                                  start, "--hours", "1", "--reason", "clash"])
        assert out.exit_code == 2
        assert "conflicts with reservation(s) flag" in out.output
        assert "8 GPUs short" in " ".join(out.output.split())
        out = runner.invoke(cli, ["reservations", "approve", "big"])
        assert out.exit_code == 2 and "needs admin" in out.output
        monkeypatch.setenv("ALLOTMENT_TOKEN", world.tokens["admin"])
        out = runner.invoke(cli, ["reservations", "approve", "big"])
        assert out.exit_code == 0 and "reservation big: approved" in out.output, out.output
        out = runner.invoke(cli, ["reservations", "cancel", "burst"])
        assert out.exit_code == 0 and "reservation burst: cancelled" in out.output
        out = runner.invoke(cli, ["reservations"])
        assert out.exit_code == 0, out.output
        head = [line for line in out.output.splitlines() if "┃" in line]
        assert [c.strip() for c in head[0].split("┃") if c.strip()] == [
            "name", "team", "GPUs", "type", "start", "end", "status"]
        rows = [line.split("│") for line in out.output.splitlines() if "│" in line]
        cells = [[c.strip() for c in row if c.strip()] for row in rows]
        assert cells == [
            ["flag", "llama", "8", "a100", start, iso(T0 + 86400 + 48 * HOUR), "approved"],
            ["burst", "llama", "4", "a100", iso(T0 + 5 * 86400),
             iso(T0 + 5 * 86400 + 2 * HOUR), "cancelled"],
            ["big", "llama", "12", "a100", iso(T0 + 9 * 86400), iso(T0 + 9 * 86400 + 2 * HOUR),
             "approved"]]
        out = runner.invoke(cli, ["reservations", "--status", "approved", "--json"])
        assert [r["name"] for r in json.loads(out.output)["items"]] == ["flag", "big"]
        monkeypatch.setenv("ALLOTMENT_TOKEN", world.tokens["member_own"])
        out = runner.invoke(cli, ["submit", "--team", "llama", "--gpus", "8", "--reservation",
                                  "flag", "--", "python", "launch.py"])
        assert out.exit_code == 0 and "in reservation flag" in out.output, out.output
        jid = out.output.split()[2]
        out = runner.invoke(cli, ["why", jid])
        assert out.exit_code == 0 and "in launch reservation flag" in out.output
        out = runner.invoke(cli, ["submit", "--team", "llama", "--gpus", "8", "--reservation",
                                  "burst", "--", "x"])
        assert out.exit_code == 2 and "reservation: reservation 'burst' was cancelled" \
            in out.output


# -- reorganisations ----------------------------------------------------------------------------
def test_reservations_follow_renames_and_merges(world: World) -> None:
    """llama renamed llm, then llm and vision merged into foundation: the reservations'
    team follows each time, and a job of the new team may name them."""
    assert reserve(world, name="flag").status_code == 201
    assert reserve(world, "lead_other", team="vision", gpus=4, name="eval",
                   start=iso(T0 + 3 * 86400)).status_code == 201
    research = {"name": "research", "children": [
        {"name": "llm", "renamed_from": "llama", "guaranteed": {"a100": 8}},
        {"name": "vision", "guaranteed": {"a100": 8}}]}
    platform = {"name": "platform", "children": [{"name": "infra"}]}
    r = world.call("admin", "PUT", "/v1/org", json={"org": [research, platform]})
    assert r.status_code == 200, r.text
    assert r.json()["moved"]["reservations"] == 1
    assert world.call("admin", "GET", "/v1/reservations/flag").json()["team"] == "llm"
    merged = {"name": "research", "children": [
        {"name": "foundation", "merged_from": ["llm", "vision"], "guaranteed": {"a100": 16}}]}
    r = world.call("admin", "PUT", "/v1/org", json={"org": [merged, platform]})
    assert r.status_code == 200, r.text
    assert r.json()["moved"]["reservations"] == 2
    teams = {x["name"]: x["team"] for x in
             world.call("admin", "GET", "/v1/reservations").json()["items"]}
    assert teams == {"flag": "foundation", "eval": "foundation"}
    job = world.call("admin", "POST", "/v1/jobs", json={
        "team": "foundation", "gpu_type": "a100", "gpus": 8, "command": "x",
        "reservation": "flag"})
    assert job.status_code == 201, job.text


def test_a_removed_teams_reservations_are_cancelled(world: World) -> None:
    """vision removed (no work): its approved reservation is cancelled, so no GPUs are
    freed for a team that is gone; llama's stays approved; the loop no longer holds it."""
    loop = loop_for(world, FakeBackend())
    assert reserve(world, "lead_other", team="vision", name="v").status_code == 201
    assert reserve(world, name="l", start=iso(T0 + 5 * 86400)).status_code == 201
    loop.tick()
    assert sorted(loop.live.state.launches) == ["l", "v"]  # type: ignore[union-attr]
    r = world.call("admin", "PUT", "/v1/org", json={"org": [
        {"name": "research", "children": [{"name": "llama", "guaranteed": {"a100": 8}}]},
        {"name": "platform", "children": [{"name": "infra"}]}]})
    assert r.status_code == 200, r.text
    assert r.json()["moved"]["reservations"] == 1
    got = {x["name"]: (x["team"], x["status"]) for x in
           world.call("admin", "GET", "/v1/reservations").json()["items"]}
    assert got == {"v": ("vision", "cancelled"), "l": ("llama", "approved")}
    loop.tick()
    assert sorted(loop.live.state.launches) == ["l"]  # type: ignore[union-attr]


# -- the loop ---------------------------------------------------------------------------------
def test_the_loop_loads_approved_reservations_and_follows_changes(world: World) -> None:
    """The state built by the loop holds the approved reservations only; approving one and
    cancelling one change it at the next tick; a job naming a pending reservation waits
    with the reason, and is queued once it is approved."""
    fb = FakeBackend()
    loop = loop_for(world, fb)
    assert reserve(world, name="flag").status_code == 201
    assert reserve(world, gpus=12, name="big", start=iso(T0 + 9 * 86400)).status_code == 201
    loop.tick()
    st = loop.live.state  # type: ignore[union-attr]
    assert st is not None and sorted(st.launches) == ["flag"]
    r = st.launches["flag"]
    assert (r.team, r.gpu_type, r.gpus, r.start, r.end) == (
        "llama", "a100", 8, T0 + 86400, T0 + 86400 + 48 * HOUR)
    job = world.submit("member_own", gpus=8, reservation="big")["id"]
    loop.tick()
    assert world.call("member_own", "GET", f"/v1/jobs/{job}").json()["state"] == "pending"
    assert "'big'" in loop.live.unschedulable[job]  # type: ignore[union-attr]
    assert world.call("admin", "POST", "/v1/reservations/big/approve").status_code == 200
    loop.tick()
    st = loop.live.state  # type: ignore[union-attr]
    assert st is not None and sorted(st.launches) == ["big", "flag"]
    assert job not in loop.live.unschedulable  # type: ignore[union-attr]
    assert str(job) in st.pending_index or job in loop.live.runs  # type: ignore[union-attr]
    assert world.call("admin", "DELETE", "/v1/reservations/flag").status_code == 200
    loop.tick()
    st = loop.live.state  # type: ignore[union-attr]
    assert st is not None and sorted(st.launches) == ["big"]


def test_a_job_naming_a_pending_reservation_says_why_without_a_cycle(world: World) -> None:
    """Nothing else waits and no reservation is approved, so no cycle runs: the job's reason
    still says that its reservation is not approved (not "waiting for the next cycle")."""
    loop = loop_for(world, FakeBackend())
    assert reserve(world, gpus=12, name="big", start=iso(T0 + 9 * 86400)).status_code == 201
    loop.tick()
    job = world.submit("member_own", gpus=8, reservation="big")["id"]
    loop.tick()
    body = world.call("member_own", "GET", f"/v1/jobs/{job}").json()
    assert body["state"] == "pending" and "'big'" in body["reason"], body["reason"]


@pytest.mark.parametrize("borrower_exits", ["within its grace", "only when killed"])
def test_a_gang_naming_the_reservation_starts_on_time(world: World,
                                                      borrower_exits: str) -> None:
    """vision borrows all 16 GPUs; llama reserves 8 from T0 + 1 h. A gang of 8 naming it,
    submitted before the start, is admitted on the reservation's nodes: in the first tick at
    or after the start when the borrower on them exits within its grace (as a job that
    checkpoints on SIGTERM does), and one tick later when it ignores SIGTERM (SIGKILL at
    the start; the loop sees the exit at its next tick). The borrower is preempted before
    the start, not earlier than its grace needs."""
    grace, tick = 30.0, 10.0
    fb = FakeBackend(exit_on_term=False)
    loop = loop_for(world, fb, grace)
    start = T0 + HOUR
    r = reserve(world, name="flag", start=iso(start), hours=2)
    assert r.status_code == 201 and r.json()["status"] == "approved"
    borrower = world.submit("member_other", team="vision", gpus=16)["id"]
    assert loop.tick().admitted == [borrower]
    world.clock.advance(60)
    gang = world.submit("member_own", gpus=8, reservation="flag")["id"]
    termed_at = admitted_at = None
    while world.clock() < start + 5 * tick:
        report = loop.tick()
        assert gang not in report.admitted or world.clock() >= start
        if termed_at is None and (borrower, 0, "TERM") in fb.signals:
            termed_at = world.clock()
        if gang in report.admitted:
            admitted_at = world.clock()
            break
        world.clock.advance(tick)
        if termed_at is not None and borrower_exits == "within its grace":
            fb.finish(borrower, 0, 143)  # checkpointed and exited on SIGTERM
    assert termed_at is not None and start - grace - 2 * tick <= termed_at < start, termed_at
    latest = start + (tick if borrower_exits == "within its grace" else 2 * tick)
    assert admitted_at is not None and start <= admitted_at < latest, (admitted_at - start)
    st = loop.live.state  # type: ignore[union-attr]
    assert st is not None
    names = loop.live.names  # type: ignore[union-attr]
    nodes = {names[i] for i in st.launch_nodes.get("flag", ())}
    placed = {n for n, _ in world.call("member_own", "GET", f"/v1/jobs/{gang}").json()[
        "placement"]}
    assert nodes and placed <= nodes, (nodes, placed)


# -- the dashboard's forms -------------------------------------------------------------------
def test_dashboard_forms_follow_the_api_rules(world: World) -> None:
    """The reservations page: a lead's request (refused without the CSRF field or from
    another origin; a mistake and a conflict shown on the page, nothing written), an
    admin's approve, a lead's cancel; a member sees no form and may not cancel."""
    from tests.service.dashboard_login import ORIGIN, csrf_on, ui_get, ui_login

    lead = ui_login(world, "lead_own")
    csrf = csrf_on(lead, "/ui/reservations")
    good = {"team": "llama", "gpus": "12", "gpu_type": "a100", "start": iso(T0 + 86400),
            "hours": "48", "reason": "flagship", "name": "flag", "csrf": csrf}
    for data, headers in (({**good, "csrf": "0" * 32}, {"Origin": ORIGIN}),
                          (good, {"Origin": "https://evil.example"})):
        assert lead.post("/ui/reservations", data=data, headers=headers).status_code == 403
    r = lead.post("/ui/reservations", data={**good, "hours": "NaN"}, headers={"Origin": ORIGIN})
    assert r.status_code == 422 and 'id="e-hours"' in r.text
    r = lead.post("/ui/reservations", data={**good, "gpus": "99"}, headers={"Origin": ORIGIN})
    assert r.status_code == 409 and "has 16: 83 GPUs short" in r.text
    assert count(world, ReservationRow) == 0
    r = lead.post("/ui/reservations", data=good, headers={"Origin": ORIGIN})
    assert r.status_code == 303 and r.headers["location"] == "/ui/reservations?made=flag"
    html = ui_get(lead, "/ui/reservations?made=flag")
    assert "Reservation flag: pending." in html
    assert "vision&#39;s guarantee shrinks by 4 (8 -&gt; 4)" in html
    assert "Approve reservation flag" not in html  # a lead does not approve
    admin = ui_login(world, "admin")
    r = admin.post("/ui/reservations/flag/approve", data={"csrf": csrf_on(
        admin, "/ui/reservations")}, headers={"Origin": ORIGIN})
    assert r.status_code == 303
    assert world.call("admin", "GET", "/v1/reservations/flag").json()["approved_by"] == "root"
    job = world.submit("member_own", gpus=8, reservation="flag")["id"]
    html = ui_get(ui_login(world, "member_own"), f"/ui/jobs/{job}")
    assert '<a href="/ui/reservations#resv-flag">flag</a>' in html
    member = ui_login(world, "member_own")
    html = ui_get(member, "/ui/reservations")
    assert 'action="/ui/reservations"' not in html and "Cancel reservation" not in html
    r = member.post("/ui/reservations/flag/cancel", data={"csrf": csrf_on(
        member, "/ui/reservations")}, headers={"Origin": ORIGIN})
    assert r.status_code == 403
    r = lead.post("/ui/reservations/flag/cancel", data={"csrf": csrf},
                  headers={"Origin": ORIGIN})
    assert r.status_code == 303
    assert world.call("admin", "GET", "/v1/reservations/flag").json()["status"] == "cancelled"


# -- the replay engine --------------------------------------------------------------------------
def test_the_replay_engine_loads_launches_like_real_ones() -> None:
    """``replay(launches=...)`` stores them as approved reservations, which its loop loads:
    b borrows a's half, a's gang naming the reservation starts at its start, and the event
    log equals the in-memory engine's."""
    import dataclasses

    from allotment.domain.cluster import GpuType
    from allotment.domain.reservation import LaunchReservation
    from allotment.policies import make_policy
    from allotment.service.replay import replay
    from allotment.sim.engine import SimConfig, simulate
    from tests.builders import cluster, org, team, trace

    jobs = trace(("b1", "b", 16, 0.0, 20000.0), ("a1", "a", 8, 600.0, 3000.0))
    jobs[1] = dataclasses.replace(jobs[1], reservation="launch")
    launches = [LaunchReservation("launch", "a", GpuType("gpu"), 8, 7200.0, 7200.0 + 4 * HOUR)]
    o = org([team("a", 8), team("b", 8)], 16)
    cfg = SchedulerConfig(policy="fairshare", grace_s=60.0, min_runtime_s=0.0)
    memory = simulate(jobs, cluster(16), o, make_policy("fairshare", cfg), SimConfig(),
                      launches=launches)
    service = replay(jobs, cluster(16), o, cfg, SimConfig(), launches=launches)
    assert [tuple(e) for e in service.events] == [tuple(e) for e in memory.events]
    admits = [e for e in service.events if e[1] == "admit" and "a1" in tuple(e)]
    assert admits and float(admits[0][0]) == 7200.0, service.events
    assert any(e[1] == "preempt" for e in service.events), service.events
