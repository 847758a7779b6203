"""One contract for every backend (``backends/base.py``), run against the fake, the local
and the Slurm backend: the scheduler loop relies on each of these."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from allotment.backends.base import Backend, LaunchSpec, RunStatus
from allotment.backends.fake import FakeBackend
from allotment.backends.local import LocalBackend
from allotment.backends.slurm.backend import SlurmBackend
from allotment.backends.slurm.service import run_sync
from tests.slurm.conftest import Cluster, Service, wait_for


@dataclass
class Harness:
    backend: Backend
    restart: Callable[[], Backend]  # a new backend object on the same state (a restart)
    finish: Callable[[int, int, int], None]  # makes a run that "exits CODE" end (fake only)
    timeout: float
    launches: Callable[[int, int], int]  # how many times the run was started


@pytest.fixture(params=["fake", "local", "slurm"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    if request.param == "fake":
        fb = FakeBackend()
        yield Harness(fb, lambda: fb, fb.finish, 5,
                      lambda j, a: sum((x.job_id, x.attempt) == (j, a) for x in fb.launched))
    elif request.param == "local":
        lb = LocalBackend(tmp_path / "runs")
        yield Harness(lb, lambda: LocalBackend(tmp_path / "runs"), lambda j, a, c: None, 20,
                      lambda j, a: int((tmp_path / "runs" / str(j) / str(a) / "pid").exists()))
    else:
        c: Cluster = request.getfixturevalue("slurm")
        svc: Service = request.getfixturevalue("service")
        run_sync(svc.db, c.slurm, time.time(), dry_run=False, submit_users=["root"])
        sb = SlurmBackend(c.slurm, tmp_path / "runs", prefix=f"ct{time.time_ns() % 10**6}")

        def count(j: int, a: int) -> int:
            return len(c.slurm.rows(["sacct", "-X", "-D", "-n", "-P", "-a", "--name",
                                     sb.job_name(j, a), "-o", "jobidraw"]))

        yield Harness(sb, lambda: SlurmBackend(c.slurm, tmp_path / "runs", prefix=sb.prefix),
                      lambda j, a, code: None, 60, count)


def spec(job: int, command: str, gpus: int = 1) -> LaunchSpec:
    return LaunchSpec(job, 0, "Llama", "ann", command, gpus, {"node1": list(range(gpus))},
                      "gpu", 0)


def until(h: Harness, job: int, pred: Callable[[RunStatus], bool]) -> RunStatus:
    end = time.time() + h.timeout
    st = h.backend.status(job, 0)
    while not pred(st) and time.time() < end:
        time.sleep(0.2)
        st = h.backend.status(job, 0)
    return st


def test_unknown_run_was_never_launched(harness: Harness) -> None:
    assert harness.backend.status(99, 0) == RunStatus("never")
    assert harness.backend.run_id(99, 0) is None


def test_exit_code_is_reported_and_a_second_launch_starts_nothing(harness: Harness) -> None:
    h = harness
    h.backend.launch(spec(1, "sleep 1; exit 3"))
    assert h.backend.status(1, 0).state in ("queued", "alive")
    assert h.backend.run_id(1, 0) is not None
    h.backend.launch(spec(1, "sleep 1; exit 3"))  # a retry after a crash, say
    h.finish(1, 0, 3)
    st = until(h, 1, lambda s: s.state == "exited")
    assert (st.state, st.exit_code) == ("exited", 3)
    h.backend.launch(spec(1, "sleep 1; exit 3"))  # and after it ended
    assert h.restart().status(1, 0).exit_code == 3  # a restarted service sees the same
    # sacct lags (about a second, more on a loaded host): wait for the record, then count
    wait_for(lambda: h.launches(1, 0) >= 1, 10 if h.timeout > 5 else 0)
    time.sleep(1.0 if h.timeout > 5 else 0)  # a second submission would have shown by now
    assert h.launches(1, 0) == 1


def test_terminate_stops_a_run_and_kill_a_stubborn_one(harness: Harness) -> None:
    h = harness
    h.backend.launch(spec(2, "trap 'exit 7' TERM; sleep 300 & wait"))
    h.backend.launch(spec(3, "trap '' TERM; sleep 300"))
    assert until(h, 2, lambda s: s.state == "alive").state == "alive"
    assert until(h, 3, lambda s: s.state == "alive").state == "alive"
    time.sleep(2.0 if h.timeout > 20 else 0.5)  # let the traps be set (Slurm: the step starts late)
    h.backend.terminate(2, 0)
    st = until(h, 2, lambda s: s.state in ("exited", "gone"))
    assert st.state == "exited" and st.exit_code in (7, 143)
    h.backend.kill(3, 0)
    st = until(h, 3, lambda s: s.state in ("exited", "gone"))
    assert st.state in ("exited", "gone")
    assert h.restart().status(3, 0).state == st.state


