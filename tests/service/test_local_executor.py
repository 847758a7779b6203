"""The local executor with real processes, and the crash test: kill -9 the scheduler in the
middle of a run of admissions, restart it, and every job runs exactly once."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from allotment.backends.base import LaunchSpec
from allotment.backends.local import LocalBackend
from allotment.storage import repo
from allotment.storage.db import Database
from allotment.storage.jobs import JobSpec, submit
from tests.service.conftest import free_port


def _wait(backend: LocalBackend, job: int, state: str, timeout: float = 20) -> str:
    end = time.time() + timeout
    while time.time() < end:
        st = backend.status(job, 0)
        if st.state == state:
            return st.state
        time.sleep(0.05)
    return backend.status(job, 0).state


def test_runs_with_visible_devices_and_exit_code(tmp_path: Path) -> None:
    """The job sees CUDA_VISIBLE_DEVICES of its placement; its exit code is recorded, and a
    second launch of the same run starts nothing."""
    b = LocalBackend(tmp_path)
    spec = LaunchSpec(1, 0, "llama", "ann", "echo $CUDA_VISIBLE_DEVICES > seen; exit 3", 2,
                      {"local": [2, 5]})
    b.launch(spec)
    assert _wait(b, 1, "exited") == "exited"
    b.launch(spec)
    assert b.status(1, 0).exit_code == 3
    assert (b.run_dir(1, 0) / "seen").read_text().strip() == "2,5"


def test_an_exited_run_leaves_no_child_unwaited(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Once a run is seen exited, its runner (this process's child) has been waited for:
    no zombie is left until the service ends, and no ``ResourceWarning`` when the backend
    is dropped. (``poll`` is made to find the runner still running, as it does when the
    status is read between the runner's last write and its exit.)"""
    monkeypatch.setattr(subprocess.Popen, "poll", lambda self: None)
    b = LocalBackend(tmp_path)
    b.launch(LaunchSpec(1, 0, "llama", "ann", "true", 1))
    assert _wait(b, 1, "exited") == "exited"
    pid = int((b.control_dir(1, 0) / "pid").read_text())
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # already waited for: no such child any more


def test_sigterm_then_sigkill(tmp_path: Path) -> None:
    """A job that checkpoints on SIGTERM exits with its own code; one that ignores SIGTERM
    dies by SIGKILL and is reported gone (requeued by the loop)."""
    b = LocalBackend(tmp_path)
    b.launch(LaunchSpec(1, 0, "t", "u", "trap 'exit 7' TERM; sleep 30 & wait", 1))
    b.launch(LaunchSpec(2, 0, "t", "u", "trap '' TERM; sleep 30", 1))
    assert _wait(b, 1, "alive") == "alive" and _wait(b, 2, "alive") == "alive"
    time.sleep(0.3)
    b.terminate(1, 0)
    b.terminate(2, 0)
    assert _wait(b, 1, "exited") == "exited" and b.status(1, 0).exit_code == 7
    time.sleep(0.5)
    assert b.status(2, 0).state == "alive"
    b.kill(2, 0)
    assert _wait(b, 2, "gone") == "gone"


def _start(db: Database, data: Path, how: str, work: Path) -> subprocess.Popen[bytes]:
    """As root, each team's jobs run as a uid of its own, in work folders they can reach;
    otherwise the two teams share this user's account, which must be asked for."""
    allot = str(Path(sys.executable).parent / "allot")
    extra = ["--port", str(free_port())] if how == "serve" else []
    extra += ["--work-dir", str(work)] if os.geteuid() == 0 else ["--shared-account"]
    return subprocess.Popen([allot, how, "--db", db.url, "--data-dir", str(data),
                             "--fake-gpus", "--tick-s", "0.2", "--lease-ttl-s", "1", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _done(db: Database) -> int:
    with db.session() as s:
        return sum(j.state != "pending" for j in s.query(repo.JobRow).all())  # type: ignore[attr-defined]


@pytest.mark.parametrize("how", ["scheduler", "serve"])
def test_kill_9_mid_run_never_runs_a_job_twice(db: Database, tmp_path: Path, how: str) -> None:
    """Two kill -9 of the scheduler (alone, or the service process with its loop) during
    admissions: every job ends succeeded, and each job's command ran exactly once (each run
    says so in its log)."""
    now = time.time()
    with db.session() as s:
        repo.set_inventory(s, [repo.NodeSpec("local", "fake", 8)], "test", now)
        repo.set_org(s, {"org": [{"name": "a", "guaranteed": 4}, {"name": "b"}]}, "test", now)
        for k in range(40):
            submit(s, "u", JobSpec("a" if k % 2 else "b", "fake", 1 + k % 3,
                                   "echo ran $ALLOTMENT_JOB_ID; sleep 0.4"), now)
    data = tmp_path / "data"
    work = Path(tempfile.mkdtemp(prefix="allot-work-", dir="/tmp"))  # job accounts reach it
    work.chmod(0o711)
    for _ in range(2):
        proc = _start(db, data, how, work)
        before = _done(db)
        end = time.time() + 30
        while _done(db) == before and time.time() < end:  # kill it mid-run, not at start
            time.sleep(0.1)
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    proc = _start(db, data, how, work)
    try:
        end = time.time() + 120
        while time.time() < end:
            with db.session() as s:
                states = [j.state for j in s.query(repo.JobRow).all()]  # type: ignore[attr-defined]
            if all(st == "succeeded" for st in states):
                break
            time.sleep(0.3)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    assert states == ["succeeded"] * 40
    ids = [line.split()[1] for log in (data / "runs").glob("*/*/log")
           for line in log.read_text().splitlines() if line.startswith("ran ")]
    assert sorted(ids, key=int) == [str(k) for k in range(1, 41)]


def test_a_relative_runs_folder_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`allot up --data-dir .allotment/demo` gives a relative folder; the runner runs inside
    the run folder, so the backend must not hand it a relative path (it did: every run
    vanished at once)."""
    monkeypatch.chdir(tmp_path)
    b = LocalBackend(Path("rel") / "runs")
    b.launch(LaunchSpec(1, 0, "t", "u", "exit 0", 1))
    assert _wait(b, 1, "exited") == "exited" and b.status(1, 0).exit_code == 0
