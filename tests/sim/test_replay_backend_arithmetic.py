"""The replay backend of ``--engine service`` works out a run's end and the work a killed
run keeps with the in-memory engine's arithmetic, bit for bit: ``(start + duration) -
kept`` and ``last_checkpoint - segment_start`` (floating-point sums in another order
differed in the last bit on a synthesized lab's long runs, and the two event logs with
them)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from allotment.backends.base import LaunchSpec
from allotment.backends.fake import ReplayBackend
from allotment.domain.workload import JobId, RunningJob
from tests.builders import job

times = st.floats(min_value=0.0, max_value=5e6, allow_nan=False).map(lambda t: round(t, 1))


@settings(max_examples=300, deadline=None)
@given(start=times, duration=st.floats(min_value=1.0, max_value=2e6).map(lambda d: round(d, 1)),
       run_for=st.floats(min_value=1.0, max_value=2e6).map(lambda d: round(d, 1)),
       restart_after=st.floats(min_value=0.0, max_value=1e5).map(lambda d: round(d, 1)))
def test_ends_and_kept_work_match_the_engine(start: float, duration: float, run_for: float,
                                             restart_after: float) -> None:
    grace, ci = 60.0, 1800.0
    clock = [start]
    backend = ReplayBackend(lambda: clock[0], {1: duration}, grace, ci)
    backend.launch(LaunchSpec(1, 1, "t", "u", "", 8))
    assert backend.runs[(1, 1)][1] == start + duration - 0.0
    term = start + run_for
    kill = term + grace
    if kill >= start + duration:
        return  # its work is done first
    clock[0] = term
    backend.terminate(1, 1)
    clock[0] = kill
    backend.status(1, 1)
    # the in-memory engine: done_s += last_checkpoint(kill) - segment_start
    run = RunningJob(job(JobId("1"), "t", 8, 0.0, duration), ((0, 8),), start,
                     checkpoint_interval_s=ci)
    done = 0.0 + (run.last_checkpoint(kill) - run.segment_start)
    assert backend.done[1] == done
    again = kill + restart_after
    clock[0] = again
    backend.launch(LaunchSpec(1, 2, "t", "u", "", 8))
    assert backend.runs[(1, 2)][1] == again + duration - done
