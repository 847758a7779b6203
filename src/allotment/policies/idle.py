"""Idle detection: allocated GPUs that do no work.

A job is *idle* once every sample of every GPU it holds has stayed under ``threshold_pct``
(default 5%) for ``window_s`` (default 30 min). It is then warned; if it is still idle
``reclaim_after_s`` after the warning, and the policy reclaims, it is reclaimed
(preempted and requeued) so its GPUs return to the pool. One sample at or above the
threshold ends the idle run and clears the warning.

Idle GPU-hours accrue for the time a job's GPUs spent under the threshold (sample to
sample), whatever the window: they feed the planner's history (hoarding costs share).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class IdleActionKind(StrEnum):
    WARN = "warn"  # idle for the window: tell the owner
    RECLAIM = "reclaim"  # still idle ``reclaim_after_s`` after the warning: take the GPUs


@dataclass(frozen=True, slots=True)
class IdleAction:
    """``WARN`` or ``RECLAIM`` for ``job_id`` at ``time``, with the reason in words."""

    kind: IdleActionKind
    job_id: str
    time: float
    reason: str


@dataclass(slots=True)
class _JobIdle:
    gpus: int
    below_since: float | None = None
    last_time: float | None = None
    last_below: bool = False
    warned_at: float | None = None
    reclaimed: bool = False
    idle_gpu_s: float = 0.0


@dataclass(slots=True)
class IdleTracker:
    """Feeds on samples (time, job, max utilisation over its GPUs); returns actions."""

    threshold_pct: float = 5.0
    window_s: float = 1800.0
    reclaim_after_s: float = 600.0
    reclaim: bool = True
    jobs: dict[str, _JobIdle] = field(default_factory=dict)

    def observe(self, job_id: str, gpus: int, time: float, util_pct: float) -> list[IdleAction]:
        """Record one sample (the busiest of the job's GPUs) and say what to do now."""
        job = self.jobs.setdefault(job_id, _JobIdle(gpus))
        below = util_pct < self.threshold_pct
        if job.last_time is not None and job.last_below and below:
            job.idle_gpu_s += (time - job.last_time) * job.gpus
        job.last_time, job.last_below = time, below
        if not below:
            job.below_since = None
            job.warned_at = None
            return []
        if job.below_since is None:
            job.below_since = time
        idle_for = time - job.below_since
        actions = []
        if idle_for >= self.window_s and job.warned_at is None:
            job.warned_at = time
            actions.append(IdleAction(
                IdleActionKind.WARN, job_id, time,
                f"GPUs under {self.threshold_pct:g}% for {idle_for / 60:.0f} min "
                f"(window {self.window_s / 60:.0f} min)"))
        if (self.reclaim and job.warned_at is not None and not job.reclaimed
                and time - job.warned_at >= self.reclaim_after_s):
            job.reclaimed = True
            actions.append(IdleAction(
                IdleActionKind.RECLAIM, job_id, time,
                f"still idle {(time - job.warned_at) / 60:.0f} min after the warning"))
        return actions

    def idle_gpu_hours(self, job_id: str) -> float:
        job = self.jobs.get(job_id)
        return job.idle_gpu_s / 3600.0 if job else 0.0
