"""The first hour of a new user: one database default for every command, a missing database
refused in one line with nothing created, a publish that fails leaving nothing behind, the
plans page never comparing a plan with itself, the service keeping idle connections open
longer than its clients reuse them, and ``allot up --demo`` serving on after the demo."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from allotment.service.client import KEEPALIVE_EXPIRY_S, SERVER_KEEPALIVE_S, Client
from allotment.storage import repo
from allotment.storage.db import Database
from tests.service.conftest import World, free_port
from tests.service.dashboard_login import ORIGIN, csrf_on, ui_get, ui_login

ALLOT = str(Path(sys.executable).parent / "allot")


def _allot(*args: str, cwd: Path, env: dict[str, str] | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("ALLOTMENT_DB", "ALLOTMENT_DATA_DIR")}
    return subprocess.run([ALLOT, *args], cwd=cwd, env={**clean, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


MISSING = [("audit", "verify"), ("admin", "list-tokens", "root"),
           ("admin", "create-user", "carol"), ("scheduler", "--fake-gpus"),
           ("serve", "--no-scheduler"), ("slurm", "sync", "--dry-run"),
           ("slurm", "usage")]


@pytest.mark.parametrize("args", MISSING, ids=[" ".join(a[:2]) for a in MISSING])
def test_a_missing_database_is_refused_in_one_line_creating_nothing(
        tmp_path: Path, args: tuple[str, ...]) -> None:
    """Every command that opens the database, run where there is none (the default), or
    given a mistyped path: one line that names it, exit non-zero, no file made."""
    for extra in ((), ("--db", f"sqlite:///{tmp_path / 'typo.db'}")):
        r = _allot(*args, *extra, cwd=tmp_path)
        lines = r.stderr.strip().splitlines()
        assert r.returncode != 0 and len(lines) == 1, (args, extra, r.stdout, r.stderr)
        assert "does not exist" in lines[0] and "Traceback" not in r.stderr + r.stdout
        assert ("typo.db" if extra else str(tmp_path / ".allotment" / "allotment.db")) \
            in lines[0]
        assert _files(tmp_path) == [], (args, extra, _files(tmp_path))


def test_a_missing_postgresql_database_is_refused_in_one_line(tmp_path: Path) -> None:
    """$ALLOTMENT_DB naming a PostgreSQL database the server does not have: one line
    naming it (no password shown), exit non-zero."""
    url = os.environ.get("ALLOTMENT_TEST_PG_URL")
    if not url:
        pytest.skip("no PostgreSQL here: set ALLOTMENT_TEST_PG_URL")
    base = url.rsplit("/", 1)[0].replace("postgres@", "postgres:sekret@", 1)
    r = _allot("audit", "verify", cwd=tmp_path,
               env={"ALLOTMENT_DB": f"{base}/no_such_db_allotment"})
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0 and len(lines) == 1, r.stderr
    assert "no_such_db_allotment" in lines[0] and "sekret" not in r.stderr
    assert _files(tmp_path) == []


def test_every_command_defaults_to_the_database_in_the_data_directory(tmp_path: Path) -> None:
    """The database `allot up` makes (DATA_DIR/allotment.db) is the one `allot admin` and
    `allot audit verify` use without --db; $ALLOTMENT_DATA_DIR moves all of them."""
    for data, env in ((tmp_path / ".allotment", {}),
                      (tmp_path / "elsewhere", {"ALLOTMENT_DATA_DIR": "elsewhere"})):
        db = Database(f"sqlite:///{data / 'allotment.db'}", data)
        data.mkdir()
        db.upgrade()
        db.check_audit_key()
        db.dispose()
        r = _allot("admin", "create-user", "carol", cwd=tmp_path, env=env)
        assert r.returncode == 0, r.stderr
        with Database(db.url, data).session() as s:
            assert repo.user_by_name(s, "carol") is not None
        r = _allot("audit", "verify", cwd=tmp_path, env=env)
        assert r.returncode == 0 and "audit log OK" in r.stdout, r.stderr
    assert not (tmp_path / "allotment.db").exists()


GHOST_SCENARIO = {
    "period": "2026-12", "as_of": "2026-11-20", "inventory": {"a100": 16},
    "org": [{"name": "ghosts", "children": [{"name": "casper"}]}],
    "requests": [{"team": "casper", "gpu_type": "a100", "gpus": 4, "tier": "high",
                  "launch": "2026-12-15", "justification": "haunting"}]}


def _plans(world: World) -> int:
    return int(world.call("admin", "GET", "/v1/plans").json()["total"])


def test_a_publish_that_fails_writes_nothing(world: World) -> None:
    """`allot plan publish FILE` of a scenario whose teams are not in the stored org: a
    422 naming the field, and no draft plan, quota or audit entry is left behind."""
    audit_before = world.call("admin", "GET", "/v1/audit").json()["total"]
    r = world.call("admin", "POST", "/v1/plans",
                   json={"scenario": GHOST_SCENARIO, "publish": True})
    assert r.status_code == 422 and "casper" in r.text, r.text
    assert _plans(world) == 0
    assert world.call("admin", "GET", "/v1/audit").json()["total"] == audit_before
    # without publish it is a draft, as before
    r = world.call("admin", "POST", "/v1/plans", json={"scenario": GHOST_SCENARIO})
    assert r.status_code == 201 and r.json()["status"] == "draft"


def test_the_cli_publish_of_a_bad_scenario_leaves_no_draft(world: World, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """The CLI's publish through a live service: refused in one line, no draft stored."""
    import json

    from tests.service.conftest import LiveServer

    f = tmp_path / "ghost.yaml"
    f.write_text(json.dumps(GHOST_SCENARIO))
    with LiveServer(world.client.app) as server:
        r = _allot("plan", "publish", str(f), cwd=tmp_path,
                   env={"ALLOTMENT_URL": server.url, "ALLOTMENT_TOKEN": world.tokens["admin"],
                        "ALLOTMENT_CONFIG": str(tmp_path / "none.json")})
    assert r.returncode != 0 and "casper" in r.stderr, (r.stdout, r.stderr)
    assert _plans(world) == 0


def _llama(gpus: int) -> dict[str, object]:
    """A scenario for the world's stored org in which llama asks for ``gpus``."""
    return {**GHOST_SCENARIO, "period": "2026-11", "as_of": "2026-10-20",
            "org": [{"name": "research", "children": [{"name": "llama"}, {"name": "vision"}]}],
            "requests": [{"team": "llama", "gpu_type": "a100", "gpus": gpus, "tier": "high",
                          "launch": "2026-11-15", "justification": "pretraining"}]}


def _captions(html: str) -> list[str]:
    return re.findall(r"<caption>(.*?)</caption>", html, re.S)


def test_the_plans_page_never_compares_a_plan_with_itself(world: World) -> None:
    """Publish a draft from the dashboard: the page it lands on shows the current plan
    beside the newest draft (or no comparison), never 'plan N (current) beside plan N',
    even when asked for the current plan by id."""
    p1 = world.call("admin", "POST", "/v1/plans", json={"scenario": _llama(4)}).json()["id"]
    c = ui_login(world, "admin")
    r = c.post(f"/ui/plans/{p1}/publish", data={"csrf": csrf_on(c, "/ui/plans")},
               headers={"Origin": ORIGIN})
    assert r.status_code == 303
    page = ui_get(c, r.headers["location"].removeprefix("http://testserver"))
    assert "(current)" not in "".join(_captions(page)), _captions(page)
    assert f"Draft: <strong>plan {p1}</strong>" not in page
    assert _captions(ui_get(c, f"/ui/plans?draft={p1}")) == []
    p2 = world.call("admin", "POST", "/v1/plans", json={"scenario": _llama(8)}).json()["id"]
    for url in ("/ui/plans", f"/ui/plans?draft={p1}"):
        caps = _captions(ui_get(c, url))
        assert len(caps) == 1 and f"plan {p1} (current)" in caps[0] \
            and f"beside plan {p2}" in caps[0], (url, caps)


def test_the_service_keeps_idle_connections_longer_than_clients_reuse_them(
        tmp_path: Path) -> None:
    """The cause of the demo's "Connection reset by peer": the service closed idle
    keep-alive connections after 5 s and the client reused them for up to 5 s, so a
    request sent after about 5 s idle met the server closing the socket. Now a real
    `allot serve` keeps a connection idle past the client's reuse limit (the client closes
    first), and the client's limit is the one it is built with."""
    assert KEEPALIVE_EXPIRY_S + 5 <= SERVER_KEEPALIVE_S
    assert Client("http://127.0.0.1:1").http._transport._pool._keepalive_expiry \
        == KEEPALIVE_EXPIRY_S  # type: ignore[attr-defined]
    port = free_port()
    proc = subprocess.Popen([ALLOT, "serve", "--create-db", "--no-scheduler", "--port",
                             str(port), "--data-dir", str(tmp_path / "d")], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.time() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                assert time.time() < end and proc.poll() is None, "allot serve did not start"
                time.sleep(0.2)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/health")
        assert conn.getresponse().read().startswith(b'{"status":"ok"')
        sock = conn.sock
        time.sleep(KEEPALIVE_EXPIRY_S + 2)  # past the old 5 s server timeout
        conn.request("GET", "/health")  # on the same connection: it was kept open
        assert conn.sock is sock and conn.getresponse().status == 200
        conn.close()
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0  # Ctrl-C is a clean stop


def test_up_demo_then_keeps_serving_and_ctrl_c_exits_0(tmp_path: Path) -> None:
    """`allot up --demo` plays the demo, then the dashboard answers at the printed URL;
    Ctrl-C stops it with exit status 0."""
    port = free_port()
    env = {**{k: v for k, v in os.environ.items()
              if k not in ("ALLOTMENT_DB", "ALLOTMENT_DATA_DIR", "ALLOTMENT_TOKEN",
                           "ALLOTMENT_URL")},
           "ALLOTMENT_CONFIG": str(tmp_path / "config.json")}
    out = tmp_path / "up.log"
    work = Path(tempfile.mkdtemp(prefix="allot-work-", dir="/tmp"))  # job accounts reach it
    work.chmod(0o711)
    with out.open("w") as log:
        proc = subprocess.Popen([ALLOT, "up", "--demo", "--fake-gpus", "8", "--port", str(port),
                                 "--data-dir", str(tmp_path / "demo"), "--work-dir",
                                 str(work)],
                                cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        end = time.time() + 180
        while "keeps running" not in out.read_text():
            assert proc.poll() is None, out.read_text()
            assert time.time() < end, out.read_text()
            time.sleep(0.5)
        text = out.read_text()
        assert "chain verified: True" in text, text
        url = re.search(r"dashboard (http://\S+/ui)", text)
        assert url is not None, text
        r = httpx.get(url.group(1), follow_redirects=True, timeout=10)
        assert r.status_code == 200 and "login" in r.text.lower()
        time.sleep(2)
        assert proc.poll() is None, "the service stopped after the demo"
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=60)
    assert rc == 0, out.read_text()
