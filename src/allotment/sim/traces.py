r"""Trace readers: Philly (Sia's per-job CSV), Tiresias' 60-job CSV, and the generic CSV.

Generic CSV (the format for bringing your own ``sacct`` export):
    header  job_id,submit_time,duration,num_gpus,team   [,gpu_type][,user][,time_limit_s]
    times in seconds (float); num_gpus an integer >= 1; duration >= 0; team non-empty;
    time_limit_s (the job's declared time limit, which the scheduler may use to estimate
    when GPUs free up; empty: none) > 0 and >= duration, since a job never runs past its
    limit (a scheduler stops it there); reservation (empty: none) names a launch
    reservation of the org file's ``reservations:`` that the job runs in.
Slurm ``sacct`` export (``|``-separated, with its header line):
    sacct -a -X -D -P -S 2026-01-01 \
          -o jobidraw,account,user,submit,start,elapsedraw,alloctres,reqtres,state
    team = account; GPUs from AllocTRES (else ReqTRES) ``gres/gpu[:type]=N``; a job requeued
    (several records, ``-D``) is one job: its first submit, its last run's duration. Jobs
    without GPUs or that never started are left out (counted, not errors). Times: ISO or epoch.
Every bad row is reported with its 1-based line number; none is dropped silently.
Jobs are returned sorted by (submit_time, file order); ``seq`` is that order.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from allotment.domain.cluster import GpuType
from allotment.domain.org import TeamId
from allotment.domain.workload import JobId, Workload
from allotment.errors import InputError, TraceFormatError

GENERIC_REQUIRED = ("job_id", "submit_time", "duration", "num_gpus", "team")
PHILLY_COLUMNS = ("timestamp", "duration", "num_gpus", "gpu_time", "cluster")
SACCT_REQUIRED = ("jobidraw", "account", "submit", "elapsedraw")
TIRESIAS_COLUMNS = ("job_id", "num_gpu", "submit_time", "duration")
KNOWN_TRACES = {
    "philly": Path("philly") / "philly.csv",
    "tiresias-60": Path("tiresias-60") / "60_job.csv",
}
Problems = list[tuple[int, str, str]]


def traces_dir() -> Path | None:
    """Where the shared traces live: $ALLOTMENT_TRACES, or ``../shared/traces`` beside the
    working directory or beside this checkout. None if none exists."""
    env = os.environ.get("ALLOTMENT_TRACES")
    candidates = [Path(env)] if env else []
    candidates.append(Path.cwd().parent / "shared" / "traces")
    here = Path(__file__).resolve()
    candidates.extend(p.parent / "shared" / "traces" for p in here.parents)
    for c in candidates:
        if c.is_dir():
            return c
    return None


def resolve_trace(name_or_path: str) -> Path:
    """A known trace name (``philly``, ``tiresias-60``) or a path to a CSV file."""
    if name_or_path in KNOWN_TRACES:
        base = traces_dir()
        if base is None:
            raise InputError(
                "trace",
                f"trace {name_or_path!r} needs ../shared/traces (or $ALLOTMENT_TRACES); not found",
            )
        return base / KNOWN_TRACES[name_or_path]
    path = Path(name_or_path)
    if not path.is_file():
        raise InputError(
            "trace",
            f"{name_or_path!r} is neither a known trace ({', '.join(KNOWN_TRACES)}) nor a file",
        )
    return path


def load_trace(name_or_path: str, default_gpu_type: str = "gpu") -> list[Workload]:
    """Read any supported trace, detecting its format from the header."""
    path = resolve_trace(name_or_path)
    try:
        with path.open(newline="") as fh:
            first = fh.readline()
            fh.seek(0)
            rows = list(csv.reader(fh, delimiter="|" if "|" in first else ","))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError("trace", f"cannot read {path}: {exc}") from exc
    if not rows:
        raise TraceFormatError(str(path), [(1, "header", "empty file")])
    header = [h.strip() for h in rows[0]]
    lower = [h.lower() for h in header]
    if "|" in first and all(c in lower for c in SACCT_REQUIRED):
        jobs = _sacct(path, lower, rows[1:], default_gpu_type)
    elif all(c in header for c in GENERIC_REQUIRED):
        jobs = _generic(path, header, rows[1:], default_gpu_type)
    elif all(c in header for c in PHILLY_COLUMNS):
        jobs = _philly(path, header, rows[1:], default_gpu_type)
    elif all(c in header for c in TIRESIAS_COLUMNS):
        jobs = _tiresias(path, header, rows[1:], default_gpu_type)
    else:
        raise TraceFormatError(
            str(path),
            [(1, "header", f"unknown columns {header}; the generic format needs "
              f"{','.join(GENERIC_REQUIRED)}")],
        )
    return _ordered(jobs)


def _ordered(jobs: list[Workload]) -> list[Workload]:
    jobs = sorted(jobs, key=lambda w: (w.submit_time, w.seq))
    return [replace(w, seq=k) for k, w in enumerate(jobs)]


def _num(value: str, field: str, line: int, problems: Problems, integer: bool = False) -> float:
    try:
        x = float(value)
    except ValueError:
        problems.append((line, field, f"not a number: {value!r}"))
        return 0.0
    if x != x or x in (float("inf"), float("-inf")):
        problems.append((line, field, f"not a finite number: {value!r}"))
        return 0.0
    if integer and x != int(x):
        problems.append((line, field, f"not an integer: {value!r}"))
    return x


def _rows(header: list[str], rows: list[list[str]],
          problems: Problems) -> Iterator[tuple[int, int, list[str]]]:
    """(index, 1-based line, row) for each non-blank row with as many fields as the
    header; a row with another count is recorded in ``problems``."""
    for k, row in enumerate(rows):
        line = k + 2
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            problems.append((line, "row", f"{len(row)} fields, header has {len(header)}"))
            continue
        yield k, line, row


def _generic(path: Path, header: list[str], rows: list[list[str]], gpu: str) -> list[Workload]:
    col = {h: k for k, h in enumerate(header)}
    problems: Problems = []
    jobs: list[Workload] = []
    seen: set[str] = set()
    for k, line, row in _rows(header, rows, problems):
        before = len(problems)
        job_id = row[col["job_id"]].strip()
        if not job_id:
            problems.append((line, "job_id", "empty"))
        elif job_id in seen:
            problems.append((line, "job_id", f"duplicate {job_id!r}"))
        seen.add(job_id)
        submit = _num(row[col["submit_time"]], "submit_time", line, problems)
        duration = _num(row[col["duration"]], "duration", line, problems)
        gpus = _num(row[col["num_gpus"]], "num_gpus", line, problems, integer=True)
        team = row[col["team"]].strip()
        if len(problems) == before:
            if submit < 0:
                problems.append((line, "submit_time", f"must be >= 0, got {submit}"))
            if duration < 0:
                problems.append((line, "duration", f"must be >= 0, got {duration}"))
            if gpus < 1:
                problems.append((line, "num_gpus", f"must be >= 1, got {row[col['num_gpus']]}"))
            if not team:
                problems.append((line, "team", "empty"))
        gpu_type = row[col["gpu_type"]].strip() if "gpu_type" in col else ""
        user = row[col["user"]].strip() if "user" in col else ""
        reservation = row[col["reservation"]].strip() if "reservation" in col else ""
        raw_limit = row[col["time_limit_s"]].strip() if "time_limit_s" in col else ""
        limit: float | None = None
        if raw_limit and len(problems) == before:
            limit = _num(raw_limit, "time_limit_s", line, problems)
            if len(problems) == before and limit <= 0:
                problems.append((line, "time_limit_s", f"must be > 0, got {raw_limit}"))
            elif len(problems) == before and limit < duration:
                problems.append((line, "time_limit_s", f"{raw_limit} is shorter than the "
                                 f"duration {row[col['duration']].strip()}: a job never runs "
                                 "past its time limit"))
        if len(problems) == before:
            jobs.append(Workload(JobId(job_id), TeamId(team), GpuType(gpu_type or gpu),
                                 int(gpus), submit, k, duration=duration, estimate_s=limit,
                                 user=user or None, reservation=reservation or None))
    if problems:
        raise TraceFormatError(str(path), problems)
    return jobs


def _philly(path: Path, header: list[str], rows: list[list[str]], gpu: str) -> list[Workload]:
    col = {h: k for k, h in enumerate(header)}
    problems: Problems = []
    parsed: list[tuple[datetime, float, int, str, int]] = []
    for _k, line, row in _rows(header, rows, problems):
        try:
            ts = datetime.strptime(row[col["timestamp"]].strip(), "%Y-%m-%d %H:%M:%S")
        except ValueError:
            value = row[col["timestamp"]]
            problems.append((line, "timestamp", f"not YYYY-MM-DD HH:MM:SS: {value!r}"))
            continue
        before = len(problems)
        duration = _num(row[col["duration"]], "duration", line, problems)
        gpus = _num(row[col["num_gpus"]], "num_gpus", line, problems, integer=True)
        if len(problems) == before and (duration < 0 or gpus < 1):
            problems.append((line, "num_gpus" if gpus < 1 else "duration", "out of range"))
        if len(problems) == before:
            parsed.append((ts, duration, int(gpus), row[col["cluster"]].strip() or "unknown", line))
    if problems:
        raise TraceFormatError(str(path), problems)
    t0 = min((p[0] for p in parsed), default=datetime(2017, 1, 1))
    return [
        Workload(JobId(f"philly-{line}"), TeamId(team), GpuType(gpu), gpus,
                 (ts - t0).total_seconds(), k, duration=duration)
        for k, (ts, duration, gpus, team, line) in enumerate(parsed)
    ]


def _tiresias(path: Path, header: list[str], rows: list[list[str]], gpu: str) -> list[Workload]:
    col = {h: k for k, h in enumerate(header)}
    problems: Problems = []
    jobs: list[Workload] = []
    for k, line, row in _rows(header, rows, problems):
        before = len(problems)
        submit = _num(row[col["submit_time"]], "submit_time", line, problems)
        duration = _num(row[col["duration"]], "duration", line, problems)
        gpus = _num(row[col["num_gpu"]], "num_gpu", line, problems, integer=True)
        if len(problems) == before and gpus < 1:
            problems.append((line, "num_gpu", "must be >= 1"))
        if len(problems) == before:
            jobs.append(Workload(JobId(f"t{row[col['job_id']].strip()}"), TeamId("default"),
                                 GpuType(gpu), int(gpus), submit, k, duration=duration))
    if problems:
        raise TraceFormatError(str(path), problems)
    return jobs


def _sacct(path: Path, header: list[str], rows: list[list[str]], gpu: str) -> list[Workload]:
    from allotment.backends.slurm.accounting import _time, parse_gpus

    col = {h: k for k, h in enumerate(header)}
    problems: Problems = []
    jobs: dict[str, Workload] = {}
    last_start: dict[str, float] = {}
    for k, line, row in _rows(header, [r for r in rows if r], problems):
        def get(name: str, row: list[str] = row) -> str:
            return row[col[name]].strip() if name in col else ""

        job_id = get("jobidraw")
        if not job_id:
            problems.append((line, "JobIDRaw", "empty"))
            continue
        submit = _time(get("submit"))
        if submit is None:
            problems.append((line, "Submit", f"not a time: {get('submit')!r}"))
            continue
        try:
            elapsed = float(get("elapsedraw") or 0)
        except ValueError:
            problems.append((line, "ElapsedRaw", f"not a number: {get('elapsedraw')!r}"))
            continue
        gpus = parse_gpus(get("alloctres")) or parse_gpus(get("reqtres"))
        typed = {t: n for t, n in gpus.items() if t}
        n = sum(typed.values()) if typed else gpus.get("", 0)
        start = _time(get("start")) if "start" in col else submit
        if n <= 0 or elapsed <= 0 or start is None:
            continue  # a CPU job, or one that never ran
        team = get("account") or "unknown"
        gpu_type = next(iter(typed), "") or gpu
        old = jobs.get(job_id)
        if old is not None:
            submit = min(submit, old.submit_time)
            if start < last_start[job_id]:
                elapsed = old.duration or 0.0
        last_start[job_id] = max(start, last_start.get(job_id, start))
        jobs[job_id] = Workload(JobId(job_id), TeamId(team), GpuType(gpu_type), n, submit, k,
                                duration=elapsed, user=get("user") or None)
    if problems:
        raise TraceFormatError(str(path), problems)
    if not jobs:
        raise TraceFormatError(str(path), [(1, "rows", "no job with GPUs that ran")])
    t0 = min(w.submit_time for w in jobs.values())
    return [replace(w, submit_time=w.submit_time - t0) for w in jobs.values()]
