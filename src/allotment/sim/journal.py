"""What happened to each job in a replay: the event log and the per-job records that the
metrics read. Both engines (``--engine memory`` and ``--engine service``) fill one
``Journal`` through the observer calls of ``scheduler.apply``, so their logs and figures
come from the same code.

Event log rows are ``(time, event, job_id, detail)`` with ``event`` one of
``scheduler.apply.EventKind`` and ``detail``: the team for ``submit``; the placement
``node:gpus,...`` (plus `` borrowed=N``, and `` fill-for=<gang>`` for a job started on GPUs
held for a blocked gang) for ``admit``; ``for <job>`` for ``preempt``;
``lost <N> GPU-s`` for ``requeue``; the reason for ``reject``; empty for ``finish``.

Each job record also keeps what its team held and had pending (GPUs of its GPU type) when
it was submitted, so the metrics can tell which jobs fit in the team's unused guarantee.
``replay_log`` rebuilds a ``Journal`` from an event log alone (a saved
``events-<policy>.csv`` or a hand-made one).
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
    # the team's GPUs of this GPU type when the job was submitted: held (running, stopping
    # ones included) and pending (submitted earlier, requeued ones included)
    team_held_at_submit: int = 0
    team_pending_at_submit: int = 0


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
        self.held: dict[tuple[str, str], int] = {}  # (team, GPU type) -> GPUs held
        self.pending: dict[tuple[str, str], int] = {}  # (team, GPU type) -> GPUs pending

    def _count(self, counts: dict[tuple[str, str], int], w: Workload, sign: int) -> None:
        key = (w.team, w.gpu_type)
        counts[key] = counts.get(key, 0) + sign * w.gpus

    def _id(self, job_id: JobId) -> JobId:
        return job_id if self.names is None else self.names.get(job_id, job_id)

    def _log(self, now: float, kind: EventKind, job_id: JobId, detail: str) -> None:
        if self.record:
            self.events.append(Event(now, kind, job_id, detail))

    def submitted(self, now: float, w: Workload) -> None:
        jid = self._id(w.id)
        rec = self.jobs[jid]
        key = (rec.workload.team, rec.workload.gpu_type)
        rec.team_held_at_submit = self.held.get(key, 0)
        rec.team_pending_at_submit = self.pending.get(key, 0)
        self._count(self.pending, rec.workload, 1)
        self._log(now, EventKind.SUBMIT, jid, rec.workload.team)

    def rejected(self, now: float, job_id: JobId, reason: str) -> None:
        jid = self._id(job_id)
        self.jobs[jid].rejected = reason
        self._count(self.pending, self.jobs[jid].workload, -1)
        self._log(now, EventKind.REJECT, jid, reason)

    def preempted(self, now: float, p: Preempt) -> None:
        self._log(now, EventKind.PREEMPT, self._id(p.job_id), f"for {self._id(p.for_job)}")

    def admitted(self, now: float, job: RunningJob, a: Admit) -> None:
        jid = self._id(a.job_id)
        rec = self.jobs[jid]
        if rec.first_start is None:
            rec.first_start = now
        self._count(self.pending, rec.workload, -1)
        self._count(self.held, rec.workload, 1)
        if self.record:
            where = ",".join(f"{n}:{g}" for n, g in a.placement)
            borrowed = f" borrowed={a.borrowed_gpus}" if a.borrowed_gpus else ""
            if a.fill_for is not None:
                borrowed += f" fill-for={self._id(a.fill_for)}"
            self._log(now, EventKind.ADMIT, jid, where + borrowed)

    def finished(self, now: float, job: RunningJob) -> None:
        jid = self._id(job.workload.id)
        rec = self.jobs[jid]
        rec.run_s += now - job.segment_start
        rec.finish = now
        self._count(self.held, rec.workload, -1)
        self._log(now, EventKind.FINISH, jid, "")

    def requeued(self, now: float, job: RunningJob, lost_gpu_s: float) -> None:
        jid = self._id(job.workload.id)
        rec = self.jobs[jid]
        rec.run_s += now - job.segment_start
        rec.lost_gpu_s += lost_gpu_s
        rec.preemptions += 1
        self._count(self.held, rec.workload, -1)
        self._count(self.pending, rec.workload, 1)
        self._log(now, EventKind.REQUEUE, jid, f"lost {lost_gpu_s:.0f} GPU-s")

    def cancelled(self, now: float, job_id: JobId, running: RunningJob | None) -> None:
        jid = self._id(job_id)
        if running is not None:
            self.jobs[jid].run_s += now - running.segment_start
        self._count(self.held if running is not None else self.pending,
                    self.jobs[jid].workload, -1)
        self._log(now, EventKind.CANCEL, jid, "")


def replay_log(workloads: Iterable[Workload], events: Iterable[Event]) -> Journal:
    """The ``Journal`` an engine would have filled, from its event log alone (rows
    ``(time, event, job_id, detail)`` in log order; the workloads give teams and sizes).
    An admission's placement is not needed; a requeue's lost work is read from its detail."""
    journal = Journal(workloads)
    runs: dict[JobId, RunningJob] = {}
    for time, kind, job_id, detail in events:
        jid = JobId(job_id)
        w = journal.jobs[jid].workload
        ev = EventKind(kind)
        if ev == EventKind.SUBMIT:
            journal.submitted(time, w)
        elif ev == EventKind.REJECT:
            journal.rejected(time, jid, detail)
        elif ev == EventKind.ADMIT:
            runs[jid] = RunningJob(w, (), time)
            journal.admitted(time, runs[jid], Admit(jid, ()))
        elif ev == EventKind.PREEMPT:
            journal.preempted(time, Preempt(jid, JobId(detail.removeprefix("for ")), ""))
        elif ev == EventKind.FINISH:
            journal.finished(time, runs.pop(jid))
        elif ev == EventKind.REQUEUE:
            lost = float(detail.removeprefix("lost ").removesuffix(" GPU-s") or 0)
            journal.requeued(time, runs.pop(jid), lost)
        elif ev == EventKind.CANCEL:
            journal.cancelled(time, jid, runs.pop(jid, None))
    return journal
