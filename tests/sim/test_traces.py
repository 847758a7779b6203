"""Trace readers: the generic CSV (with bad-row reporting), Philly and Tiresias' 60 jobs."""

from __future__ import annotations

from pathlib import Path

import pytest

from allotment.errors import InputError, TraceFormatError
from allotment.sim.traces import load_trace, traces_dir


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "trace.csv"
    path.write_text(text)
    return str(path)


def test_generic_csv_is_read_and_sorted(tmp_path: Path) -> None:
    """Jobs come back in submit order with gpu_type and user when given."""
    jobs = load_trace(write(tmp_path, (
        "job_id,submit_time,duration,num_gpus,team,gpu_type,user\n"
        "b,20,5,2,llm,h100,ann\n"
        "a,10,7.5,1,vision,,\n"
    )))
    assert [(w.id, w.submit_time, w.duration, w.gpus, w.team, w.gpu_type, w.user, w.seq)
            for w in jobs] == [
        ("a", 10.0, 7.5, 1, "vision", "gpu", None, 0),
        ("b", 20.0, 5.0, 2, "llm", "h100", "ann", 1),
    ]


def test_every_bad_row_is_reported_with_its_line(tmp_path: Path) -> None:
    """Bad rows are listed by line number and field; nothing is dropped silently."""
    with pytest.raises(TraceFormatError) as err:
        load_trace(write(tmp_path, (
            "job_id,submit_time,duration,num_gpus,team\n"
            "ok,0,1,1,a\n"
            "x1,zero,1,1,a\n"
            "x2,0,1,0,a\n"
            "x3,0,-4,1,a\n"
            "x4,0,1,1.5,a\n"
            "ok,0,1,1,a\n"
            "x6,0,1,1\n"
            "x7,0,1,1,\n"
        )))
    assert err.value.problems == [
        (3, "submit_time", "not a number: 'zero'"),
        (4, "num_gpus", "must be >= 1, got 0"),
        (5, "duration", "must be >= 0, got -4.0"),
        (6, "num_gpus", "not an integer: '1.5'"),
        (7, "job_id", "duplicate 'ok'"),
        (8, "row", "4 fields, header has 5"),
        (9, "team", "empty"),
    ]
    assert "line 3: submit_time" in str(err.value)


def test_unknown_header_names_the_expected_columns(tmp_path: Path) -> None:
    """A file in no known format says which columns the generic format needs."""
    with pytest.raises(TraceFormatError, match="job_id,submit_time,duration,num_gpus,team"):
        load_trace(write(tmp_path, "a,b,c\n1,2,3\n"))


def test_missing_trace_is_a_clear_error() -> None:
    with pytest.raises(InputError, match="neither a known trace"):
        load_trace("/no/such/file.csv")


needs_traces = pytest.mark.skipif(
    traces_dir() is None, reason="../shared/traces not found (set ALLOTMENT_TRACES)"
)


@needs_traces
def test_philly_trace_reads_whole() -> None:
    """All 82,247 Philly jobs, teams from the virtual-cluster column, times from zero."""
    jobs = load_trace("philly")
    assert len(jobs) == 82_247
    assert len({w.team for w in jobs}) == 15
    assert jobs[0].submit_time == 0.0
    assert {w.gpus for w in jobs} >= {1, 2, 4, 8, 16, 32, 64, 128}


@needs_traces
def test_tiresias_trace_reads_whole() -> None:
    jobs = load_trace("tiresias-60")
    assert len(jobs) == 60
    assert jobs[1].gpus == 8 and jobs[1].submit_time == 30.0 and jobs[1].duration == 147.0
