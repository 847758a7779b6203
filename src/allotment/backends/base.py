"""The one contract every backend keeps (local processes, fake, Slurm).

A run is identified by ``(job_id, attempt)``; every call is idempotent for it:
``launch`` of a run that is alive or has finished does nothing, and ``status`` answers the
same after a restart of the service as before it. That is what lets the scheduler loop
commit a decision first and act on it after, and recover from a crash between the two.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from allotment.domain.jobstate import RunState
from allotment.reclaim.samples import GpuSample

JOB_PATH = "/usr/local/bin:/usr/bin:/bin"  # a job's PATH: its environment is built from scratch


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    job_id: int
    attempt: int
    team: str
    user: str
    command: str
    gpus: int
    gpu_ids: dict[str, list[int]] = field(default_factory=dict)  # node -> GPU indices
    gpu_type: str = ""
    borrowed_gpus: int = 0  # > 0: runs beyond the team's guarantee, preemptible


@dataclass(frozen=True, slots=True)
class RunStatus:
    """``ALIVE``; ``QUEUED`` (handed to a workload manager that has not started it yet, or
    requeued it: ``detail`` says why, e.g. Slurm's Reason); ``EXITED`` with ``exit_code``;
    ``GONE`` (launched, vanished without an exit code: killed with the service or by
    SIGKILL); ``NEVER`` (no trace of a launch). ``domain.jobstate.RunState``."""

    state: RunState
    exit_code: int | None = None
    detail: str | None = None


class Backend(Protocol):
    """Every method may raise ``BackendUnavailable`` when the backend cannot be reached;
    the loop then acts on nothing until it can. ``launch`` may raise ``LaunchRefused``
    (nothing started): the job goes back to pending with that reason.

    Optional, looked up by the loop: ``refusal(team, user, teams) -> str | None`` (why a job
    may not start now: the loop does not admit it and shows the reason), ``isolation() ->
    dict`` (how jobs are kept apart, with a ``warning``, shown by ``/health``), and
    ``import_usage`` (Slurm)."""

    name: str

    def launch(self, spec: LaunchSpec) -> None: ...

    def status(self, job_id: int, attempt: int) -> RunStatus: ...

    def terminate(self, job_id: int, attempt: int) -> None:
        """Ask the run to stop (SIGTERM): it may checkpoint during the grace period."""

    def kill(self, job_id: int, attempt: int) -> None:
        """Stop the run now (SIGKILL)."""

    def samples(self, job_id: int, attempt: int, gpu_ids: dict[str, list[int]],
                since: float | None) -> list[GpuSample]:
        """Utilisation samples of the run's GPUs taken after ``since``."""

    def log_path(self, job_id: int, attempt: int) -> str | None: ...

    def run_id(self, job_id: int, attempt: int) -> str | None:
        """The backend's own id of the run (Slurm job id, runner pid), if it has one."""
