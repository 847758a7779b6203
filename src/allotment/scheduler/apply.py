"""The one path by which decisions and the ends of runs change a ``ClusterState``.

The simulator and the live loop differ only in their clock and their *sink*: the simulator's
sink pushes events on its heap (a finish after the job's remaining work, a kill after the
grace period); the service's sink writes the database and acts through a backend. Both call
the functions here, so the state changes, the wake-ups and the event log are the same by
construction.

A sink may refuse an action (the service's conditional update lost a race: the job was
cancelled meanwhile); the state then stays as it was for that job.

Canonical order of one instant (both engines log in this order):
    1. runs that ended: finishes, then requeues, each in submission order;
    2. submissions, by job sequence;
    3. the cycle's decisions: rejections, preemptions, admissions (in ``decide``'s order).

A cycle runs at an instant only when something happened then (a submission, a run that
ended, a cancellation, a due wake-up) and jobs are pending: ``should_decide``.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Protocol

from allotment.domain.workload import JobId, RunningJob, Workload
from allotment.scheduler.config import SchedulerConfig
from allotment.scheduler.decisions import Admit, Decisions, Preempt
from allotment.scheduler.policy import Policy
from allotment.scheduler.state import ClusterState


class EventKind(StrEnum):
    """What the event log records for a job (``events-<policy>.csv``, column ``event``)."""

    SUBMIT = "submit"
    ADMIT = "admit"
    PREEMPT = "preempt"
    REQUEUE = "requeue"
    FINISH = "finish"
    REJECT = "reject"
    CANCEL = "cancel"


class Sink(Protocol):
    """Where decisions land. Each method returns whether the action was taken."""

    def reject(self, job_id: JobId, reason: str, now: float) -> bool: ...

    def preempt(self, p: Preempt, now: float) -> bool: ...

    def admit(self, a: Admit, now: float) -> bool: ...

    def wake(self, t: float, job: RunningJob | None = None) -> None:
        """Run a cycle at ``t``; with ``job``, only if that run is still going then."""


class Observer:
    """Told of every change to the state, after it is made (the event log, job records).
    The defaults do nothing."""

    def submitted(self, now: float, w: Workload) -> None: ...

    def rejected(self, now: float, job_id: JobId, reason: str) -> None: ...

    def preempted(self, now: float, p: Preempt) -> None: ...

    def admitted(self, now: float, job: RunningJob, a: Admit) -> None: ...

    def finished(self, now: float, job: RunningJob) -> None: ...

    def requeued(self, now: float, job: RunningJob, lost_gpu_s: float) -> None: ...

    def cancelled(self, now: float, job_id: JobId, running: RunningJob | None) -> None: ...


NO_OBSERVER = Observer()


def should_decide(state: ClusterState, changed: bool, wake_due: bool, now: float) -> bool:
    """Whether a cycle runs now: something happened (or a wake-up is due) and jobs wait, or
    a launch reservation has not ended (its GPUs are freed by its start)."""
    return (changed or wake_due) and (state.num_pending > 0 or (
        bool(state.launches) and state.launches_open(now)))


def submit(state: ClusterState, w: Workload, now: float, obs: Observer = NO_OBSERVER,
           attained_gpu_s: float = 0.0) -> None:
    """Queue a submitted job (validated by ``ClusterState.validate`` first)."""
    state.ledger.advance(state, now)  # pending work changes whom credit is earned by
    state.submit(w, attained_gpu_s)
    obs.submitted(now, w)


def apply(d: Decisions, state: ClusterState, policy: Policy, sink: Sink, now: float,
          obs: Observer = NO_OBSERVER) -> None:
    """Carry out one cycle's decisions: rejections, preemptions (the victim keeps running
    through its grace period), admissions; then remember the reservations (kept sticky by
    the next cycle) and ask for the wake-ups the cycle and the admitted jobs need."""
    checkpoint_s = policy.config.checkpoint_s
    state.ledger.advance(state, now)
    # gangs whose fill this cycle preempts: their nodes stay held until they start
    # (its fill, or victims that make room for it, ``preemption.make_room``: either is
    # preempted for a gang that holds a reservation in this cycle)
    gathering = {r.job_id for r in d.reservations if not r.reclaim}
    draining = {p.for_job for p in d.preempts if p.for_job in gathering}
    for r in d.rejects:
        if sink.reject(r.job_id, r.reason, now):
            state.remove_pending(r.job_id)
            obs.rejected(now, r.job_id, r.reason)
    for p in d.preempts:
        if p.job_id in state.running and sink.preempt(p, now):
            state.mark_terminating(p.job_id, now)
            obs.preempted(now, p)
    for a in d.admits:
        if sink.admit(a, now):
            job = state.start(a.job_id, a.placement, now, checkpoint_s, a.borrowed_gpus)
            if a.fill_for is not None:
                state.fill[a.job_id] = a.fill_for
            obs.admitted(now, job, a)
            wake = policy.start_wakeup(job)
            if wake is not None and wake > now:
                sink.wake(wake, job)
    state.last_reservations = {r.job_id: r.domain for r in d.reservations if not r.reclaim}
    if d.launch_nodes or state.launch_nodes:
        nodes = {**state.launch_nodes, **d.launch_nodes}
        state.launch_nodes = {k: v for k, v in nodes.items()
                              if k in state.launches and now < state.launches[k].end}
    if state.fill or state.fill_nodes or draining:
        # fill of a gang that started or left the queue is an ordinary run from now on; a
        # gang whose fill is being preempted keeps its nodes held from the start of each
        # cycle until it starts
        state.fill = {j: g for j, g in state.fill.items() if g in state.pending_index}
        draining |= set(state.fill_nodes)
        state.fill_nodes = {r.job_id: r.nodes for r in d.reservations
                            if not r.reclaim and r.job_id in draining}
    if d.wake_at is not None and d.wake_at > now:
        sink.wake(d.wake_at)


def finish(state: ClusterState, job_id: JobId, now: float,
           obs: Observer = NO_OBSERVER) -> RunningJob:
    """A run ended for good (its work is done, or it failed): its GPUs are free."""
    job = state.stop(job_id, now)
    obs.finished(now, job)
    return job


def requeue(state: ClusterState, job_id: JobId, now: float,
            obs: Observer = NO_OBSERVER) -> tuple[RunningJob, float]:
    """A preempted run was killed: its GPUs are free and the job waits again with the
    service it attained. Returns the run and the GPU-seconds lost since its last
    checkpoint: (now - last checkpoint) x gang size."""
    job = state.stop(job_id, now)
    lost = (now - job.last_checkpoint(now)) * job.workload.gpus
    state.submit(job.workload, job.attained_at(now))
    # preempted with no grace period (stopped at the instant it was told): it sits out
    # the cycles of this instant, so that the job it made room for goes first (without
    # it, such victims came back at once as fill and were preempted again, for ever)
    if state.requeued_at:  # (only a grace period of 0 ever fills it)
        state.requeued_at = {j: t for j, t in state.requeued_at.items() if t == now}
    if job.terminating_since == now:
        state.requeued_at[job_id] = now
    obs.requeued(now, job, lost)
    return job, lost


def cancel(state: ClusterState, job_id: JobId, now: float,
           obs: Observer = NO_OBSERVER) -> None:
    """A job was cancelled: out of the queue, or (running) its GPUs are free."""
    running = state.running.get(job_id)
    if running is not None:
        state.stop(job_id, now)
    elif job_id in state.pending_index:
        state.ledger.advance(state, now)
        state.remove_pending(job_id)
    else:
        return
    obs.cancelled(now, job_id, running)


def end_order(ended: Iterable[tuple[bool, Workload]]) -> list[Workload]:
    """Canonical order of the runs that ended at one instant: finished runs (``False``)
    before requeued ones (``True``), each in submission order (submit time, then sequence:
    the order of the service's job ids)."""
    return [w for _, w in sorted(ended, key=lambda e: (e[0], e[1].submit_time, e[1].seq))]


__all__ = ["EventKind", "Observer", "SchedulerConfig", "Sink", "apply", "cancel", "end_order",
           "finish", "requeue", "should_decide", "submit"]
