"""An in-memory backend for tests: runs "start" when launched and end when the test says."""

from __future__ import annotations

from dataclasses import dataclass, field

from allotment.backends.base import LaunchSpec, RunStatus
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
        self.runs[key] = RunStatus("alive")

    def status(self, job_id: int, attempt: int) -> RunStatus:
        return self.runs.get((job_id, attempt), RunStatus("never"))

    def finish(self, job_id: int, attempt: int, code: int = 0) -> None:
        self.runs[(job_id, attempt)] = RunStatus("exited", code)

    def terminate(self, job_id: int, attempt: int) -> None:
        self.signals.append((job_id, attempt, "TERM"))
        if self.exit_on_term and self.runs.get((job_id, attempt)) == RunStatus("alive"):
            self.runs[(job_id, attempt)] = RunStatus("exited", 143)

    def kill(self, job_id: int, attempt: int) -> None:
        self.signals.append((job_id, attempt, "KILL"))
        if self.runs.get((job_id, attempt)) == RunStatus("alive"):
            self.runs[(job_id, attempt)] = RunStatus("exited", 137)

    def samples(self, job_id: int, attempt: int, gpu_ids: dict[str, list[int]],
                since: float | None) -> list[GpuSample]:
        return [x for x in self.util.get(job_id, []) if since is None or x.time > since]

    def log_path(self, job_id: int, attempt: int) -> str | None:
        return None

    def run_id(self, job_id: int, attempt: int) -> str | None:
        return f"fake-{job_id}-{attempt}" if (job_id, attempt) in self.runs else None
