"""Structured logs: `allot serve --log-format json` writes JSON lines; every decision on a
job is a line with its job, team and reason; request lines never carry a token, whether
it came in the Authorization header, a cookie, the login form or the URL."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from allotment.logs import JsonLines, decision, redact_query
from allotment.storage import repo
from allotment.storage.db import Database
from tests.service.conftest import free_port

ALLOT = str(Path(sys.executable).parent / "allot")


def test_redact_query_hides_credentials_by_name_and_by_look() -> None:
    """Parameters named like a credential, or holding something that looks like an API
    token, are replaced; the rest of the query stays as it was."""
    assert redact_query("token=alt_abc&limit=5") == "token=REDACTED&limit=5"
    assert redact_query("x=alt_secretvalue&state=pending") == "x=REDACTED&state=pending"
    assert redact_query("api%5Fkey=1&Session=2&csrf=3") == \
        "api%5Fkey=REDACTED&Session=REDACTED&csrf=REDACTED"
    assert redact_query("") == "" and redact_query("team=llama") == "team=llama"


def test_a_decision_line_has_job_team_and_reason_as_fields() -> None:
    """The JSON formatter puts a decision's fields beside its message."""
    rec: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            rec.append(record)

    log = logging.getLogger("allotment.test.decisions")
    log.addHandler(Keep())
    log.setLevel(logging.INFO)
    log.propagate = False
    decision(log, "job.preempted", 7, "llama", "reclaimed for 9 of team vision")
    line = json.loads(JsonLines().format(rec[0]))
    assert {k: line[k] for k in ("event", "job", "team", "reason", "level")} == {
        "event": "job.preempted", "job": 7, "team": "llama",
        "reason": "reclaimed for 9 of team vision", "level": "info"}
    assert "llama" in line["message"] and line["time"].endswith("Z")


def _lines(text: str) -> list[dict[str, Any]]:
    out = []
    for raw in text.splitlines():
        assert raw.startswith("{"), f"not a JSON line: {raw!r}"
        out.append(json.loads(raw))
    return out


def test_serve_logs_json_lines_with_decisions_and_no_tokens(tmp_path: Path) -> None:
    """A real `allot serve --log-format json`: a submitted job's admission and its end
    are lines with job, team and reason; requests are logged; the admin token, sent in
    the header, in a query parameter and in the login form, appears nowhere in the log,
    nor does the session cookie the login set."""
    db = Database(f"sqlite:///{tmp_path / 'a.db'}", tmp_path / "d")
    (tmp_path / "d").mkdir()
    db.upgrade()
    now = time.time()
    with db.session() as s:
        repo.set_inventory(s, [repo.NodeSpec("local", "fake", 4)], "test", now)
        repo.set_org(s, {"org": [{"name": "llama", "guaranteed": 4}]}, "test", now)
        _, token = repo.create_user(s, "ann", "admin", None, now)
    db.dispose()
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="allot-work-", dir="/tmp"))
    work.chmod(0o711)
    extra = ["--work-dir", str(work)] if os.geteuid() == 0 else ["--shared-account"]
    log = tmp_path / "serve.log"
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as err:
        proc = subprocess.Popen([ALLOT, "serve", "--db", db.url, "--data-dir", str(tmp_path / "d"),
                                 "--port", str(port), "--fake-gpus", "--tick-s", "0.2",
                                 "--log-format", "json", *extra],
                                stdout=subprocess.DEVNULL, stderr=err)
    session_id, other = "", 0
    try:
        h = {"Authorization": f"Bearer {token}"}
        end = time.time() + 60
        while True:
            try:
                httpx.get(f"{url}/health", timeout=2)
                break
            except httpx.TransportError:
                assert time.time() < end and proc.poll() is None, log.read_text()
                time.sleep(0.2)
        job = httpx.post(f"{url}/v1/jobs", headers=h, timeout=10, json={
            "team": "llama", "gpu_type": "fake", "gpus": 2, "command": "true"}).json()["id"]
        httpx.get(f"{url}/v1/jobs", params={"token": token, "limit": 5}, timeout=10)
        httpx.get(f"{url}/v1/jobs?x={token}", timeout=10)
        with httpx.Client(base_url=url, timeout=10) as browser:
            form = browser.get("/ui/login").text
            csrf = form.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            r = browser.post("/ui/login", data={"token": token, "next": "/ui", "csrf": csrf},
                             headers={"Origin": url})
            assert r.status_code == 303
            session_id = next(iter(browser.cookies.values()))
            browser.get("/ui/jobs")
        end = time.time() + 60
        while httpx.get(f"{url}/v1/jobs/{job}", headers=h, timeout=10).json()["state"] \
                != "succeeded":
            assert time.time() < end, log.read_text()
            time.sleep(0.2)
        other = httpx.post(f"{url}/v1/jobs", headers=h, timeout=10, json={
            "team": "llama", "gpu_type": "fake", "gpus": 1, "command": "sleep 30"}).json()["id"]
        assert httpx.post(f"{url}/v1/jobs/{other}/cancel", headers=h,
                          timeout=10).status_code == 200
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
    text = log.read_text()
    assert rc == 0, text
    assert token not in text and token[4:] not in text
    assert session_id and session_id not in text
    lines = _lines(text)
    decided = [ln for ln in lines if ln.get("job") in (job, other) and ln.get("event")]
    events = {(ln["job"], ln["event"]) for ln in decided}
    assert {(job, "job.admitted"), (other, "job.cancelled")} <= events, events
    assert all(ln["team"] == "llama" and ln["reason"] for ln in decided), decided
    requests = [ln for ln in lines if ln["logger"] == "allotment.requests"]
    assert any(ln["path"] == "/v1/jobs" and ln["method"] == "POST" and ln["status"] == 201
               for ln in requests), requests
    assert any("REDACTED" in ln["query"] for ln in requests)
