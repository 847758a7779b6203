"""Where a replay's reserved idle GPU-hours come from: a breakdown for tuning reservations.

``reserved_idle_gpu_hours`` (``sim.metrics``) integrates the free GPUs on nodes held for a
blocked gang. This replays one policy (default ``fairshare``) on a synthesized LLM-lab
trace (``allot trace synth --scenario llm-lab``) and splits that integral three ways, from
the state after each cycle (which holds until the next one):
- by the gang's size (the ``queue_by_gang`` buckets) and phase: ``gathering`` (GPUs held
  while the gang waits for enough of them), ``fill or victims leaving`` (its fill, or runs
  preempted to make room for it, are leaving within the grace period:
  ``scheduler.reservation``, ``scheduler.preemption.make_room``), ``reclaiming`` (a gang
  within its guarantee waits for the victims of its reclaim, ``scheduler.preemption``);
- by how much of the gang lies within its team's unused guarantee at that moment (team's
  running GPUs of the type, the gang's own fill left out): ``whole``, ``part``, ``none``;
- by whether any other waiting job would fit in those free held GPUs (if none would, the
  GPUs would idle without the reservation too; only starting the gang sooner helps).
The breakdown's total is printed beside the replay's own metric; they must agree.

    python benchmarks/reserved_idle.py [--gpus 16384] [--days 30] [--seed 1]
                                       [--policy fairshare]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from allotment.domain.workload import JobId
from allotment.policies import make_policy
from allotment.scheduler.decisions import Decisions
from allotment.scheduler.state import ClusterState
from allotment.sim.engine import SimConfig, simulate
from allotment.sim.metrics import GANG_BUCKETS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llm_replay import make_world


class Breakdown:
    """The observer of a replay: integrates the free held GPUs of each reservation, keyed
    (size bucket, phase, guarantee part, other work fits), in GPU-seconds."""

    def __init__(self, gpus_of: dict[JobId, tuple[str, int]], guarantee: dict[str, int]):
        self.gpus_of = gpus_of  # gang -> (team, GPUs)
        self.guarantee = guarantee  # team -> GPUs guaranteed (one GPU type)
        self.gpu_s: Counter[tuple[str, str, str, str]] = Counter()
        self.t: float | None = None
        self.rows: list[tuple[tuple[str, str, str, str], int]] = []

    def __call__(self, state: ClusterState, d: Decisions, now: float) -> None:
        if self.t is not None:
            for key, free in self.rows:
                self.gpu_s[key] += free * (now - self.t)
        self.t, self.rows = now, []
        seen: set[int] = set()
        for r in d.reservations:
            nodes = [i for i in r.nodes if i not in seen and i not in state.launch_nodes]
            seen.update(nodes)
            free = sum(state.free[i] for i in nodes)
            if not free:
                continue
            team, gpus = self.gpus_of[r.job_id]
            bucket = next(name for name, lo, hi in GANG_BUCKETS if lo <= gpus <= hi)
            phase = ("reclaiming" if r.reclaim else
                     "fill or victims leaving" if r.job_id in state.fill_nodes else "gathering")
            held = sum(j.workload.gpus for j in state.running_by_team.get(team, {}).values()
                       if state.fill.get(j.workload.id) != r.job_id)
            part = min(gpus, max(0, self.guarantee.get(team, 0) - held))
            within = "whole" if part >= gpus else "part" if part else "none"
            others = sum(c for (_, size), c in state.pending_sizes.items() if size <= free)
            if gpus <= free:
                others -= 1  # the gang itself (a same-size job of another team counts)
            fits = "yes" if others > 0 else "no"
            self.rows.append(((bucket, phase, within, fits), free))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpus", type=int, default=16384)
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--policy", default="fairshare")
    args = ap.parse_args()
    jobs, cluster, org = make_world(args.gpus, args.days, args.seed)
    (gpu_type,) = org.gpu_types
    guarantee = {name: org.guarantee_of(name, gpu_type) for name in org.index}
    br = Breakdown({w.id: (w.team, w.gpus) for w in jobs}, guarantee)
    res = simulate(jobs, cluster, org, make_policy(args.policy),
                   SimConfig(record_events=False), observer=br)
    m = res.metrics
    total = sum(br.gpu_s.values()) / 3600
    cap_h = cluster.total_gpus * m.makespan_s / 3600
    console = Console(width=120)
    console.print(f"{args.policy} on the LLM lab (seed {args.seed}, {args.gpus:,} GPUs, "
                  f"{args.days:g} days): reserved idle {m.reserved_idle_gpu_hours:,.0f} GPU-h "
                  f"({100 * m.reserved_idle_gpu_hours / cap_h:.2f}% of the cluster's "
                  f"GPU-hours); this breakdown sums to {total:,.0f} GPU-h"
                  + ("" if abs(total - m.reserved_idle_gpu_hours) <= 1e-6 * max(total, 1)
                     else "  MISMATCH"))
    for title, index in (("gang size and phase", (0, 1)),
                         ("part of the gang within its team's unused guarantee", (2,)),
                         ("another waiting job would fit in the free held GPUs", (3,))):
        sums: Counter[tuple[str, ...]] = Counter()
        for key, v in br.gpu_s.items():
            sums[tuple(key[i] for i in index)] += v
        console.print(f"\nreserved idle by {title}:")
        table = Table()
        for col in (*(("size", "phase") if len(index) == 2 else ("",)), "GPU-h", "share"):
            table.add_column(col, justify="right")
        for key, v in sorted(sums.items(), key=lambda kv: -kv[1]):
            table.add_row(*key, f"{v / 3600:,.0f}", f"{100 * v / 3600 / max(total, 1e-9):.1f}%")
        console.print(table)


if __name__ == "__main__":
    main()
