"""The seam between the generic cycle and a policy: ordering, quota, reservation, victims."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from mypy_extensions import mypyc_attr

from allotment.domain.workload import JobId, RunningJob, Workload
from allotment.scheduler.config import LasPreemption, SchedulerConfig
from allotment.scheduler.snapshot import Snapshot

OrderKey = tuple[object, ...]
__all__ = ["GangReclaim", "LasPreemption", "OrderKey", "Policy", "SchedulerConfig"]


class GangReclaim(NamedTuple):
    """Which runs a blocked gang beyond its team's guarantee may preempt to complete the
    GPUs held for it (``Policy.gang_reclaim``, ``scheduler.preemption.make_room``): those
    that pass ``test``, freeing at most ``cap`` GPUs, none taking its team below its
    guarantee (``spare(team)``: the GPUs that team may still lose)."""

    cap: int
    test: Callable[[RunningJob], bool]
    spare: Callable[[str], int]


@mypyc_attr(native_class=False)  # plain class: may be subclassed, patched
class Policy:
    """Default behaviour: one global FIFO order, no quotas, no preemption, EASY reservation.

    Contract for ``order_key``: lower runs first, and a key never decreases while a cycle
    admits jobs (the cycle re-keys lazily on that promise).
    """

    name = "base"
    uses_estimates = False
    preempts = False
    has_guarantees = False  # admissions beyond a team's guarantee are "borrowed"
    # whether ``order_key`` reads the snapshot (so that admissions in a cycle re-key); a
    # key of a team's job may read only what lies under the team's top-level org node
    # (admissions elsewhere leave it as it was: ``Snapshot.version``)
    keys_read_snapshot = False
    # the part of an ``order_key`` that orders two jobs of one team (None: no such part);
    # it must change only with the team's own admissions (``scheduler.heads.TeamHeads``)
    local_key: Callable[[OrderKey], OrderKey] | None = None
    # whether ``is_victim_candidate`` reads the snapshot's occupancy (so that a victim set
    # is chosen with the victims before each one gone); False: it reads only the job, the
    # pending job and the time, and a candidate stays one whatever else is preempted
    victims_read_snapshot = True

    def __init__(self, config: SchedulerConfig | None = None) -> None:
        self.config = config or SchedulerConfig()

    def pending_key(self, w: Workload, attained_gpu_s: float) -> tuple[float | int, ...]:
        """Order inside one (team, GPU type, gang size) queue; must agree with ``order_key``."""
        return (-w.priority, w.submit_time, w.seq)

    def order_key(self, sc: Snapshot, w: Workload, attained_gpu_s: float) -> OrderKey:
        return (-w.priority, w.submit_time, w.seq)

    def bucket_order_keys(self, sc: Snapshot, jobs: list[Workload],
                          attained: dict[JobId, float]) -> list[OrderKey]:
        """``order_key`` of every job of one (team, GPU type, gang size) queue; a policy may
        compute what the jobs of one queue share once."""
        return [self.order_key(sc, w, attained[w.id]) for w in jobs]

    def head_keys(self, sc: Snapshot, jobs: list[Workload],
                  attained: dict[JobId, float]) -> list[OrderKey]:
        """``order_key`` of each of ``jobs`` (the first job of every queue, at the start
        of each cycle): a policy may compute them in one loop."""
        key = self.order_key
        return [key(sc, w, attained[w.id]) for w in jobs]

    def quota_block(self, sc: Snapshot, w: Workload) -> str | None:
        """None if the policy's quota admits ``w`` now, else why not."""
        return None

    def never_fits(self, sc: Snapshot, w: Workload) -> str | None:
        """A reason if ``w`` can never be admitted under this policy (it is rejected)."""
        return None

    def may_reserve(self, sc: Snapshot, w: Workload) -> bool:
        """Whether free GPUs may be held for ``w`` while it is blocked (no backfill on them)."""
        return self.config.backfill

    def reservation_scope(self, sc: Snapshot, w: Workload) -> object:
        """At most one reservation per scope and cycle (EASY backfill: one per GPU type)."""
        return w.gpu_type

    def reserve_wakeup(self, sc: Snapshot, w: Workload) -> float | None:
        """When ``may_reserve`` will change its answer for ``w`` (None: never by time)."""
        return None

    def may_preempt_for(self, sc: Snapshot, w: Workload) -> bool:
        return False

    def passive_test(self, sc: Snapshot) -> Callable[[Workload], bool] | None:
        """For this cycle, a test of pending jobs that can only start where they fit: for
        each job it passes, ``never_fits`` is None, ``may_preempt_for`` and ``may_reserve``
        are False and ``reserve_wakeup`` is None, whatever the cycle does. The cycle then
        skips such a head at once when it does not fit (and nothing else may place it:
        no GPUs held for a gang or a launch reservation), without asking the policy each
        of those questions (None: no job passes; the default). Only a policy that holds
        GPUs for no job (``may_reserve`` always False) may return a test: the cycle counts
        on free GPUs that only shrink as it goes."""
        return None

    def preempt_class(self, sc: Snapshot, w: Workload) -> object:
        """Jobs of one class and a gang at least as large cannot find victims where a job
        of that class already failed in this cycle (the cycle skips them)."""
        return (w.team, w.gpu_type, w.priority)

    def victim_teams(self, sc: Snapshot, w: Workload) -> list[str] | None:
        """Teams whose jobs may be victims for ``w`` (None: every team)."""
        return None

    def is_victim_candidate(self, sc: Snapshot, w: Workload, job: RunningJob) -> bool:
        """Whether running ``job`` may be preempted to make room for pending ``w``."""
        return False

    def victim_test(self, sc: Snapshot, w: Workload) -> Callable[[RunningJob], bool]:
        """``is_victim_candidate`` for one ``w`` over many running jobs; a policy may work
        out once what the answers for ``w`` share. Must agree with it."""
        return _asking(self, sc, w)

    def gang_reclaim(self, sc: Snapshot, w: Workload) -> GangReclaim | None:
        """For blocked gang ``w`` beyond its team's guarantee and holding GPUs: which runs
        it may preempt to start (None: none; the default)."""
        return None

    def start_wakeup(self, job: RunningJob) -> float | None:
        """A time after a job's start when the policy wants a cycle (e.g. LAS demotion)."""
        return None


def _asking(policy: Policy, sc: Snapshot, w: Workload) -> Callable[[RunningJob], bool]:
    """``Policy.victim_test`` by default (module level, for mypyc)."""
    return lambda job: policy.is_victim_candidate(sc, w, job)
