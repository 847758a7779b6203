"""Estimated start times for queued jobs, from the time limits jobs declare (like Slurm's
expected start). Pure: a free-GPU profile per type, walked in queue order.

For one GPU type with capacity C: running job r holds g_r GPUs until e_r (its start plus
its time limit; unknown without one). Queued jobs, in queue order, each take the earliest
time t >= now at which free(t') >= g for every t' in [t, t + limit); they then hold their
GPUs over that span, so later jobs see them. A job whose start depends on a release with
no known end gets no estimate (None): an honest "unknown", not a guess.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Holding:
    gpu_type: str
    gpus: int
    end: float | None  # None: no time limit, end unknown


@dataclass(frozen=True, slots=True)
class Queued:
    job_id: int
    gpu_type: str
    gpus: int
    limit_s: float | None


def estimate_starts(now: float, capacity: dict[str, int], running: Sequence[Holding],
                    queue: Sequence[Queued], max_jobs: int = 200) -> dict[int, float | None]:
    """Estimated start of the first ``max_jobs`` queued jobs of each type (queue order)."""
    out: dict[int, float | None] = {}
    # profile per type: list of (time, free GPUs from that time on); inf time = never
    profiles: dict[str, list[tuple[float, int]]] = {}
    for t, cap in capacity.items():
        changes: dict[float, int] = {}
        free_now = cap
        for h in running:
            if h.gpu_type != t:
                continue
            free_now -= h.gpus
            end = math.inf if h.end is None else max(h.end, now)
            changes[end] = changes.get(end, 0) + h.gpus
        prof = [(now, free_now)]
        for when in sorted(changes):
            last_t, last_f = prof[-1]
            f = last_f + changes[when]
            if when == last_t:
                prof[-1] = (when, f)
            else:
                prof.append((when, f))
        profiles[t] = prof
    seen: dict[str, int] = {}
    for q in queue:
        n = seen.get(q.gpu_type, 0)
        if n >= max_jobs or q.gpu_type not in profiles:
            continue
        seen[q.gpu_type] = n + 1
        prof = profiles[q.gpu_type]
        dur = math.inf if q.limit_s is None else q.limit_s
        start = None
        for k, (t0, _) in enumerate(prof):
            if math.isinf(t0):
                break
            end = t0 + dur
            if all(f >= q.gpus for (t1, f) in prof[k:] if t1 < end):
                start = t0
                break
        out[q.job_id] = start
        if start is None:
            continue
        # take the GPUs over [start, start + dur)
        end = start + dur
        points = sorted({t for t, _ in prof} | {start, end})
        new: list[tuple[float, int]] = []
        for when in points:
            f = _free_at(prof, when)
            if start <= when < end:
                f -= q.gpus
            new.append((when, f))
        profiles[q.gpu_type] = new
    return out


def _free_at(prof: list[tuple[float, int]], t: float) -> int:
    f = prof[0][1]
    for t0, f0 in prof:
        if t0 <= t:
            f = f0
        else:
            break
    return f
