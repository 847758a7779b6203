"""Hypothesis strategies in one place: clusters, orgs and workloads."""

from __future__ import annotations

from hypothesis import strategies as st

from allotment.domain.workload import Workload
from tests.builders import job


@st.composite
def workloads(draw: st.DrawFn, teams: list[str], max_jobs: int = 30, max_gang: int = 8,
              one_gpu: bool = False) -> list[Workload]:
    n = draw(st.integers(1, max_jobs))
    out = []
    for k in range(n):
        gpus = 1 if one_gpu else draw(st.sampled_from([g for g in (1, 2, 4, 8, 12, 16)
                                                       if g <= max_gang]))
        out.append(job(f"j{k}", draw(st.sampled_from(teams)), gpus,
                       float(draw(st.integers(0, 2000))), float(draw(st.integers(1, 3000))),
                       seq=k, priority=draw(st.sampled_from([0, 0, 0, 1]))))
    return sorted(out, key=lambda w: (w.submit_time, w.seq))


@st.composite
def guarantees(draw: st.DrawFn, teams: list[str], capacity: int) -> dict[str, int]:
    cuts = sorted(draw(st.lists(st.integers(0, capacity), min_size=len(teams) - 1,
                                max_size=len(teams) - 1)))
    bounds = [0, *cuts, capacity]
    return {t: bounds[k + 1] - bounds[k] for k, t in enumerate(teams)}
