"""Submits under load (``benchmarks/submit_load.py``): concurrent submits share one write
transaction and one commit (``storage.group``), yet each caller still gets its own answer:
its job committed before its 201, or its own error with nothing of it written; and the
SQLite writer queue still serves writers in arrival order."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from allotment.errors import ConfigurationError, InputError
from allotment.storage import jobs as jobrepo
from allotment.storage import repo
from allotment.storage.db import WriterQueue
from allotment.storage.group import GroupCommit
from allotment.storage.models import InboxRow, JobRow
from tests.service.conftest import LiveServer, World


def _setup(db: Any) -> None:
    with db.session() as s:
        repo.set_inventory(s, [repo.NodeSpec("n1", "a100", 8)], "test", 0.0)
        repo.set_org(s, {"org": [{"name": "llama"}]}, "test", 0.0)


def _submit(command: str) -> Any:
    def write(s: Session) -> JobRow:
        return jobrepo.submit(s, "ann", jobrepo.JobSpec("llama", "a100", 1, command), 0.0)
    return write


def _commands(db: Any) -> list[str]:
    with db.sessions() as s:
        return sorted(s.execute(select(JobRow.command)).scalars())


def _submit_notes(s: Session) -> int:
    return int(s.execute(select(func.count()).select_from(InboxRow).where(
        InboxRow.kind == "submit")).scalar_one())


def _count_commits(db: Any) -> list[int]:
    commits = [0]

    @event.listens_for(db.engine, "commit")
    def _count(_conn: Any) -> None:
        commits[0] += 1

    return commits


def _run_while_first_blocks(group: GroupCommit, fns: list[Any]) -> list[Any]:
    """Run ``fns`` concurrently through ``group``; the first one holds its batch open until
    all the others are queued, so that they make one batch of their own."""
    release = threading.Event()

    def first(s: Session) -> Any:
        assert release.wait(30)
        return fns[0](s)

    def outcome(fn: Any) -> Any:
        try:
            return group.run(fn)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(len(fns)) as pool:
        futures = [pool.submit(outcome, first)]
        while not group.leading:
            time.sleep(0.005)
        futures += [pool.submit(outcome, fn) for fn in fns[1:]]
        while len(group.waiting) < len(fns) - 1:
            time.sleep(0.005)
        release.set()
        return [f.result(timeout=60) for f in futures]


def test_concurrent_callers_share_one_commit(db: Any) -> None:
    """20 callers arriving while a batch runs are written in one more transaction: 2
    commits for 21 jobs, each caller gets its own job back, committed."""
    _setup(db)
    group = GroupCommit(db)
    commits = _count_commits(db)
    got = _run_while_first_blocks(group, [_submit(f"job {k}") for k in range(21)])
    assert commits[0] == 2
    assert [j.command for j in got] == [f"job {k}" for k in range(21)]
    assert len({j.id for j in got}) == 21
    assert _commands(db) == sorted(f"job {k}" for k in range(21))
    with db.sessions() as s:  # the scheduler is told of each one
        assert _submit_notes(s) == 21


def test_one_callers_error_undoes_its_writes_only(db: Any) -> None:
    """A caller whose function fails after writing gets its own error; its writes are
    rolled back, and the others of its batch are committed."""
    _setup(db)

    def wrote_then_failed(s: Session) -> JobRow:
        jobrepo.submit(s, "ann", jobrepo.JobSpec("llama", "a100", 1, "half-done"), 0.0)
        raise InputError("gpus", "refused after writing")

    def invalid(s: Session) -> JobRow:  # refused by the usual checks
        return jobrepo.submit(s, "ann", jobrepo.JobSpec("llama", "h100", 1, "bad type"), 0.0)

    fns = [_submit("a"), _submit("b"), wrote_then_failed, invalid, _submit("c")]
    got = _run_while_first_blocks(GroupCommit(db), fns)
    assert isinstance(got[2], InputError) and got[2].field == "gpus"
    assert isinstance(got[3], InputError) and got[3].field == "gpu_type"
    assert [j.command for j in (got[0], got[1], got[4])] == ["a", "b", "c"]
    assert _commands(db) == ["a", "b", "c"]
    with db.sessions() as s:
        assert _submit_notes(s) == 3


def test_a_failed_commit_fails_every_caller_of_the_batch(db: Any) -> None:
    """When the shared transaction cannot commit, no caller of that batch is told its job
    was written, and none of it was."""
    _setup(db)

    class DiskFull(Exception):
        pass

    def breaks_the_commit(s: Session) -> JobRow:
        def boom(_s: Session) -> None:
            raise DiskFull("the commit failed")
        event.listen(s, "before_commit", boom)
        return _submit("b")(s)

    got = _run_while_first_blocks(GroupCommit(db), [_submit("first"), _submit("a"),
                                                    breaks_the_commit, _submit("c")])
    assert not isinstance(got[0], Exception)  # the first batch, on its own, committed
    assert [type(g) for g in got[1:]] == [DiskFull] * 3
    assert _commands(db) == ["first"]


def test_submits_under_load_each_get_their_own_answer(world: World) -> None:
    """Over a live server, concurrent submits of several users are checked one by one
    inside their shared transactions: a foreign team is 403, an unknown GPU type 422
    naming the field, and every 201 is a committed job of its submitter."""
    bodies: list[tuple[str, dict[str, Any], int]] = []
    for n in range(30):
        bodies.append(("member_own", {"team": "llama", "gpu_type": "a100", "gpus": 1,
                                      "command": f"ok {n}"}, 201))
        if n % 10 == 0:
            bodies.append(("member_own", {"team": "vision", "gpu_type": "a100", "gpus": 1,
                                          "command": f"foreign {n}"}, 403))
            bodies.append(("member_other", {"team": "vision", "gpu_type": "z9", "gpus": 1,
                                            "command": f"bad type {n}"}, 422))
    with LiveServer(world.client.app) as server:
        def post(item: tuple[str, dict[str, Any], int]) -> tuple[int, dict[str, Any]]:
            who, body, _ = item
            r = httpx.post(f"{server.url}/v1/jobs", json=body, headers=world.h(who),
                           timeout=60)
            return r.status_code, r.json()

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(post, bodies))
    assert [code for code, _ in answers] == [want for _, _, want in bodies]
    assert all(a.get("field") == "gpu_type" for code, a in answers if code == 422)
    with world.db.sessions() as s:
        rows = {j.id: (j.command, j.user) for j in s.execute(select(JobRow)).scalars()}
    acked = {a["id"]: (a["command"], a["user"]) for code, a in answers if code == 201}
    assert rows == acked
    assert sorted(c for c, _ in acked.values()) == sorted(f"ok {n}" for n in range(30))


def test_writer_queue_serves_writers_in_arrival_order() -> None:
    """Writers queued behind the holder get the lock one at a time, in the order they
    arrived; one that gives up waiting is refused and does not hold up those behind."""
    queue = WriterQueue(timeout_s=30)
    order: list[str] = []
    queue.acquire("A")

    def writer(name: str) -> None:
        queue.acquire(name)
        order.append(name)
        queue.release(name)

    threads = []
    for name in "BCD":
        threads.append(threading.Thread(target=writer, args=(name,)))
        threads[-1].start()
        while len(queue.waiting) < len(threads):
            time.sleep(0.002)
    queue.release("A")
    for t in threads:
        t.join(10)
    assert order == ["B", "C", "D"]
    assert queue.holder is None

    impatient = WriterQueue(timeout_s=0.2)
    impatient.acquire("A")
    behind: list[str] = []
    late = threading.Thread(target=lambda: (impatient.acquire("C"), behind.append("C")))
    with pytest.raises(ConfigurationError, match="database is locked"):
        t0 = time.monotonic()
        threading.Timer(0.05, late.start).start()
        impatient.acquire("B")
    assert time.monotonic() - t0 >= 0.2
    impatient.release("A")
    late.join(10)
    assert behind == ["C"] and impatient.holder == "C"


def test_sqlite_submits_commit_before_the_answer(tmp_path: Path) -> None:
    """Right after ``run`` returns, another connection of another engine sees the job (the
    group's commit is a real one, on disk, not a deferred one)."""
    from allotment.storage.db import Database

    db = Database(f"sqlite:///{tmp_path / 'a.db'}", tmp_path / "data")
    db.upgrade()
    _setup(db)
    job = GroupCommit(db).run(_submit("seen"))
    other = Database(db.url, tmp_path / "data")
    try:
        with other.sessions() as s:
            assert s.get(JobRow, job.id) is not None
    finally:
        other.dispose()
        db.dispose()
