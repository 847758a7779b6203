"""An in-memory backend for tests: runs "start" when launched and end when the test says."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from allotment.backends.base import LaunchSpec, RunStatus
from allotment.domain.jobstate import RunState
from allotment.reclaim.samples import GpuSample


@dataclass
class FakeBackend:
    name: str = "fake"
    launched: list[LaunchSpec] = field(default_factory=list)
    runs: dict[tuple[int, int], RunStatus] = field(default_factory=dict)
    signals: list[tuple[int, int, str]] = field(default_factory=list)
    util: dict[int, list[GpuSample]] = field(default_factory=dict)
    exit_on_term: bool = True

    def launch(self, spec: LaunchSpec) -> None:
        key = (spec.job_id, spec.attempt)
        if key in self.runs:
            return
        self.launched.append(spec)
        self.runs[key] = RunStatus(RunState.ALIVE)

    def status(self, job_id: int, attempt: int) -> RunStatus:
        return self.runs.get((job_id, attempt), RunStatus(RunState.NEVER))

    def finish(self, job_id: int, attempt: int, code: int = 0) -> None:
        self.runs[(job_id, attempt)] = RunStatus(RunState.EXITED, code)

    def terminate(self, job_id: int, attempt: int) -> None:
        self.signals.append((job_id, attempt, "TERM"))
        if self.exit_on_term and self.runs.get((job_id, attempt)) == RunStatus(RunState.ALIVE):
            self.runs[(job_id, attempt)] = RunStatus(RunState.EXITED, 143)

    def kill(self, job_id: int, attempt: int) -> None:
        self.signals.append((job_id, attempt, "KILL"))
        if self.runs.get((job_id, attempt)) == RunStatus(RunState.ALIVE):
            self.runs[(job_id, attempt)] = RunStatus(RunState.EXITED, 137)

    def samples(self, job_id: int, attempt: int, gpu_ids: dict[str, list[int]],
                since: float | None) -> list[GpuSample]:
        return [x for x in self.util.get(job_id, []) if since is None or x.time > since]

    def log_path(self, job_id: int, attempt: int) -> str | None:
        return None

    def run_id(self, job_id: int, attempt: int) -> str | None:
        return f"fake-{job_id}-{attempt}" if (job_id, attempt) in self.runs else None


@dataclass
class ReplayBackend:
    """The fake backend of ``allot simulate --engine service``: a run lasts the job's
    remaining work (its trace duration less the work kept from earlier runs); a run sent
    SIGTERM ends ``grace_s`` later unless its work is done first, and then keeps the work
    up to its last checkpoint (every ``checkpoint_s`` of the run), as the in-memory
    simulator models it. ``clock`` is the replay's virtual clock."""

    clock: Callable[[], float]
    durations: dict[int, float]  # job id -> seconds of work
    grace_s: float
    checkpoint_s: float | None
    name: str = "replay"
    done: dict[int, float] = field(default_factory=dict)  # job id -> work kept
    # (job, attempt) -> [start, ends_at, term_at or None, exit code or None]
    runs: dict[tuple[int, int], list[Any]] = field(default_factory=dict)

    def launch(self, spec: LaunchSpec) -> None:
        key = (spec.job_id, spec.attempt)
        if key in self.runs:
            return
        now = self.clock()
        # (now + duration) - kept: the in-memory engine's order of operations, to the bit
        ends_at = now + self.durations[spec.job_id] - self.done.get(spec.job_id, 0.0)
        self.runs[key] = [now, ends_at, None, None]

    def status(self, job_id: int, attempt: int) -> RunStatus:
        run = self.runs.get((job_id, attempt))
        if run is None:
            return RunStatus(RunState.NEVER)
        start, ends_at, term_at, code = run
        if code is None:
            now = self.clock()
            if now >= ends_at:
                run[3] = code = 0
                self.done[job_id] = self.durations[job_id]
            elif term_at is not None and now >= term_at + self.grace_s:
                run[3] = code = 143
                kept = 0.0
                ci = self.checkpoint_s
                if ci is not None and ci > 0:  # as RunningJob.last_checkpoint, to the bit
                    kept = (start + ((now - start) // ci) * ci) - start
                self.done[job_id] = self.done.get(job_id, 0.0) + kept
        return RunStatus(RunState.ALIVE) if code is None else RunStatus(RunState.EXITED, code)

    def next_event(self) -> float | None:
        """When the next live run ends (its work done, or its grace period over)."""
        times = [min(e, t + self.grace_s) if t is not None else e
                 for _, e, t, c in self.runs.values() if c is None]
        return min(times, default=None)

    def terminate(self, job_id: int, attempt: int) -> None:
        run = self.runs.get((job_id, attempt))
        if run is not None and run[2] is None:
            run[2] = self.clock()

    def kill(self, job_id: int, attempt: int) -> None:
        """The run ends at its grace period's end (``status`` models it)."""

    def samples(self, job_id: int, attempt: int, gpu_ids: dict[str, list[int]],
                since: float | None) -> list[GpuSample]:
        return []

    def log_path(self, job_id: int, attempt: int) -> str | None:
        return None

    def run_id(self, job_id: int, attempt: int) -> str | None:
        return f"replay-{job_id}-{attempt}" if (job_id, attempt) in self.runs else None
