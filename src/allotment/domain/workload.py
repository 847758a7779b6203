"""Workloads (jobs): a gang of GPUs of one type that runs all-or-nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NewType

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


class FieldRecord:
    """Equality, hash and repr by fields, as a frozen dataclass has them (``FIELDS``, in
    order). Records made on the hot path (``RunningJob``, ``scheduler.decisions``) are
    written out as classes, not dataclasses: compiled by mypyc (the optional native
    build), their ``__init__`` is native, where a dataclass's is generated Python."""

    FIELDS: ClassVar[tuple[str, ...]] = ()

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, f) for f in self.FIELDS)

    def __eq__(self, other: object) -> bool:
        return (type(other) is type(self) and isinstance(other, FieldRecord)
                and self._values() == other._values())

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        inner = ", ".join(f"{f}={getattr(self, f)!r}" for f in self.FIELDS)
        return f"{type(self).__name__}({inner})"


class RunningJob(FieldRecord):
    """A job holding GPUs now: where, since when, and how much work a preemption would lose.

    ``placement`` lists ``(node index, gpus)``. ``segment_start`` is when this run began
    (a requeued job starts a new segment). ``attained_gpu_s`` is the GPU-time of earlier
    segments. ``checkpoint_interval_s`` models periodic checkpoints from the segment start
    (None: never checkpoints); ``last_checkpoint`` may also be reported by the job itself.
    ``terminating_since`` is set once a preemption was sent (the grace period runs).
    ``borrowed_gpus``: how many of its GPUs were beyond its team's guarantee at admission.
    (A ``FieldRecord``: one is made for every start.)
    """

    FIELDS: ClassVar[tuple[str, ...]] = (
        "workload", "placement", "segment_start", "attained_gpu_s", "checkpoint_interval_s",
        "reported_checkpoint", "terminating_since", "borrowed_gpus")

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

    def __hash__(self) -> int:  # mutable, as a dataclass without frozen (``= None`` is
        raise TypeError("unhashable type: 'RunningJob'")  # ignored by mypyc)

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
