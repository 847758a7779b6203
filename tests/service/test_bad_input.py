"""Bounded input: every bad input found by the adversarial review (issue 11, items 5, 6 and
11) answers a 4xx naming the field, never a 500; writes nothing; echoes at most a short
prefix of the value; and leaves the client's keep-alive connection open. Bodies over the
limit are refused (413) before they are parsed or the client is authenticated."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from allotment.service.app import create_app
from allotment.storage.models import (
    AuditRow,
    DisputeRow,
    JobRow,
    PlanRow,
    QuotaRow,
    RequestRow,
    SampleRow,
    User,
)
from tests.service.conftest import LiveServer, World, free_port

HUGE = "99999999999999999999"
MIB = 1 << 20


def _job(extra: str) -> bytes:
    return ('{"team": "llama", "gpu_type": "a100", "gpus": 1, "command": "x", '
            + extra + "}").encode()


def _dispute(subject_id: str) -> bytes:
    return json.dumps({"team": "llama", "subject_kind": "plan", "subject_id": subject_id,
                       "wants": "more", "why": "because"}).encode()


def _nested_org(levels: int) -> bytes:
    return ('{"org": [' + '{"name": "n", "children": [' * levels + "]}" * levels
            + "]}").encode()


def _nested_rules(levels: int) -> bytes:
    return ('{"period": "2026-12", "rules": ' + '{"a": ' * levels + "1" + "}" * levels
            + "}").encode()


def _chunked(size: int) -> Iterator[bytes]:
    """A body sent without Content-Length (chunked), 64 KiB at a time."""
    yield b'{"team": "'
    for _ in range(size // 65536):
        yield b"x" * 65536
    yield b'"}'


@dataclass(frozen=True)
class Bad:
    name: str
    method: str
    path: str  # {job}: a pending job of llama, {request}: a request of llama
    body: bytes | None = None
    status: int = 422
    field: str | None = None  # named by the JSON answer (API) or the page (dashboard)
    who: str = "admin"
    chunked: int = 0  # send this many bytes chunked instead of ``body``


BAD = [
    # item 5: non-finite floats (the 422 echoed them and JSON encoding failed)
    Bad("time_limit_s NaN", "POST", "/v1/jobs", _job('"time_limit_s": NaN'),
        field="time_limit_s"),
    Bad("time_limit_s Infinity", "POST", "/v1/jobs", _job('"time_limit_s": Infinity'),
        field="time_limit_s"),
    Bad("time_limit_s -Infinity", "POST", "/v1/jobs", _job('"time_limit_s": -Infinity'),
        field="time_limit_s"),
    Bad("time_limit_s 1e309", "POST", "/v1/jobs", _job('"time_limit_s": 1e309'),
        field="time_limit_s"),
    Bad("util_pct NaN", "POST", "/v1/jobs/{job}/samples", b'{"samples": [{"util_pct": NaN}]}',
        field="samples.0.util_pct"),
    Bad("mem_used_mib Infinity", "POST", "/v1/jobs/{job}/samples",
        b'{"samples": [{"util_pct": 5, "mem_used_mib": Infinity}]}',
        field="samples.0.mem_used_mib"),
    Bad("sample time 1e309", "POST", "/v1/jobs/{job}/samples",
        b'{"samples": [{"util_pct": 5, "time": 1e309}]}', field="samples.0.time"),
    Bad("org weight 1e400", "PUT", "/v1/org", b'{"org": [{"name": "a", "weight": 1e400}]}',
        field="org.0.weight"),
    # item 5: lone surrogates (no database can store them)
    Bad("command lone surrogate", "POST", "/v1/jobs",
        b'{"team": "llama", "gpu_type": "a100", "gpus": 1, "command": "\\ud800"}',
        field="command"),
    Bad("name lone surrogate", "POST", "/v1/jobs", _job('"name": "ok \\udfff"'), field="name"),
    Bad("command surrogate as raw bytes", "POST", "/v1/jobs",
        b'{"team": "llama", "gpu_type": "a100", "gpus": 1, "command": "\xed\xa0\x80"}',
        field="command"),
    Bad("not UTF-8", "POST", "/v1/jobs",
        b'{"team": "llama", "gpu_type": "a100", "gpus": 1, "command": "\xff"}', field="body"),
    Bad("surrogate in an org key", "PUT", "/v1/org",
        b'{"org": [{"name": "a", "guaranteed": {"\\ud800": 1}}]}', field="org.0.guaranteed"),
    # item 5: PATCH with null fields
    Bad("PATCH gpus null", "PATCH", "/v1/requests/{request}", b'{"gpus": null}', field="gpus"),
    Bad("PATCH min_gpus null", "PATCH", "/v1/requests/{request}", b'{"min_gpus": null}',
        field="min_gpus"),
    Bad("PATCH tier null", "PATCH", "/v1/requests/{request}", b'{"tier": null}', field="tier"),
    Bad("PATCH justification null", "PATCH", "/v1/requests/{request}",
        b'{"justification": null}', field="justification"),
    # item 5: dispute subject ids that are digits to str.isdigit but not ids
    Bad("subject_id superscript two", "POST", "/v1/disputes", _dispute("\u00b2"),
        field="subject_id"),
    Bad("subject_id arabic-indic three", "POST", "/v1/disputes", _dispute("\u0663"),
        field="subject_id"),
    Bad("subject_id 64 digits", "POST", "/v1/disputes", _dispute("9" * 64), field="subject_id"),
    # item 5: huge integers in paths and queries, API and dashboard alike
    Bad("API job id huge", "GET", f"/v1/jobs/{HUGE}", field="job_id"),
    Bad("API offset huge", "GET", f"/v1/jobs?offset={HUGE}", field="offset"),
    Bad("API compare huge", "POST", "/v1/plans/compare", f'{{"a": {HUGE}, "b": 1}}'.encode(),
        field="a"),
    Bad("dashboard job huge", "GET", f"/ui/jobs/{HUGE}", field="job_id"),
    Bad("dashboard cancel huge", "POST", f"/ui/jobs/{HUGE}/cancel", b"csrf=x",
        field="job_id"),
    Bad("dashboard submitted huge", "GET", "/ui/jobs/{job}?submitted=" + HUGE,
        field="submitted"),
    Bad("dashboard jobs offset huge", "GET", f"/ui/jobs?offset={HUGE}", field="offset"),
    Bad("dashboard audit offset huge", "GET", f"/ui/audit?offset={HUGE}", field="offset"),
    Bad("dashboard plans draft huge", "GET", f"/ui/plans?draft={HUGE}", field="draft"),
    Bad("dashboard publish huge", "POST", f"/ui/plans/{HUGE}/publish", b"csrf=x",
        field="plan_id"),
    # item 5: nesting (the NUL check, and Python's JSON parser, recursed)
    Bad("org nested 300 levels", "PUT", "/v1/org", _nested_org(300), field="body"),
    Bad("plan rules nested 400 levels", "POST", "/v1/plans", _nested_rules(400), field="body"),
    Bad("array nested 100000 levels", "PUT", "/v1/org", b'{"org": ' + b"[" * 100_000,
        field="body"),
    # item 6: bodies over the limit, before parsing and before authentication
    Bad("64 MiB body", "POST", "/v1/jobs", b'{"team": "' + b"x" * (64 * MIB) + b'"}',
        status=413, field="body"),
    Bad("64 MiB body, no token", "POST", "/v1/jobs", b'{"team": "' + b"x" * (64 * MIB) + b'"}',
        status=413, field="body", who="anon"),
    Bad("2 MiB chunked body, no token", "POST", "/v1/jobs", status=413, field="body",
        who="anon", chunked=2 * MIB),
    Bad("2 MiB dashboard form", "POST", "/ui/jobs", b"csrf=x&command=" + b"x" * (2 * MIB),
        status=413),
    # item 6: a 422 never echoes more than a short prefix of the value
    Bad("name of 900 KiB", "POST", "/v1/jobs",
        _job('"name": "' + "n" * (900 * 1024) + '"'), field="name"),
    Bad("body a list of 100000 numbers", "POST", "/v1/jobs",
        json.dumps(list(range(100_000))).encode(), field="body"),
    # item 11: lenient coercions
    Bad("gpus as a string", "POST", "/v1/jobs",
        b'{"team": "llama", "gpu_type": "a100", "gpus": "1", "command": "x"}', field="gpus"),
    Bad("gpus true", "POST", "/v1/jobs",
        b'{"team": "llama", "gpu_type": "a100", "gpus": true, "command": "x"}', field="gpus"),
    Bad("gpus 1.0", "POST", "/v1/jobs",
        b'{"team": "llama", "gpu_type": "a100", "gpus": 1.0, "command": "x"}', field="gpus"),
    Bad("preemptible as a string", "POST", "/v1/jobs", _job('"preemptible": "yes"'),
        field="preemptible"),
    Bad("time_limit_s as a string", "POST", "/v1/jobs", _job('"time_limit_s": "60"'),
        field="time_limit_s"),
    Bad("request gpus as a string", "POST", "/v1/requests",
        b'{"team": "llama", "period": "2026-12", "gpu_type": "a100", "gpus": "4"}',
        field="gpus"),
    Bad("inventory gpus true", "PUT", "/v1/inventory",
        b'{"nodes": [{"name": "n1", "gpu_type": "a100", "gpus": true}]}', field="nodes.0.gpus"),
    Bad("scenario integer past 2**53", "POST", "/v1/plans", json.dumps({"scenario": {
        "period": "2026-12", "as_of": "2026-11-20", "inventory": {"a100": 10**30},
        "org": [{"name": "llama"}]}}).encode(), field="scenario.inventory.a100"),
]


def _prepare(world: World) -> dict[str, int]:
    job = world.submit("member_own")["id"]
    r = world.call("lead_own", "POST", "/v1/requests", json={
        "team": "llama", "period": "2026-12", "gpu_type": "a100", "gpus": 4})
    assert r.status_code == 201, r.text
    return {"job": job, "request": r.json()["id"]}


def _written(world: World) -> dict[str, Any]:
    with world.db.session() as s:
        out = {m.__tablename__: s.execute(select(func.count()).select_from(m)).scalar_one()
               for m in (AuditRow, DisputeRow, JobRow, PlanRow, QuotaRow, RequestRow,
                         SampleRow, User)}
        out["request"] = [(r.gpus, r.min_gpus, r.tier, r.justification)
                          for r in s.execute(select(RequestRow)).scalars()]
    return out


def _send(client: Any, world: World, case: Bad, ids: dict[str, int]) -> httpx.Response:
    headers = {**world.h(case.who)}
    if case.path.startswith("/ui/"):
        headers["content-type"] = "application/x-www-form-urlencoded"
    else:
        headers["content-type"] = "application/json"
    content: Any = _chunked(case.chunked) if case.chunked else case.body
    return client.request(case.method, case.path.format(**ids), content=content,
                          headers=headers)


def _check(case: Bad, r: httpx.Response) -> None:
    assert r.status_code == case.status, (case.name, r.status_code, r.text[:300])
    assert len(r.content) < 8192, (case.name, "answer echoes the input", len(r.content))
    if case.field is None:
        return
    if r.headers.get("content-type", "").startswith("application/json"):
        got = r.json()
        assert got["field"] == case.field, (case.name, got)
        assert case.field in got["detail"], (case.name, got)
        for err in got.get("errors", []):
            assert len(json.dumps(err)) < 1000, (case.name, err)
    else:
        assert case.field in r.text, (case.name, r.text[-600:])


def test_each_bad_input_is_a_4xx_naming_the_field_and_writes_nothing(world: World) -> None:
    """Every case of the table, in process: its status, the field named, a short answer,
    and no row written or changed."""
    ids = _prepare(world)
    before = _written(world)
    for case in BAD:
        _check(case, _send(world.client, world, case, ids))
    assert _written(world) == before


def test_one_keep_alive_connection_survives_every_bad_input(world: World) -> None:
    """One client against a live server sends the whole table in sequence: every answer
    comes on the same connection (a 500 used to drop it), and a good request still works
    on it afterwards."""
    ids = _prepare(world)
    before = _written(world)
    ports = []
    with LiveServer(world.client.app) as server, httpx.Client(base_url=server.url,
                                                              timeout=120) as client:
        for case in BAD:
            r = _send(client, world, case, ids)
            _check(case, r)
            ports.append((case.name, r.extensions["network_stream"].get_extra_info(
                "client_addr")[1]))
        assert _written(world) == before
        r = client.get("/v1/me", headers=world.h("member_own"))
        assert r.status_code == 200
        ports.append(("good request", r.extensions["network_stream"].get_extra_info(
            "client_addr")[1]))
    first = ports[0][1]
    assert [name for name, port in ports if port != first] == []


def test_the_body_limit_is_configurable_and_named(world: World) -> None:
    """With max_body_bytes 4096, 4097 bytes are a 413 naming the limit; 4096 are parsed."""
    from fastapi.testclient import TestClient

    client = TestClient(create_app(world.db, settings={"max_body_bytes": 4096}))
    filler = 4096 - len(_job('"name": ""'))
    at = _job('"name": "' + "n" * filler + '"')
    assert len(at) == 4096
    r = client.post("/v1/jobs", content=at, headers={**world.h("member_own"),
                                                     "content-type": "application/json"})
    assert r.status_code == 422 and r.json()["field"] == "name"
    r = client.post("/v1/jobs", content=at + b" ", headers={
        "content-type": "application/json"})
    assert r.status_code == 413
    assert r.json()["field"] == "body" and "4096 bytes" in r.json()["detail"]


def test_a_deep_but_sane_org_is_still_accepted(world: World) -> None:
    """Ten levels of groups (real orgs have fewer) are well inside the nesting bound."""
    node: dict[str, Any] = {"name": "llama", "guaranteed": {"a100": 8}}
    for k in range(10):
        node = {"name": f"level{k}", "children": [node]}
    org = [node, {"name": "vision", "guaranteed": {"a100": 8}}]
    r = world.call("admin", "PUT", "/v1/org", json={"org": org})
    assert r.status_code == 200, r.text


def test_dates_still_come_as_iso_strings(world: World) -> None:
    """Strict types keep ISO dates: launch "2027-01-15" is a date."""
    r = world.call("lead_own", "POST", "/v1/requests", json={
        "team": "llama", "period": "2026-12", "gpu_type": "a100", "gpus": 4,
        "launch": "2027-01-15"})
    assert r.status_code == 201 and r.json()["launch"] == "2027-01-15"


def test_the_audit_filter_treats_percent_and_underscore_as_text(world: World) -> None:
    """/ui/audit?action=% used to match every entry (a LIKE pattern); now it matches
    entries whose action contains a percent sign: none. `_` is a character too."""
    job = world.submit("member_own")["id"]
    world.call("member_own", "POST", f"/v1/jobs/{job}/cancel")

    def rows(action: str) -> int:
        r = world.client.get("/ui/audit", params={"action": action}, headers=world.h("admin"))
        assert r.status_code == 200
        return r.text.count("<tr") - 1  # the header row

    assert rows("job.cancelled") == 1
    assert rows("%") == 0
    assert rows("job_cancelled") == 0
    assert rows("cancel") == 1


@pytest.mark.parametrize(("reserve", "field"), [({"a100": -1}, "reserve.a100"),
                                                ({"h999": 1}, "reserve.h999")])
def test_reserve_errors_name_reserve(world: World, reserve: dict[str, int], field: str) -> None:
    """A bad reserve in a plan request is reported under `reserve`, not `inventory`."""
    r = world.call("admin", "POST", "/v1/plans", json={"period": "2026-12", "reserve": reserve})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field, r.json()
    r = world.call("admin", "POST", "/v1/plans", json={"scenario": {
        "period": "2026-12", "as_of": "2026-11-20", "inventory": {"a100": 16},
        "reserve": reserve, "org": [{"name": "llama"}]}})
    assert r.status_code == 422 and r.json()["field"].endswith(field), r.json()


def test_the_dashboard_form_still_takes_numbers_as_text(world: World) -> None:
    """Strict JSON types do not reach the submit form: its "2" is a number of GPUs, and
    "two" is refused next to the field."""
    from tests.service.dashboard_login import ORIGIN, csrf_on, ui_login

    c = ui_login(world, "member_own")
    form = {"csrf": csrf_on(c, "/ui/jobs"), "team": "llama", "gpu_type": "a100", "command": "x"}
    r = c.post("/ui/jobs", data={**form, "gpus": "2"}, headers={"Origin": ORIGIN})
    assert r.status_code == 303 and r.headers["location"].startswith("/ui/jobs/"), r.text[-500:]
    r = c.post("/ui/jobs", data={**form, "gpus": "two"}, headers={"Origin": ORIGIN})
    assert r.status_code == 422 and "gpus:" in r.text


def test_allot_serve_takes_the_body_limit(tmp_path: Path) -> None:
    """`allot serve --max-body-bytes 2048`: 2,049 bytes from a client without a token are a
    413 naming 2048, 2,048 bytes are read (and found not to be JSON); `allot up` has the
    option too."""
    allot = str(Path(sys.executable).parent / "allot")
    port = free_port()
    proc = subprocess.Popen([allot, "serve", "--db", f"sqlite:///{tmp_path / 'a.db'}",
                             "--data-dir", str(tmp_path / "d"), "--port", str(port),
                             "--no-scheduler", "--max-body-bytes", "2048", "--create-db"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        end = time.time() + 60
        while True:
            try:
                httpx.get(f"{url}/health", timeout=2)
                break
            except httpx.TransportError:
                assert time.time() < end and proc.poll() is None, "allot serve did not start"
                time.sleep(0.05)
        r = httpx.post(f"{url}/v1/jobs", content=b"x" * 2049,
                       headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["limit_bytes"] == 2048
        r = httpx.post(f"{url}/v1/jobs", content=b"x" * 2048,
                       headers={"content-type": "application/json"})
        assert r.status_code == 422 and "malformed JSON" in r.json()["detail"]  # parsed
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    up = subprocess.run([allot, "up", "--help"], capture_output=True, text=True, timeout=60)
    assert "--max-body-bytes" in up.stdout
