"""What each (team, GPU type) holds now: one computation for the loop's accounting and the
dashboard's teams page. Pure: rows in, dictionaries out."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from allotment.domain.jobstate import JobState

Key = tuple[str, str]  # (team, GPU type)


@dataclass
class Holdings:
    used: dict[Key, float] = field(default_factory=dict)
    borrowed: dict[Key, float] = field(default_factory=dict)
    idle: dict[Key, float] = field(default_factory=dict)  # GPUs of running jobs now idle


def holdings(jobs: Iterable[Any]) -> Holdings:
    """From active jobs as (team, gpu_type, state, gpus, borrowed_gpus, idle_last_below)."""
    h = Holdings()
    for team, gpu_type, state, gpus, borrowed, idle_below in jobs:
        k = (team, gpu_type)
        h.used[k] = h.used.get(k, 0) + gpus
        h.borrowed[k] = h.borrowed.get(k, 0) + borrowed
        if state == JobState.RUNNING and idle_below:
            h.idle[k] = h.idle.get(k, 0) + gpus
    return h


def guarantees(org: Any) -> dict[Key, float]:
    """The non-zero guarantee of every team and GPU type of an ``OrgTree`` (None: none)."""
    out: dict[Key, float] = {}
    if org is not None:
        for t in org.gpu_types:
            for team in org.team_ids:
                g = org.guaranteed[t][org.index[team]]
                if g:
                    out[(team, t)] = g
    return out


def lent(guaranteed: dict[Key, float], used: dict[Key, float],
         borrowed: dict[Key, float]) -> dict[Key, float]:
    """All borrowed GPUs of a type, attributed to the teams with unused guarantee of that
    type, pro rata of what each leaves unused."""
    out: dict[Key, float] = {}
    for t in {k[1] for k in (*used, *guaranteed)}:
        total_b = sum(v for k, v in borrowed.items() if k[1] == t)
        unused = {k: max(0.0, g - used.get(k, 0)) for k, g in guaranteed.items() if k[1] == t}
        pool = sum(unused.values())
        if total_b and pool:
            for k, u in unused.items():
                out[k] = total_b * u / pool
    return out
