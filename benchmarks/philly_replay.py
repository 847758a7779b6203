"""Replay the whole Philly trace under each policy: wall time, peak memory, key figures.

Target: under 60 s per policy on 2 cores. Peak memory is the Python heap high-water mark
(tracemalloc, which slows the run): pass --no-memory for the bare wall time.
Skips with a message when ../shared/traces is absent.

    python benchmarks/philly_replay.py [--gpus 512] [--policies static,fifo,las,fairshare]
"""

from __future__ import annotations

import argparse
import sys
import time

from rich.console import Console
from rich.table import Table

from allotment.domain.cluster import GpuType, make_cluster
from allotment.policies import make_policy
from allotment.sim.engine import SimConfig, simulate
from allotment.sim.orgs import trace_org
from allotment.sim.traces import load_trace, traces_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpus", type=int, default=512)
    ap.add_argument("--policies", default="static,fifo,las,fairshare")
    ap.add_argument("--no-memory", action="store_true")
    args = ap.parse_args()
    if traces_dir() is None:
        print("skipped: ../shared/traces not found (set ALLOTMENT_TRACES)")
        sys.exit(0)
    t0 = time.perf_counter()
    jobs = load_trace("philly")
    load_s = time.perf_counter() - t0
    cluster = make_cluster({"gpu": args.gpus})
    org = trace_org(jobs, {GpuType("gpu"): cluster.total_gpus})
    table = Table(title=f"Philly: {len(jobs):,} jobs on {args.gpus} GPUs "
                        f"(trace read in {load_s:.1f} s)")
    for col in ("policy", "wall s", "peak MiB", "cycles", "avg JCT h", "min guar. sat.",
                "idle-waiting GPU-h", "target"):
        table.add_column(col, justify="right")
    for name in args.policies.split(","):
        res = simulate(jobs, cluster, org, make_policy(name),
                       SimConfig(record_events=False, trace_memory=not args.no_memory))
        m = res.metrics
        table.add_row(name, f"{res.wall_s:.1f}",
                      "-" if res.peak_mem_mb is None else f"{res.peak_mem_mb:.0f}",
                      f"{res.cycles:,}", f"{m.avg_jct_s / 3600:.2f}",
                      f"{m.min_team_guarantee_satisfaction:.3f}",
                      f"{m.idle_while_waiting_gpu_hours:,.1f}",
                      "ok" if res.wall_s < 60 else "MISSED (< 60 s)")
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
