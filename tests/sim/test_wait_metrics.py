"""Waits by gang size and the guaranteed-start percentile, computed from an event log."""

from __future__ import annotations

import pytest

from allotment.domain.workload import JobId
from allotment.scheduler.apply import EventKind as E
from allotment.sim.journal import Event, replay_log
from allotment.sim.metrics import guaranteed_starts, percentile, queue_by_gang
from tests.builders import cluster, job, org, run, team, trace

GUARANTEE = {"a": 8, "b": 2048}
JOBS = [job("a1", "a", 8, 0.0, 100.0), job("a2", "a", 4, 10.0, 100.0),
        job("b1", "b", 4, 20.0, 190.0), job("b-big", "b", 1024, 30.0, 1000.0),
        job("a3", "a", 300, 40.0, 50.0), job("b3", "b", 16, 60.0, 10.0),
        job("r1", "b", 1, 70.0, 10.0)]
LOG = [
    Event(0.0, E.SUBMIT, JobId("a1"), "a"), Event(0.0, E.ADMIT, JobId("a1"), "0:8"),
    Event(10.0, E.SUBMIT, JobId("a2"), "a"),
    Event(20.0, E.SUBMIT, JobId("b1"), "b"),
    Event(30.0, E.SUBMIT, JobId("b-big"), "b"),
    Event(40.0, E.SUBMIT, JobId("a3"), "a"),
    Event(50.0, E.ADMIT, JobId("b1"), "1:4"),
    Event(60.0, E.SUBMIT, JobId("b3"), "b"),
    Event(70.0, E.SUBMIT, JobId("r1"), "b"), Event(70.0, E.REJECT, JobId("r1"), "no"),
    Event(80.0, E.PREEMPT, JobId("b1"), "for a2"),
    Event(100.0, E.FINISH, JobId("a1"), ""), Event(100.0, E.ADMIT, JobId("a2"), "0:4"),
    Event(140.0, E.REQUEUE, JobId("b1"), "lost 360 GPU-s"),
    Event(160.0, E.ADMIT, JobId("b1"), "1:4"),
    Event(200.0, E.FINISH, JobId("a2"), ""),
    Event(260.0, E.FINISH, JobId("b1"), ""),
    Event(1030.0, E.ADMIT, JobId("b-big"), "2:1024"),
    Event(2030.0, E.FINISH, JobId("b-big"), ""),
]


def test_queue_by_gang_from_a_hand_made_log() -> None:
    """Queueing (JCT minus run time, every wait counted) per gang-size bucket, over the
    completed jobs: a1 waited 0 s, a2 90 s, b1 30 s before its first start and 20 s after
    its preemption; b-big 1,000 s; the unfinished a3 and b3 and the rejected r1 count
    nowhere."""
    journal = replay_log(JOBS, LOG)
    assert queue_by_gang(journal.jobs) == {
        "1-8": {"jobs": 3, "avg_queue_s": pytest.approx(140 / 3), "p95_queue_s": 90.0,
                "max_queue_s": 90.0},
        "9-255": {"jobs": 0, "avg_queue_s": 0.0, "p95_queue_s": 0.0, "max_queue_s": 0.0},
        "256-1023": {"jobs": 0, "avg_queue_s": 0.0, "p95_queue_s": 0.0, "max_queue_s": 0.0},
        "1024+": {"jobs": 1, "avg_queue_s": 1000.0, "p95_queue_s": 1000.0,
                  "max_queue_s": 1000.0},
    }


def test_guaranteed_start_from_a_hand_made_log() -> None:
    """Only jobs that fit in their team's unused guarantee when submitted count: a1 (0 of 8
    held), b1, b-big (4 pending + 1,024 <= 2,048) and b3 (4 held + 1,024 pending + 16);
    not a2 (a holds 8 of 8), a3 (300 > 8) or the rejected r1. b3 never started: its wait
    runs to the end of the replay."""
    journal = replay_log(JOBS, LOG)
    waits = guaranteed_starts(journal.jobs, lambda t, _type: GUARANTEE[t], 3000.0)
    assert waits == [0.0, 30.0, 1000.0, 2940.0]
    assert percentile(waits, 99) == 2940.0
    assert percentile([float(x) for x in range(1, 201)], 99) == 198.0


def test_replaying_an_engines_log_gives_its_job_records() -> None:
    """The records rebuilt from an engine's event log equal the engine's own, so the
    figures can be recomputed from ``events-<policy>.csv``."""
    jobs = trace(("a-borrow", "a", 16, 0.0, 5_000.0), ("b-own", "b", 8, 1_000.0, 600.0),
                 ("a-small", "a", 4, 1_100.0, 300.0), ("b-late", "b", 8, 3_000.0, 100.0))
    res = run("fairshare", jobs, cluster(16), org([team("a", 8), team("b", 8)], 16),
              checkpoint_s=600.0)
    assert any(e.event == E.PREEMPT for e in res.events)
    assert replay_log(jobs, res.events).jobs == res.jobs


def test_summary_has_both_figures() -> None:
    """``summary()`` (summary.json) carries guaranteed_start_p99_s and the four buckets."""
    jobs = trace(("a1", "a", 8, 0.0, 100.0), ("b1", "b", 16, 10.0, 100.0))
    m = run("fairshare", jobs, cluster(16), org([team("a", 8), team("b", 8)], 16)).metrics
    doc = m.summary()
    assert doc["guaranteed_start_p99_s"] == 0.0 and doc["guaranteed_start_jobs"] == 1
    assert list(doc["queue_by_gang"]) == ["1-8", "9-255", "256-1023", "1024+"]  # type: ignore
    assert doc["queue_by_gang"]["9-255"]["jobs"] == 1  # type: ignore[index]
