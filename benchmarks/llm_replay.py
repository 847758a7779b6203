"""Replay a synthesized LLM-lab trace under each policy: wall time, peak memory, key figures.

The trace is made here (``allot trace synth --scenario llm-lab``, fixed seed 1): 16,384
GPUs (2,048 nodes of 8, the simulator's default racks and pods), 30 days, about 14,000 jobs
of 10 teams, with pre-training gangs of 1,024-4,096 GPUs. Each policy runs in a child
process of its own (forked), so its peak memory is that process's peak resident set size,
trace included, measured without slowing the run. The issue's target is <= 15 s per
policy on 2 cores.

    python benchmarks/llm_replay.py [--gpus 16384] [--days 30] [--seed 1]
                                    [--policies static,fifo,las,fairshare]
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from allotment import _native
from allotment.domain.cluster import Cluster, GpuType, make_cluster
from allotment.domain.org import OrgTree
from allotment.domain.orgspec import org_from_data
from allotment.domain.workload import Workload
from allotment.policies import make_policy
from allotment.sim.engine import SimConfig, simulate
from allotment.sim.synth import org_data, synthesize, trace_csv
from allotment.sim.traces import load_trace

WORLD: dict[str, Any] = {}  # the trace, cluster and org, set before the children fork


def make_world(gpus: int, days: float, seed: int) -> tuple[list[Workload], Cluster, OrgTree]:
    """The synthesized trace through the generic CSV reader (what ``allot simulate``
    reads), its cluster and its org."""
    trace = synthesize("llm-lab", gpus, days, seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "llm-lab.csv"
        path.write_text(trace_csv(trace))
        jobs = load_trace(str(path))
    cluster = make_cluster({"gpu": gpus})
    org = org_from_data(org_data(trace), {GpuType("gpu"): cluster.total_gpus})
    return jobs, cluster, org


def replay(policy: str) -> dict[str, Any]:
    """One policy in this (child) process: wall time, peak RSS and key figures."""
    jobs, cluster, org = WORLD["jobs"], WORLD["cluster"], WORLD["org"]
    res = simulate(jobs, cluster, org, make_policy(policy), SimConfig(record_events=False))
    m = res.metrics
    return {"wall_s": res.wall_s, "cycles": res.cycles, "util": m.utilization,
            "avg_jct_h": m.avg_jct_s / 3600, "sat": m.min_team_guarantee_satisfaction,
            "reserved": m.reserved_idle_gpu_hours, "p99": m.guaranteed_start_p99_s,
            "reserved_pct": 100 * m.reserved_idle_gpu_hours
            / max(cluster.total_gpus * m.makespan_s / 3600, 1e-9),
            "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpus", type=int, default=16384)
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--policies", default="static,fifo,las,fairshare")
    args = ap.parse_args()
    t0 = time.perf_counter()
    jobs, cluster, org = make_world(args.gpus, args.days, args.seed)
    WORLD.update(jobs=jobs, cluster=cluster, org=org)
    make_s = time.perf_counter() - t0
    table = Table(title=f"LLM lab (seed {args.seed}): {len(jobs):,} jobs on {args.gpus:,} GPUs "
                        f"over {args.days:g} days (made and read in {make_s:.1f} s; "
                        f"native build: {'yes' if _native.NATIVE else 'no, ' + _native.REASON})")
    for col in ("policy", "wall s", "peak RSS MiB", "cycles", "util", "avg JCT h",
                "min guar. sat.", "reserved idle GPU-h", "reserved idle %",
                "guar. start p99 s",
                "target <= 15 s"):
        table.add_column(col, justify="right")
    ctx = multiprocessing.get_context("fork")
    for name in args.policies.split(","):
        with ctx.Pool(1) as pool:
            r = pool.apply(replay, (name,))
        table.add_row(name, f"{r['wall_s']:.1f}", f"{r['rss_mib']:.0f}", f"{r['cycles']:,}",
                      f"{r['util']:.3f}", f"{r['avg_jct_h']:.2f}", f"{r['sat']:.3f}",
                      f"{r['reserved']:,.1f}", f"{r['reserved_pct']:.2f}", f"{r['p99']:,.0f}",
                      "ok" if r["wall_s"] <= 15 else "MISSED")
    Console(width=180).print(table)


if __name__ == "__main__":
    main()
