"""A real one-machine Slurm (2 nodes x 8 fake GPUs, slurmdbd on MariaDB) for the backend's
integration tests, started once per session by ``scripts/slurm/setup_slurm.sh`` in its own
folder and stopped by PID (then removed) at the end: the tests leave no state behind.

Where Slurm is not installed, or not as root, these tests skip with a message; under
``ALLOTMENT_TEST_SLURM=1`` (set by ``.ci/run`` in CI) they fail instead."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from allotment.backends.slurm.cmd import Slurm
from allotment.service.app import create_app
from allotment.storage import repo
from allotment.storage.db import Database

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "slurm" / "setup_slurm.sh"
# one cluster per BASE and port offset: two test sessions on one host (two worktrees, say)
# run side by side when one sets ALLOTMENT_TEST_SLURM_BASE and ..._PORT_OFFSET (e.g. 100)
BASE = Path(os.environ.get("ALLOTMENT_TEST_SLURM_BASE", "/tmp/allotment-slurm-test"))
PORT_OFFSET = os.environ.get("ALLOTMENT_TEST_SLURM_PORT_OFFSET", "0")


def _unavailable(why: str) -> None:
    if os.environ.get("ALLOTMENT_TEST_SLURM") == "1":
        pytest.fail(f"the Slurm suite must run here: {why}")
    pytest.skip(f"{why}: run `bash scripts/slurm/setup_slurm.sh install` as root (CI does)")


@dataclass
class Cluster:
    base: Path
    slurm: Slurm

    def script(self, *args: str) -> None:
        subprocess.run(["bash", str(SCRIPT), *args], check=True, capture_output=True,
                       env={**os.environ, "BASE": str(self.base),
                            "SLURM_PORT_OFFSET": PORT_OFFSET}, timeout=180)

    def sh(self, *args: str, check: bool = True) -> str:
        return self.slurm.run(list(args), check=check)

    def squeue(self) -> list[dict[str, str]]:
        keys = ("id", "name", "account", "qos", "state", "reason", "tres")
        return [dict(zip(keys, r, strict=False)) for r in self.slurm.rows(
            ["squeue", "-h", "-o", "%i|%j|%a|%q|%T|%r|%b"])]

    def sbatch(self, *args: str) -> str:
        return self.sh("sbatch", "--parsable", "-o", "/dev/null", *args).strip()

    def job(self, sid: str) -> dict[str, str]:
        return next((j for j in self.squeue() if j["id"] == sid), {})

    def clean(self) -> None:
        """No job left (any user's), and no account, user or QOS that a test made."""
        ids = [j["id"] for j in self.squeue()]
        if ids:
            self.sh("scancel", *ids, check=False)
        wait_for(lambda: not [j for j in self.squeue()
                              if j["state"] not in ("COMPLETED", "CANCELLED", "FAILED")], 60)
        for acct in [r[0] for r in self.slurm.rows(
                ["sacctmgr", "-n", "-P", "show", "account", "format=account"])]:
            if acct != "root":
                self.sh("sacctmgr", "-i", "remove", "account", "where", f"name={acct}",
                        check=False)
        for qos in [r[0] for r in self.slurm.rows(["sacctmgr", "-n", "-P", "show", "qos",
                                                   "format=name"])]:
            if qos != "normal":
                self.sh("sacctmgr", "-i", "remove", "qos", "where", f"name={qos}", check=False)


def wait_for(cond: Callable[[], Any], timeout: float = 30, every: float = 0.3) -> Any:
    end = time.time() + timeout
    while True:
        got = cond()
        if got or time.time() > end:
            return got
        time.sleep(every)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    if shutil.which("slurmctld") is None or shutil.which("sbatch") is None:
        _unavailable("Slurm is not installed here")
    if os.geteuid() != 0:
        _unavailable("the test cluster's slurmd must run as root")
    c = Cluster(BASE, Slurm(str(BASE / "etc" / "slurm.conf")))
    try:
        c.script("wipe")
        c.script("start")
    except subprocess.CalledProcessError as exc:
        c.script("wipe")
        pytest.fail(f"Slurm did not start: {exc.stderr.decode()[-2000:]}")
    try:
        yield c
    finally:
        c.script("wipe")  # every daemon stopped by its PID, then the folder removed


@pytest.fixture
def slurm(cluster: Cluster) -> Iterator[Cluster]:
    cluster.clean()
    yield cluster
    cluster.clean()


ORG = [{"name": "research", "children": [
    {"name": "Llama", "guaranteed": 4},  # a capital: Slurm's account is "llama"
    {"name": "vision", "guaranteed": 8}]},
    {"name": "platform", "children": [{"name": "infra"}]}]


@dataclass
class Service:
    db: Database
    client: TestClient
    admin: str
    tokens: dict[str, str]

    def call(self, who: str, method: str, path: str, **kw: Any) -> Any:
        token = self.admin if who == "admin" else self.tokens[who]
        return self.client.request(method, path, headers={"Authorization": f"Bearer {token}"},
                                   **kw)

    def submit(self, who: str, team: str, gpus: int, command: str) -> int:
        r = self.call(who, "POST", "/v1/jobs", json={
            "team": team, "gpu_type": "gpu", "gpus": gpus, "command": command})
        assert r.status_code == 201, r.text
        return int(r.json()["id"])

    def job(self, jid: int) -> dict[str, Any]:
        return dict(self.call("admin", "GET", f"/v1/jobs/{jid}").json())


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    db = Database(f"sqlite:///{tmp_path / 'allotment.db'}", data_dir=tmp_path / "data")
    db.upgrade()
    now = time.time()
    with db.session() as s:
        _, admin = repo.create_user(s, "root", "admin", None, now)
        repo.set_inventory(s, [repo.NodeSpec("node1", "gpu", 8), repo.NodeSpec("node2", "gpu", 8)],
                           "test", now)
        repo.set_org(s, {"org": ORG}, "test", now)
        tokens = {}
        for who, node in (("ann", "Llama"), ("vic", "vision"), ("ian", "infra")):
            _, tokens[who] = repo.create_user(s, who, "member", node, now)
    app = create_app(db, settings={"runs_dir": str(tmp_path / "runs")})
    yield Service(db, TestClient(app), admin, tokens)
    db.dispose()
