"""Service fixtures: every test here runs against SQLite and against a real PostgreSQL
(``ALLOTMENT_TEST_PG_URL``, started by ``.ci/run`` through ``scripts/pg-test-server``)."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from allotment.service.app import create_app
from allotment.storage import repo
from allotment.storage.db import Database
from allotment.storage.models import Base

T0 = 1_795_000_000.0  # 2026-11-17, a fixed clock the tests move


def _pg_url() -> str:
    url = os.environ.get("ALLOTMENT_TEST_PG_URL", "")
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must run the PostgreSQL suite: ALLOTMENT_TEST_PG_URL is not set")
        pytest.skip("no PostgreSQL here: run `scripts/pg-test-server start` and set "
                    "ALLOTMENT_TEST_PG_URL to run this against PostgreSQL")
    return url


def fresh_db(kind: str, tmp_path: Path) -> Database:
    """A new database of ``kind``, its data directory (audit key, head file) in tmp_path."""
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'allotment.db'}"
    else:
        url = _pg_url()
        db = Database(url, data_dir=tmp_path / "data")
        with db.engine.begin() as conn:
            Base.metadata.drop_all(conn)
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
        db.dispose()
    db = Database(url, data_dir=tmp_path / "data")
    db.upgrade()
    return db


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    database = fresh_db(request.param, tmp_path)
    yield database
    database.dispose()


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


@dataclass
class World:
    """A small org on 2 nodes of 8 a100: research{llama 8, vision 8}, platform{infra 0}."""

    db: Database
    clock: Clock
    client: TestClient
    tokens: dict[str, str] = field(default_factory=dict)

    def h(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"} if who != "anon" else {}

    def call(self, who: str, method: str, path: str, **kw: Any) -> Any:
        return self.client.request(method, path, headers=self.h(who), **kw)

    def submit(self, who: str, team: str = "llama", gpus: int = 1, **kw: Any) -> dict[str, Any]:
        body = {"team": team, "gpu_type": "a100", "gpus": gpus, "command": "sleep 1", **kw}
        r = self.call(who, "POST", "/v1/jobs", json=body)
        assert r.status_code == 201, r.text
        return dict(r.json())


ORG = [{"name": "research", "children": [
    {"name": "llama", "guaranteed": {"a100": 8}},
    {"name": "vision", "guaranteed": {"a100": 8}}]},
    {"name": "platform", "children": [{"name": "infra"}]}]
USERS = {  # who -> (role, org node)
    "member_own": ("member", "llama"), "lead_own": ("lead", "llama"),
    "member_other": ("member", "vision"), "lead_other": ("lead", "vision"),
    "lead_parent": ("lead", "research"),
}


def make_world(db: Database, settings: dict[str, Any] | None = None) -> World:
    clock = Clock()
    with db.session() as s:
        _, admin = repo.create_user(s, "root", "admin", None, clock())
        repo.set_inventory(s, [repo.NodeSpec("n1", "a100", 8, 0, 0),
                               repo.NodeSpec("n2", "a100", 8, 1, 0)], "test", clock())
        repo.set_org(s, {"org": ORG}, "test", clock())
        tokens = {"admin": admin}
        for who, (role, node) in USERS.items():
            _, tokens[who] = repo.create_user(s, who, role, node, clock())
    app = create_app(db, settings={"clock": clock, "escalation_s": 3600.0, **(settings or {})})
    return World(db, clock, TestClient(app), tokens)


@pytest.fixture
def world(db: Database) -> World:
    return make_world(db)


def free_port() -> int:
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        return int(sk.getsockname()[1])


class LiveServer:
    """The app under uvicorn on loopback, in a thread of the test process."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        end = time.time() + 20
        while not self.server.started:
            if time.time() > end:
                raise RuntimeError("server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
