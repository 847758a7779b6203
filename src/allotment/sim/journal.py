"""What happened to each job in a replay: the event log and the per-job records that the
metrics read. Both engines (``--engine memory`` and ``--engine service``) fill one
``Journal`` through the observer calls of ``scheduler.apply``, so their logs and figures
come from the same code.

Event log rows are ``(time, event, job_id, detail)`` with ``event`` one of
``scheduler.apply.EventKind`` and ``detail``: the team for ``submit``; the placement
``node:gpus,...`` (plus `` borrowed=N``) for ``admit``; ``for <job>`` for ``preempt``;
``lost <N> GPU-s`` for ``requeue``; the reason for ``reject``; empty for ``finish``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from allotment.domain.workload import JobId, RunningJob, Workload
from allotment.scheduler.apply import EventKind, Observer
from allotment.scheduler.decisions import Admit, Preempt


class Event(NamedTuple):
    time: float
    event: EventKind
    job_id: JobId
    detail: str


EventLog = list[Event]


@dataclass(slots=True)
class JobRecord:
    """What happened to one job."""

    workload: Workload
    first_start: float | None = None
    finish: float | None = None
    run_s: float = 0.0  # wall time spent holding GPUs, including lost work
    preemptions: int = 0
    lost_gpu_s: float = 0.0
    rejected: str | None = None


class Journal(Observer):
    """Event log (when ``record_events``) and job records of one replay.

    ``names`` maps the scheduler's job ids to the trace's (the service engine's jobs are
    database rows); absent ids are the trace's own."""

    def __init__(self, workloads: Iterable[Workload], record_events: bool = True,
                 names: Mapping[JobId, JobId] | None = None) -> None:
        self.jobs: dict[JobId, JobRecord] = {w.id: JobRecord(w) for w in workloads}
        self.events: EventLog = []
        self.record = record_events
        self.names = names

    def _id(self, job_id: JobId) -> JobId:
        return job_id if self.names is None else self.names.get(job_id, job_id)

    def _log(self, now: float, kind: EventKind, job_id: JobId, detail: str) -> None:
        if self.record:
            self.events.append(Event(now, kind, job_id, detail))

    def submitted(self, now: float, w: Workload) -> None:
        jid = self._id(w.id)
        self._log(now, EventKind.SUBMIT, jid, self.jobs[jid].workload.team)

    def rejected(self, now: float, job_id: JobId, reason: str) -> None:
        jid = self._id(job_id)
        self.jobs[jid].rejected = reason
        self._log(now, EventKind.REJECT, jid, reason)

    def preempted(self, now: float, p: Preempt) -> None:
        self._log(now, EventKind.PREEMPT, self._id(p.job_id), f"for {self._id(p.for_job)}")

    def admitted(self, now: float, job: RunningJob, a: Admit) -> None:
        jid = self._id(a.job_id)
        rec = self.jobs[jid]
        if rec.first_start is None:
            rec.first_start = now
        if self.record:
            where = ",".join(f"{n}:{g}" for n, g in a.placement)
            borrowed = f" borrowed={a.borrowed_gpus}" if a.borrowed_gpus else ""
            self._log(now, EventKind.ADMIT, jid, where + borrowed)

    def finished(self, now: float, job: RunningJob) -> None:
        jid = self._id(job.workload.id)
        rec = self.jobs[jid]
        rec.run_s += now - job.segment_start
        rec.finish = now
        self._log(now, EventKind.FINISH, jid, "")

    def requeued(self, now: float, job: RunningJob, lost_gpu_s: float) -> None:
        jid = self._id(job.workload.id)
        rec = self.jobs[jid]
        rec.run_s += now - job.segment_start
        rec.lost_gpu_s += lost_gpu_s
        rec.preemptions += 1
        self._log(now, EventKind.REQUEUE, jid, f"lost {lost_gpu_s:.0f} GPU-s")

    def cancelled(self, now: float, job_id: JobId, running: RunningJob | None) -> None:
        jid = self._id(job_id)
        if running is not None:
            self.jobs[jid].run_s += now - running.segment_start
        self._log(now, EventKind.CANCEL, jid, "")
