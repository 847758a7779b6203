"""A job's lifecycle in the service, as one enum with its active and final sets.

    pending -> starting     admitted: the decision is committed, the run not yet launched
    starting -> running     launched (or handed to a workload manager that started it)
    starting|running -> terminating
                            a stop was decided (preempted, reclaimed, cancelled, node down):
                            SIGTERM, the grace period, SIGKILL
    terminating -> pending  requeued (a preemption or reclaim), with its attained service
    running|terminating -> succeeded | failed | cancelled
                            the run ended: exit code 0, another code, or a cancellation
    pending -> rejected | cancelled
The named transitions are in ``storage.jobs``; nothing else writes ``jobs.state``.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    TERMINATING = "terminating"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


ACTIVE = (JobState.STARTING, JobState.RUNNING, JobState.TERMINATING)  # holding GPUs
FINAL = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.REJECTED)
WAITING = (JobState.PENDING,)


class RunState(StrEnum):
    """What a backend says of one run ``(job, attempt)`` (``backends.base.RunStatus``)."""

    ALIVE = "alive"  # running
    QUEUED = "queued"  # handed to a workload manager that has not started it (or requeued it)
    EXITED = "exited"  # ended with an exit code
    GONE = "gone"  # launched, vanished without an exit code (SIGKILL, lost host)
    NEVER = "never"  # no trace of a launch
