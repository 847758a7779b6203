"""Workloads (jobs): a gang of GPUs of one type that runs all-or-nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NewType

from allotment.domain.cluster import GpuType
from allotment.domain.org import TeamId

JobId = NewType("JobId", str)


@dataclass(frozen=True, slots=True)
class Workload:
    """A job as submitted. ``duration`` is the true run time, known only to the simulator.

    The scheduler never reads ``duration``; a policy that uses estimates reads ``estimate_s``.
    ``seq`` breaks ties between jobs submitted at the same time (lower first).
    ``reservation`` names the launch reservation (``domain.reservation``) the job runs in.
    """

    id: JobId
    team: TeamId
    gpu_type: GpuType
    gpus: int
    submit_time: float
    seq: int
    priority: int = 0
    preemptible: bool = True
    duration: float | None = None
    estimate_s: float | None = None
    user: str | None = None
    reservation: str | None = None


class RunningJob:
    """A job holding GPUs now: where, since when, and how much work a preemption would lose.

    ``placement`` lists ``(node index, gpus)``. ``segment_start`` is when this run began
    (a requeued job starts a new segment). ``attained_gpu_s`` is the GPU-time of earlier
    segments. ``checkpoint_interval_s`` models periodic checkpoints from the segment start
    (None: never checkpoints); ``last_checkpoint`` may also be reported by the job itself.
    ``terminating_since`` is set once a preemption was sent (the grace period runs).
    ``borrowed_gpus``: how many of its GPUs were beyond its team's guarantee at admission.
    (A class, not a dataclass, so that the optional native build makes its ``__init__``
    native: one is made for every start.)
    """

    def __init__(self, workload: Workload, placement: tuple[tuple[int, int], ...],
                 segment_start: float, attained_gpu_s: float = 0.0,
                 checkpoint_interval_s: float | None = None,
                 reported_checkpoint: float | None = None,
                 terminating_since: float | None = None, borrowed_gpus: int = 0) -> None:
        self.workload = workload
        self.placement = placement
        self.segment_start = segment_start
        self.attained_gpu_s = attained_gpu_s
        self.checkpoint_interval_s = checkpoint_interval_s
        self.reported_checkpoint = reported_checkpoint
        self.terminating_since = terminating_since
        self.borrowed_gpus = borrowed_gpus

    def _fields(self) -> tuple[object, ...]:
        return (self.workload, self.placement, self.segment_start, self.attained_gpu_s,
                self.checkpoint_interval_s, self.reported_checkpoint, self.terminating_since,
                self.borrowed_gpus)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunningJob) and self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable, as a dataclass without frozen

    def __repr__(self) -> str:
        return (f"RunningJob(workload={self.workload!r}, placement={self.placement!r}, "
                f"segment_start={self.segment_start!r}, attained_gpu_s={self.attained_gpu_s!r}, "
                f"checkpoint_interval_s={self.checkpoint_interval_s!r}, "
                f"reported_checkpoint={self.reported_checkpoint!r}, "
                f"terminating_since={self.terminating_since!r}, "
                f"borrowed_gpus={self.borrowed_gpus!r})")

    def last_checkpoint(self, now: float) -> float:
        """Time of the most recent checkpoint of this segment (segment start if none)."""
        if self.reported_checkpoint is not None:
            return max(self.reported_checkpoint, self.segment_start)
        ci = self.checkpoint_interval_s
        if ci is None or ci <= 0:
            return self.segment_start
        return self.segment_start + ((now - self.segment_start) // ci) * ci

    def attained_at(self, now: float) -> float:
        """GPU-seconds attained over all segments up to ``now``."""
        return self.attained_gpu_s + (now - self.segment_start) * self.workload.gpus
