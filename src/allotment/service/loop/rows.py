"""The one mapping between database rows and the scheduler's domain values.

A job row becomes a ``Workload`` with id ``str(row.id)`` and sequence ``row.id`` (ids grow
with submission, so ties break by submission as in a trace); its placement is stored by
node name, the core works by node index. ``Run`` is the loop's in-memory mirror of an
active job's row: what reconcile, idle and accounting need without reading the row back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from allotment.domain.cluster import GpuType
from allotment.domain.jobstate import JobState
from allotment.domain.org import TeamId
from allotment.domain.workload import JobId, Workload
from allotment.storage.jobs import PRIORITY
from allotment.storage.models import JobRow, OrgNodeRow


def job_id(row_id: int) -> JobId:
    return JobId(str(row_id))


def workload(j: JobRow | Any) -> Workload:
    """Of a job row, or a plain row with the columns of ``storage.jobs.PENDING_COLUMNS``."""
    return Workload(job_id(j.id), TeamId(j.team), GpuType(j.gpu_type), j.gpus, j.submit_time,
                    j.id, PRIORITY.get(j.priority_class, 0), j.preemptible, None,
                    j.time_limit_s, j.user, j.reservation)


@dataclass(slots=True)
class Run:
    """An active job (starting, running or terminating) as the loop knows it."""

    id: int
    attempt: int
    state: JobState
    team: str
    user: str
    gpu_type: str
    gpus: int
    borrowed_gpus: int
    placement: list[Any]  # [[node name, gpus], ...]
    gpu_ids: dict[str, list[int]]
    start_time: float
    attained_gpu_s: float
    reason: str = ""
    external_id: str | None = None
    terminating_since: float | None = None
    term_sent_at: float | None = None
    kill_sent: bool = False
    requeue: bool = True
    stop_reason: str = ""
    hold_until: float | None = None
    # the idle rule's memory (policies.idle), kept in the row across restarts
    idle: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def of(j: JobRow, now: float) -> Run:
        return Run(j.id, j.attempts, JobState(j.state), j.team, j.user, j.gpu_type, j.gpus,
                   j.borrowed_gpus, list(j.placement), {k: list(v) for k, v in j.gpu_ids.items()},
                   j.start_time if j.start_time is not None else now, j.attained_gpu_s,
                   j.reason, j.external_id, j.terminating_since, j.term_sent_at, j.kill_sent,
                   j.requeue, j.stop_reason, j.hold_until, idle_of(j))

    def refresh(self, j: JobRow) -> None:
        """Take what an API writer may have changed (a cancellation)."""
        self.state = JobState(j.state)
        self.terminating_since, self.requeue = j.terminating_since, j.requeue
        self.stop_reason, self.term_sent_at, self.kill_sent = (j.stop_reason, j.term_sent_at,
                                                              j.kill_sent)

    def attained_at(self, now: float) -> float:
        return self.attained_gpu_s + max(0.0, now - self.start_time) * self.gpus


def idle_of(j: JobRow) -> dict[str, Any]:
    return {"below_since": j.idle_below_since, "last_time": j.idle_last_time,
            "last_below": j.idle_last_below, "warned_at": j.idle_warned_at,
            "idle_gpu_s": j.idle_gpu_s}


def idle_windows(rows: list[OrgNodeRow]) -> dict[str, float]:
    """Each node's idle window: its own, else its nearest ancestor's (absent: default)."""
    own = {r.name: r.idle_window_s for r in rows}
    parent = {r.name: r.parent for r in rows}
    out: dict[str, float] = {}
    for name in own:
        node: str | None = name
        while node is not None and own.get(node) is None:
            node = parent.get(node)
        if node is not None and own[node] is not None:
            out[name] = float(own[node])  # type: ignore[arg-type]
    return out
