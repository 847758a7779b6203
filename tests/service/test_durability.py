"""Nothing acknowledged is lost: a response is sent only after its transaction commits (so a
``kill -9`` the moment a 201 arrives loses no job), and no id is ever handed out twice
(SQLite AUTOINCREMENT; PostgreSQL sequences never go back)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from sqlalchemy import delete

from allotment.service.deps import get_session
from allotment.storage import repo
from allotment.storage.db import Database
from allotment.storage.models import DisputeRow, JobRow, PlanRow, RequestRow, User
from tests.service.conftest import LiveServer, World, free_port

KILLS = 20  # kill -9 rounds per database
CLIENTS = 4  # concurrent submitters per round


def _allot_serve(db: Database, data: Path, port: int) -> subprocess.Popen[bytes]:
    allot = str(Path(sys.executable).parent / "allot")
    return subprocess.Popen([allot, "serve", "--db", db.url, "--data-dir", str(data),
                             "--port", str(port), "--no-scheduler"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    end = time.time() + timeout
    while time.time() < end:
        assert proc.poll() is None, "allot serve exited during start-up"
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.03)
    raise AssertionError("allot serve did not start")


def _round(url: str, token: str, proc: subprocess.Popen[bytes], k: int,
           kill_after: int) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
    """Clients submit until the server dies; the (kill_after+1)-th 201 kills it at once.
    Returns every acknowledged (id, body) and anything other than a 201 or a dropped
    connection."""
    acked: list[tuple[int, dict[str, Any]]] = []
    odd: list[str] = []
    lock = threading.Lock()
    killed = threading.Event()

    def client(c: int) -> None:
        with httpx.Client(base_url=url, timeout=30,
                          headers={"Authorization": f"Bearer {token}"}) as h:
            n = 0
            while not killed.is_set():
                body = {"team": "llama", "gpu_type": "a100", "gpus": 1 + n % 4,
                        "command": f"echo round={k} client={c} n={n}", "name": f"r{k}c{c}n{n}"}
                n += 1
                try:
                    r = h.post("/v1/jobs", json=body)
                except httpx.TransportError:
                    return  # the server died with this request unanswered: not acknowledged
                if r.status_code != 201:
                    with lock:
                        odd.append(f"{r.status_code} {r.text[:200]}")
                    return
                with lock:
                    acked.append((int(r.json()["id"]), body))
                    if len(acked) > kill_after and not killed.is_set():
                        os.kill(proc.pid, signal.SIGKILL)  # the moment the 201 arrived
                        killed.set()

    threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    proc.wait(timeout=30)
    return acked, odd


def test_kill_9_the_moment_a_201_arrives_loses_nothing(db: Database, tmp_path: Path) -> None:
    """20 times: clients submit to a real `allot serve`, which is killed with SIGKILL the
    moment a 201 arrives. After a restart every acknowledged job is there with its exact id
    and body, and no id was given to two different jobs."""
    now = time.time()
    with db.session() as s:
        repo.set_inventory(s, [repo.NodeSpec("n1", "a100", 8)], "test", now)
        repo.set_org(s, {"org": [{"name": "llama", "guaranteed": {"a100": 4}},
                                 {"name": "vision"}]}, "test", now)
        _, token = repo.create_user(s, "ann", "admin", None, now)
    data = tmp_path / "data"
    rng = random.Random(11)
    acked: list[tuple[int, dict[str, Any]]] = []
    for k in range(KILLS):
        port = free_port()
        proc = _allot_serve(db, data, port)
        try:
            _wait_ready(f"http://127.0.0.1:{port}", proc)
            got, odd = _round(f"http://127.0.0.1:{port}", token, proc, k, rng.randrange(3))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert odd == [], odd
        assert got, f"round {k}: no job was acknowledged"
        acked.extend(got)
    by_id: dict[int, list[str]] = {}
    for job_id, body in acked:
        by_id.setdefault(job_id, []).append(body["command"])
    assert {i: c for i, c in by_id.items() if len(c) > 1} == {}, "one id, several jobs"
    port = free_port()
    proc = _allot_serve(db, data, port)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, proc)
        lost = []
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as h:
            for job_id, body in acked:
                r = h.get(f"/v1/jobs/{job_id}")
                got = r.json() if r.status_code == 200 else {}
                if {f: got.get(f) for f in body} != body:
                    lost.append((job_id, body, r.status_code, got.get("command")))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert lost == [], f"{len(lost)} of {len(acked)} acknowledged jobs lost or changed"


def test_the_row_is_committed_when_the_201_arrives(world: World) -> None:
    """Right after each 201 from a live server, a separate connection already sees the job."""
    missing = []
    with LiveServer(world.client.app) as server, httpx.Client(
            base_url=server.url, headers=world.h("member_own")) as h:
        for n in range(40):
            r = h.post("/v1/jobs", json={"team": "llama", "gpu_type": "a100", "gpus": 1,
                                         "command": f"echo {n}"})
            assert r.status_code == 201, r.text
            with world.db.sessions() as s:
                if s.get(JobRow, r.json()["id"]) is None:
                    missing.append(r.json()["id"])
    assert missing == []


def _session_scopes(route: APIRoute) -> list[str | None]:
    out, stack = [], list(route.dependant.dependencies)
    while stack:
        d = stack.pop()
        if d.call is get_session:
            out.append(d.scope)
        stack.extend(d.dependencies)
    return out


def test_every_route_commits_before_it_responds(world: World) -> None:
    """Every route that takes the request's session takes it with scope="function", whose
    exit (the commit) runs before the response is sent; with the default scope it ran
    after."""
    routes, stack = [], list(world.client.app.routes)
    while stack:  # the app's routes, and those of the routers it includes (at any depth)
        r = stack.pop()
        if isinstance(r, APIRoute):
            routes.append(r)
        included = getattr(r, "original_router", None) or getattr(r, "router", None)
        if included is not None and not isinstance(r, APIRoute):
            stack.extend(included.routes)
    scopes = {r.path + " " + ",".join(sorted(r.methods)): _session_scopes(r) for r in routes}
    with_session = {k: v for k, v in scopes.items() if v}
    assert len(with_session) >= 25, sorted(scopes)
    assert {k: v for k, v in with_session.items() if set(v) != {"function"}} == {}


def _row(model: Any, k: int) -> Any:
    t = 1_795_000_000.0 + k
    if model is User:
        return User(name=f"u{k}", role="admin", org_node=None, created_at=t)
    if model is JobRow:
        return JobRow(team="llama", user="u", gpu_type="a100", gpus=1, command="true",
                      state="pending", submit_time=t, placement=[], gpu_ids={})
    if model is RequestRow:
        return RequestRow(team="llama", period=f"2030-{k:02d}", gpu_type="a100", gpus=1,
                          created_by="u", updated_at=t, cooperates_with=[])
    if model is PlanRow:
        return PlanRow(period="2030-01", status="draft", scenario={}, result={},
                       created_by="u", created_at=t)
    return DisputeRow(team="llama", filed_by="u", subject_kind="plan", subject_id="1",
                      wants="w", why="y", state="open", quota_change={}, history=[],
                      created_at=t)


@pytest.mark.parametrize("model", [User, JobRow, RequestRow, PlanRow, DisputeRow],
                         ids=lambda m: m.__tablename__)
def test_a_deleted_id_is_never_given_out_again(db: Database, model: Any) -> None:
    """Delete the newest row of a table, insert another: it gets a new id (SQLite without
    AUTOINCREMENT reuses max(rowid)+1, so a lost or deleted job's id went to the next)."""
    with db.session() as s:
        first, newest = _row(model, 1), _row(model, 2)
        s.add_all([first, newest])
        s.flush()
        gone = newest.id
    with db.session() as s:
        s.execute(delete(model).where(model.id == gone))
    with db.session() as s:
        again = _row(model, 3)
        s.add(again)
        s.flush()
        assert again.id > gone


def test_a_deleted_request_id_is_not_reused(world: World) -> None:
    """DELETE /v1/requests/{id} of the newest request, then create another: a new id."""
    body = {"team": "llama", "period": "2026-12", "gpu_type": "a100", "gpus": 4}
    r = world.call("lead_own", "POST", "/v1/requests", json=body)
    assert r.status_code == 201, r.text
    old = r.json()["id"]
    assert world.call("lead_own", "DELETE", f"/v1/requests/{old}").status_code == 204
    r = world.call("lead_own", "POST", "/v1/requests", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["id"] != old
    assert world.call("lead_own", "GET", "/v1/requests?period=2026-12").json()["total"] == 1


def test_upgrading_an_old_database_keeps_users_tokens_and_ids(tmp_path: Path) -> None:
    """The SQLite rebuild that adds AUTOINCREMENT keeps every row and every API token (with
    foreign keys on, dropping the old users table would have cascaded into api_tokens),
    and the next id continues after the old ones."""
    from alembic import command

    from allotment.storage.db import alembic_config

    db = Database(f"sqlite:///{tmp_path / 'old.db'}", tmp_path / "data")
    with db.engine.connect() as conn:
        cfg = alembic_config(db.url)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
        conn.commit()
    tokens = [f"alt_old_token_{k}" for k in range(3)]
    with db.engine.begin() as conn:  # rows as revision 0002 holds them
        conn.exec_driver_sql("INSERT INTO org_nodes (name, parent, weight, position) "
                             "VALUES ('llama', NULL, 1.0, 1)")
        for k, token in enumerate(tokens):
            conn.exec_driver_sql("INSERT INTO users (name, role, org_node, created_at) "
                                 f"VALUES ('u{k}', 'member', 'llama', 1.0)")
            conn.exec_driver_sql("INSERT INTO api_tokens (user_id, token_hash, created_at) "
                                 f"VALUES ({k + 1}, '{repo.hash_token(token)}', 1.0)")
    db.upgrade()
    with db.session() as s:
        repo.set_inventory(s, [repo.NodeSpec("n1", "a100", 8)], "test", 1.0)
    with db.session() as s:
        assert [u.name for u in (repo.user_by_token(s, t) for t in tokens) if u] == [
            "u0", "u1", "u2"]
        user, _ = repo.create_user(s, "u3", "member", "llama", 2.0)
        assert user.id == 4
    db.dispose()
