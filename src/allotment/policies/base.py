"""The seam between the generic cycle and a policy: ordering, quota, reservation, victims."""

from __future__ import annotations

from dataclasses import dataclass

from allotment.domain.workload import RunningJob, Workload
from allotment.scheduler.scratch import Scratch
from allotment.scheduler.state import ClusterState

OrderKey = tuple[object, ...]


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """Knobs shared by every policy.

    ``grace_s``: time between a preemption notice and the kill (the job may checkpoint).
    ``min_runtime_s``: a job that has run less than this is never preempted.
    ``backfill``: let later jobs use GPUs not held for the blocked head job.
    ``reserve_after_s``: fairshare holds GPUs for a blocked job beyond its guarantee only
    once it has waited this long (starvation guard for large borrowing gangs).
    ``las_threshold_gpu_s``: attained GPU-seconds at which LAS demotes a job to queue 2.
    ``las_preemption`` (fairshare): which queue-2 jobs a waiting queue-1 job may preempt:
    ``none``; ``team`` (its own team's); ``surplus`` (also other teams' borrowed ones).
    """

    grace_s: float = 60.0
    min_runtime_s: float = 300.0
    backfill: bool = True
    reserve_after_s: float = 3600.0
    las_threshold_gpu_s: float = 3600.0
    las_preemption: str = "none"


class Policy:
    """Default behaviour: one global FIFO order, no quotas, no preemption, EASY reservation.

    Contract for ``order_key``: lower runs first, and a key never decreases while a cycle
    admits jobs (the cycle re-keys lazily on that promise).
    """

    name = "base"
    uses_estimates = False
    preempts = False
    has_guarantees = False  # admissions beyond a team's guarantee are "borrowed"

    def __init__(self, config: SchedulerConfig | None = None) -> None:
        self.config = config or SchedulerConfig()

    def pending_key(self, w: Workload, attained_gpu_s: float) -> tuple[float | int, ...]:
        """Order inside one (team, GPU type, gang size) queue; must agree with ``order_key``."""
        return (-w.priority, w.submit_time, w.seq)

    def order_key(self, sc: Scratch, w: Workload, attained_gpu_s: float) -> OrderKey:
        return (-w.priority, w.submit_time, w.seq)

    def quota_block(self, sc: Scratch, w: Workload) -> str | None:
        """None if the policy's quota admits ``w`` now, else why not."""
        return None

    def never_fits(self, state: ClusterState, w: Workload) -> str | None:
        """A reason if ``w`` can never be admitted under this policy (it is rejected)."""
        return None

    def may_reserve(self, sc: Scratch, w: Workload) -> bool:
        """Whether free GPUs may be held for ``w`` while it is blocked (no backfill on them)."""
        return self.config.backfill

    def reservation_scope(self, sc: Scratch, w: Workload) -> object:
        """At most one reservation per scope and cycle (EASY backfill: one per GPU type)."""
        return w.gpu_type

    def reserve_wakeup(self, sc: Scratch, w: Workload) -> float | None:
        """When ``may_reserve`` will change its answer for ``w`` (None: never by time)."""
        return None

    def may_preempt_for(self, sc: Scratch, w: Workload) -> bool:
        return False

    def preempt_class(self, sc: Scratch, w: Workload) -> object:
        """Jobs of one class and a gang at least as large cannot find victims where a job
        of that class already failed in this cycle (the cycle skips them)."""
        return (w.team, w.gpu_type, w.priority)

    def victim_teams(self, sc: Scratch, w: Workload) -> list[str] | None:
        """Teams whose jobs may be victims for ``w`` (None: every team)."""
        return None

    def is_victim_candidate(self, sc: Scratch, w: Workload, job: RunningJob) -> bool:
        """Whether running ``job`` may be preempted to make room for pending ``w``."""
        return False

    def start_wakeup(self, job: RunningJob) -> float | None:
        """A time after a job's start when the policy wants a cycle (e.g. LAS demotion)."""
        return None
