"""What one scheduling cycle returns: plain values, applied by the edge that owns the jobs."""

from __future__ import annotations

from typing import ClassVar

from allotment.domain.cluster import GpuType
from allotment.domain.workload import FieldRecord, JobId


class Admit(FieldRecord):
    """Start ``job_id`` on ``placement`` ((node index, gpus), ...); ``borrowed_gpus`` beyond
    the team's guarantee. ``fill_for``: the job runs on GPUs held for that blocked gang
    (``scheduler.reservation``) and is preempted when the gang can start."""

    FIELDS: ClassVar[tuple[str, ...]] = ("job_id", "placement", "borrowed_gpus", "fill_for")

    def __init__(self, job_id: JobId, placement: tuple[tuple[int, int], ...],
                 borrowed_gpus: int = 0, fill_for: JobId | None = None) -> None:
        self.job_id = job_id
        self.placement = placement
        self.borrowed_gpus = borrowed_gpus
        self.fill_for = fill_for


class Preempt(FieldRecord):
    """Send a preemption to ``job_id`` (grace period, then kill and requeue) for ``for_job``."""

    FIELDS: ClassVar[tuple[str, ...]] = ("job_id", "for_job", "reason")

    def __init__(self, job_id: JobId, for_job: JobId, reason: str) -> None:
        self.job_id = job_id
        self.for_job = for_job
        self.reason = reason


class Reject(FieldRecord):
    """``job_id`` can never run under this policy and cluster."""

    FIELDS: ClassVar[tuple[str, ...]] = ("job_id", "reason")

    def __init__(self, job_id: JobId, reason: str) -> None:
        self.job_id = job_id
        self.reason = reason


class Reservation(FieldRecord):
    """Free GPUs on ``nodes`` are held for ``job_id`` (backfill may not use them).

    ``domain`` is ``(level, id)`` with level ``node``, ``rack``, ``pod`` or ``type``.
    ``reclaim`` is True when the job waits for preempted GPUs rather than for jobs to end.
    """

    FIELDS: ClassVar[tuple[str, ...]] = ("gpu_type", "job_id", "domain", "nodes", "reclaim")

    def __init__(self, gpu_type: GpuType, job_id: JobId, domain: tuple[str, int],
                 nodes: tuple[int, ...], reclaim: bool = False) -> None:
        self.gpu_type = gpu_type
        self.job_id = job_id
        self.domain = domain
        self.nodes = nodes
        self.reclaim = reclaim


class Decisions:
    """The result of ``decide``: admissions, preemptions, rejections and reservations, plus
    a reason in words for each job at the head of a blocked queue, when to wake up next if
    nothing else happens (a victim becomes old enough, a starvation guard expires), and on
    request the queue order. (A class, not a dataclass, for a native ``__init__``: see
    ``domain.workload.FieldRecord``.)"""

    def __init__(self) -> None:
        self.admits: list[Admit] = []
        self.preempts: list[Preempt] = []
        self.rejects: list[Reject] = []
        self.reservations: list[Reservation] = []
        self.waiting: dict[JobId, str] = {}
        self.wake_at: float | None = None
        # nodes chosen in this cycle for launch reservations being prepared
        # (``scheduler.launch``)
        self.launch_nodes: dict[str, tuple[int, ...]] = {}
        # with ``decide(..., explain=True)``: every job still pending, per GPU type, in the
        # policy's order at the end of the cycle (queue positions are read from it)
        self.queue: dict[GpuType, list[JobId]] = {}

    def __repr__(self) -> str:
        return (f"Decisions(admits={self.admits!r}, preempts={self.preempts!r}, "
                f"rejects={self.rejects!r}, reservations={self.reservations!r}, "
                f"wake_at={self.wake_at!r})")

    def wake(self, t: float) -> None:
        if self.wake_at is None or t < self.wake_at:
            self.wake_at = t
