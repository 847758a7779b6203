"""What one scheduling cycle returns: plain values, applied by the edge that owns the jobs."""

from __future__ import annotations

from dataclasses import dataclass, field

from allotment.domain.cluster import GpuType
from allotment.domain.workload import JobId


@dataclass(frozen=True, slots=True)
class Admit:
    """Start ``job_id`` on ``placement`` ((node index, gpus), ...); ``borrowed_gpus`` beyond
    the team's guarantee. ``fill_for``: the job runs on GPUs held for that blocked gang
    (``scheduler.reservation``) and is preempted when the gang can start."""

    job_id: JobId
    placement: tuple[tuple[int, int], ...]
    borrowed_gpus: int = 0
    fill_for: JobId | None = None


@dataclass(frozen=True, slots=True)
class Preempt:
    """Send a preemption to ``job_id`` (grace period, then kill and requeue) for ``for_job``."""

    job_id: JobId
    for_job: JobId
    reason: str


@dataclass(frozen=True, slots=True)
class Reject:
    """``job_id`` can never run under this policy and cluster."""

    job_id: JobId
    reason: str


@dataclass(frozen=True, slots=True)
class Reservation:
    """Free GPUs on ``nodes`` are held for ``job_id`` (backfill may not use them).

    ``domain`` is ``(level, id)`` with level ``node``, ``rack``, ``pod`` or ``type``.
    ``reclaim`` is True when the job waits for preempted GPUs rather than for jobs to end.
    """

    gpu_type: GpuType
    job_id: JobId
    domain: tuple[str, int]
    nodes: tuple[int, ...]
    reclaim: bool = False


@dataclass(slots=True)
class Decisions:
    """The result of ``decide``: admissions, preemptions, rejections and reservations, plus
    a reason in words for each job at the head of a blocked queue, when to wake up next if
    nothing else happens (a victim becomes old enough, a starvation guard expires), and on
    request the queue order."""

    admits: list[Admit] = field(default_factory=list)
    preempts: list[Preempt] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    reservations: list[Reservation] = field(default_factory=list)
    waiting: dict[JobId, str] = field(default_factory=dict)
    wake_at: float | None = None
    # nodes chosen in this cycle for launch reservations being prepared (``scheduler.launch``)
    launch_nodes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # with ``decide(..., explain=True)``: every job still pending, per GPU type, in the
    # policy's order at the end of the cycle (queue positions are read from it)
    queue: dict[GpuType, list[JobId]] = field(default_factory=dict)

    def wake(self, t: float) -> None:
        if self.wake_at is None or t < self.wake_at:
            self.wake_at = t
