"""Values that were strings are typed: a run's status is a ``RunState`` from every backend,
an idle action's kind an ``IdleActionKind``; the job states are one enum."""

from __future__ import annotations

import time
from pathlib import Path

from allotment.backends.base import LaunchSpec, RunStatus
from allotment.backends.fake import FakeBackend, ReplayBackend
from allotment.backends.local import LocalBackend
from allotment.backends.slurm.backend import run_status
from allotment.domain.jobstate import ACTIVE, FINAL, JobState, RunState
from allotment.policies.idle import IdleActionKind, IdleTracker

SPEC = LaunchSpec(1, 0, "llama", "ann", "exit 3", 1)


def _is(st: RunStatus, state: RunState) -> bool:
    return type(st.state) is RunState and st.state is state


def test_fake_backend_answers_run_states() -> None:
    b = FakeBackend()
    assert _is(b.status(1, 0), RunState.NEVER)
    b.launch(SPEC)
    assert _is(b.status(1, 0), RunState.ALIVE)
    b.terminate(1, 0)
    assert _is(b.status(1, 0), RunState.EXITED) and b.status(1, 0).exit_code == 143


def test_replay_backend_answers_run_states() -> None:
    now = [0.0]
    b = ReplayBackend(lambda: now[0], {1: 10.0}, grace_s=5.0, checkpoint_s=None)
    assert _is(b.status(1, 0), RunState.NEVER)
    b.launch(SPEC)
    assert _is(b.status(1, 0), RunState.ALIVE)
    now[0] = 10.0
    assert _is(b.status(1, 0), RunState.EXITED) and b.status(1, 0).exit_code == 0


def test_local_backend_answers_run_states(tmp_path: Path) -> None:
    """A real process: never launched, then exited with its code."""
    b = LocalBackend(tmp_path)
    assert _is(b.status(1, 0), RunState.NEVER)
    b.launch(SPEC)
    end = time.time() + 20
    while b.status(1, 0).state != RunState.EXITED and time.time() < end:
        time.sleep(0.05)
    assert _is(b.status(1, 0), RunState.EXITED) and b.status(1, 0).exit_code == 3


def test_slurm_states_map_to_run_states() -> None:
    assert _is(run_status("RUNNING", "None", ""), RunState.ALIVE)
    assert _is(run_status("PENDING", "Priority", ""), RunState.QUEUED)
    assert _is(run_status("NODE_FAIL", "", ""), RunState.GONE)
    assert _is(run_status("COMPLETED", "", "0:0"), RunState.EXITED)


def test_idle_actions_have_kinds() -> None:
    """Idle for the window: warned; still idle after reclaim_after_s: reclaimed."""
    tracker = IdleTracker(window_s=60.0, reclaim_after_s=30.0)
    got = [a.kind for t in range(0, 121, 10) for a in tracker.observe("j", 1, t, 0.0)]
    assert got == [IdleActionKind.WARN, IdleActionKind.RECLAIM]
    assert all(type(k) is IdleActionKind for k in got)


def test_job_states_split_into_waiting_active_and_final() -> None:
    """Every state is pending, active (holding GPUs) or final, exactly one of them."""
    assert sorted([JobState.PENDING, *ACTIVE, *FINAL]) == sorted(JobState)
    assert not set(ACTIVE) & set(FINAL)
