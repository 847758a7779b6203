"""``las``: Tiresias-style discretised least-attained-service (Gu et al., NSDI 2019).

Two queues, no knowledge of durations. A job's attained service S is the GPU-seconds it
has run (gang size x time, over all its runs). Queue 1 holds S < threshold, queue 2 the
rest; queue 1 always goes first, each queue is FIFO by submission time. A pending job of
queue 1 may preempt running jobs of queue 2 (after their minimum runtime, with the same
grace as every policy); jobs of one queue never preempt each other. Teams are ignored.
As in Tiresias, no GPUs are held for a blocked gang: later jobs that fit simply run.
"""

from __future__ import annotations

from collections.abc import Callable

from mypy_extensions import mypyc_attr

from allotment.domain.workload import JobId, RunningJob, Workload
from allotment.scheduler.policy import OrderKey, Policy
from allotment.scheduler.snapshot import Snapshot


def las_level(attained_gpu_s: float, threshold_gpu_s: float) -> int:
    """Queue of a job by attained service: 0 (queue 1) below the threshold, else 1."""
    return 0 if attained_gpu_s < threshold_gpu_s else 1


def demotion_time(job: RunningJob, threshold_gpu_s: float) -> float | None:
    """When a running job's attained service reaches the threshold (None: it already has)."""
    remaining = threshold_gpu_s - job.attained_gpu_s
    if remaining <= 0:
        return None
    return job.segment_start + remaining / job.workload.gpus


@mypyc_attr(native_class=False)  # plain class: may be subclassed, patched
class LasQueues(Policy):
    """The two LAS queues of ``las`` and of ``fairshare`` (inside a team): a job's queue by
    its attained service, and a cycle when a running job passes into queue 2."""

    def level(self, attained_gpu_s: float) -> int:
        return las_level(attained_gpu_s, self.config.las_threshold_gpu_s)

    def pending_level(self, sc: Snapshot, w: Workload) -> int:
        return self.level(sc.state.pending_attained[w.id])

    def demotes(self, sc: Snapshot, w: Workload, job: RunningJob) -> bool:
        """Whether running ``job`` sits in a lower queue than pending ``w``."""
        return self.level(job.attained_at(sc.now)) > self.pending_level(sc, w)

    def start_wakeup(self, job: RunningJob) -> float | None:
        return demotion_time(job, self.config.las_threshold_gpu_s)


@mypyc_attr(native_class=False)  # plain class: may be subclassed, patched
class LasPolicy(LasQueues):
    """Discretised 2-queue LAS over attained GPU-time, preemptive between queues."""

    name = "las"
    preempts = True
    victims_read_snapshot = False  # ``demotes`` reads the two jobs and the time only

    def pending_key(self, w: Workload, attained_gpu_s: float) -> tuple[float | int, ...]:
        return (self.level(attained_gpu_s), w.submit_time, w.seq)

    def order_key(self, sc: Snapshot, w: Workload, attained_gpu_s: float) -> OrderKey:
        return (self.level(attained_gpu_s), w.submit_time, w.seq)

    def may_reserve(self, sc: Snapshot, w: Workload) -> bool:
        """Tiresias holds nothing: a gang that does not fit is skipped, later ones run."""
        return False

    def preempt_class(self, sc: Snapshot, w: Workload) -> object:
        return (w.gpu_type, w.priority, self.pending_level(sc, w))

    def may_preempt_for(self, sc: Snapshot, w: Workload) -> bool:
        return self.pending_level(sc, w) == 0

    def passive_test(self, sc: Snapshot) -> Callable[[Workload], bool] | None:
        """A queue-2 job preempts nobody and, as every job here, holds no GPUs: it starts
        where it fits, or waits."""
        return _in_queue_two(sc.state.pending_attained, self.config.las_threshold_gpu_s)

    def is_victim_candidate(self, sc: Snapshot, w: Workload, job: RunningJob) -> bool:
        return self.demotes(sc, w, job)

    def victim_test(self, sc: Snapshot, w: Workload) -> Callable[[RunningJob], bool]:
        """``demotes`` with two queues: only a queue-1 ``w`` demotes anyone, and it demotes
        the jobs that have attained the threshold by now."""
        if self.pending_level(sc, w) > 0:
            return _nobody
        return _attained(sc.now, self.config.las_threshold_gpu_s)


def _in_queue_two(attained: dict[JobId, float], threshold: float) -> Callable[[Workload], bool]:
    """Whether a pending job is in queue 2 (module level, for mypyc)."""
    return lambda w: las_level(attained[w.id], threshold) > 0


def _nobody(job: RunningJob) -> bool:
    return False


def _attained(now: float, threshold: float) -> Callable[[RunningJob], bool]:
    """Whether a running job has attained the threshold by ``now`` (``attained_at``,
    inlined: called for every running job); module level, for mypyc."""
    return lambda job: (job.attained_gpu_s + (now - job.segment_start) * job.workload.gpus
                        >= threshold)
