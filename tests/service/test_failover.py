"""Failover: two `allot scheduler` processes on one PostgreSQL with the local executor.
Exactly one acts (the lease); kill -9 the active one right after it launched a job and the
other takes over within the lease time, with the memory the first one left (decayed
usage, reservations), and launches nothing twice."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from allotment.storage import repo
from allotment.storage.db import Database
from allotment.storage.jobs import JobSpec, submit
from allotment.storage.models import JobRow, Lease
from tests.service.conftest import World, free_port, fresh_db

ALLOT = str(Path(sys.executable).parent / "allot")
TTL_S = 3.0
TICK_S = 0.2
JOBS = 24


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[Database]:
    """The real PostgreSQL (failover needs two processes on one database server)."""
    db = fresh_db("postgresql", tmp_path)
    yield db
    db.dispose()


def _start(db: Database, data: Path, work: Path, port: int) -> subprocess.Popen[bytes]:
    extra = ["--work-dir", str(work)] if os.geteuid() == 0 else ["--shared-account"]
    return subprocess.Popen([ALLOT, "scheduler", "--db", db.url, "--data-dir", str(data),
                             "--fake-gpus", "--tick-s", str(TICK_S), "--lease-ttl-s",
                             str(TTL_S), "--min-runtime-s", "0", "--metrics-port", str(port),
                             *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _holder(db: Database) -> tuple[str | None, float]:
    with db.session() as s:
        row = s.execute(select(Lease).where(Lease.role == "scheduler")).scalar()
        return (row.holder, row.expires_at) if row is not None else (None, 0.0)


def _pid(holder: str | None) -> int | None:
    return int(holder.split(":")[1]) if holder else None


def _active(port: int) -> float | None:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.TransportError:
        return None
    m = re.search(r"^allotment_scheduler_active (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def _states(db: Database) -> dict[int, str]:
    with db.session() as s:
        return {j: str(st) for j, st in s.execute(select(JobRow.id, JobRow.state))}


def _memory(db: Database) -> dict[str, dict[str, list[float]]]:
    with db.session() as s:
        return json.loads(repo.get_setting(s, "scheduler_memory") or "{}")  # type: ignore[no-any-return]


def test_kill_9_the_active_scheduler_and_the_other_takes_over(pg: Database,
                                                             tmp_path: Path) -> None:
    """One of two schedulers acts; SIGKILL it right after a launch; the standby holds the
    lease within the lease time, continues from the persisted memory, and every job runs
    exactly once."""
    now = time.time()
    with pg.session() as s:
        repo.set_inventory(s, [repo.NodeSpec("local", "fake", 8)], "test", now)
        repo.set_org(s, {"org": [{"name": "a", "guaranteed": 4}, {"name": "b"}]}, "test", now)
        for k in range(JOBS):
            submit(s, "u", JobSpec("a" if k % 2 else "b", "fake", 1 + k % 3,
                                   "echo ran $ALLOTMENT_JOB_ID; sleep 1.5"), now)
    data = tmp_path / "data"  # shared: the audit key, and the runs both executors adopt
    work = Path(tempfile.mkdtemp(prefix="allot-work-", dir="/tmp"))
    work.chmod(0o711)
    ports = [free_port(), free_port()]
    procs = {}
    try:
        first = _start(pg, data, work, ports[0])
        end = time.time() + 60
        while _pid(_holder(pg)[0]) != first.pid:
            assert time.time() < end and first.poll() is None, "no scheduler took the lease"
            time.sleep(0.1)
        second = _start(pg, data, work, ports[1])
        procs = {first.pid: (first, ports[0]), second.pid: (second, ports[1])}
        # exactly one acts: the lease stays with the first; their gauges say 1 and 0
        end = time.time() + 60
        while _active(ports[1]) is None:
            assert time.time() < end and second.poll() is None, "standby did not start"
            time.sleep(0.2)
        for _ in range(10):
            assert _pid(_holder(pg)[0]) == first.pid
            assert (_active(ports[0]), _active(ports[1])) == (1.0, 0.0)
            time.sleep(0.2)
        # kill -9 the active one the moment it launched a job
        seen = {j for j, st in _states(pg).items() if st != "pending"}
        end = time.time() + 60
        while True:
            started = {j for j, st in _states(pg).items() if st != "pending"} - seen
            if started:
                break
            assert time.time() < end, "no launch to kill it after"
            time.sleep(0.02)
        memory_before = _memory(pg)
        os.kill(first.pid, signal.SIGKILL)
        killed_at = time.time()
        first.wait()
        end = killed_at + TTL_S + 3 * TICK_S + 2.0
        while _pid(_holder(pg)[0]) != second.pid:
            assert time.time() < end, "the standby did not take over within the lease time"
            time.sleep(0.05)
        took = time.time() - killed_at
        assert took <= TTL_S + 3 * TICK_S + 1.0, took
        # the same memory: the standby's first save continues the first's decayed usage
        end = time.time() + 20
        while _memory(pg) == memory_before and time.time() < end:
            time.sleep(0.1)
        after = _memory(pg)
        for team, (usage, at) in memory_before.get("decayed", {}).items():
            assert team in after["decayed"], team
            assert after["decayed"][team][1] >= at
            assert after["decayed"][team][0] >= usage * 0.99, (team, usage, after)
        assert memory_before.get("decayed"), memory_before
        end = time.time() + 180
        while not all(st == "succeeded" for st in _states(pg).values()):
            assert time.time() < end, _states(pg)
            assert second.poll() is None, "the standby died"
            time.sleep(0.3)
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    ids = [line.split()[1] for log in (data / "runs").glob("*/*/log")
           for line in log.read_text().splitlines() if line.startswith("ran ")]
    assert sorted(ids, key=int) == [str(k) for k in range(1, JOBS + 1)], ids
    with pg.session() as s:
        attempts = list(s.execute(select(JobRow.attempts)).scalars())
    assert attempts == [0] * JOBS, attempts  # no job was started twice nor requeued
    del took


def test_a_scheduler_that_lost_its_lease_mid_tick_commits_no_decision(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tick slower than the lease (a pause after its lease check): the other scheduler
    has taken over meanwhile, so the slow one's decisions are refused in their own
    transaction and it stands by; only the lease holder admits."""
    from allotment.backends.fake import FakeBackend
    from tests.service.test_loop import loop_for

    fb = FakeBackend()
    slow, other = loop_for(world, fb, lease_ttl_s=10), loop_for(world, fb, lease_ttl_s=10)
    assert slow.tick().acted
    world.clock.advance(11)  # the slow one's lease ran out: the other takes over
    assert other.tick().acted and not slow.tick().acted
    jid = world.submit("member_own", gpus=2)["id"]
    # the slow one passed its lease check just before the takeover, then paused
    monkeypatch.setattr(slow, "_lease", lambda now: True)
    report = slow.tick()
    assert report.admitted == [] and not report.acted
    assert world.call("admin", "GET", f"/v1/jobs/{jid}").json()["state"] == "pending"
    assert other.tick().admitted == [jid]
