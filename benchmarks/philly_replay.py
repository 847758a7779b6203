"""Replay the whole Philly trace under each policy: wall time, peak memory, key figures.

Target: <= 10 s per policy on 2 cores (it was under 60 s before the LLM-scale issue).
Each policy runs in a child process of its own (forked), so its peak memory is that
process's peak resident set size, the loaded trace included, measured without slowing the
run. Skips with a message when ../shared/traces is absent.

    python benchmarks/philly_replay.py [--gpus 512] [--policies static,fifo,las,fairshare]
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from allotment import _native
from allotment.domain.cluster import GpuType, make_cluster
from allotment.policies import make_policy
from allotment.sim.engine import SimConfig, simulate
from allotment.sim.orgs import trace_org
from allotment.sim.traces import load_trace, traces_dir


def replay(policy: str, gpus: int) -> dict[str, Any]:
    """One policy in this (child) process: wall time, peak RSS and key figures."""
    jobs = load_trace("philly")
    cluster = make_cluster({"gpu": gpus})
    org = trace_org(jobs, {GpuType("gpu"): cluster.total_gpus})
    res = simulate(jobs, cluster, org, make_policy(policy), SimConfig(record_events=False))
    m = res.metrics
    return {"wall_s": res.wall_s, "cycles": res.cycles, "avg_jct_h": m.avg_jct_s / 3600,
            "sat": m.min_team_guarantee_satisfaction,
            "iww": m.idle_while_waiting_gpu_hours,
            "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpus", type=int, default=512)
    ap.add_argument("--policies", default="static,fifo,las,fairshare")
    args = ap.parse_args()
    if traces_dir() is None:
        print("skipped: ../shared/traces not found (set ALLOTMENT_TRACES)")
        sys.exit(0)
    t0 = time.perf_counter()
    jobs = load_trace("philly")
    load_s = time.perf_counter() - t0
    table = Table(title=f"Philly: {len(jobs):,} jobs on {args.gpus} GPUs "
                        f"(trace read in {load_s:.1f} s; "
                        f"native build: {'yes' if _native.NATIVE else 'no, ' + _native.REASON})")
    for col in ("policy", "wall s", "peak RSS MiB", "cycles", "avg JCT h", "min guar. sat.",
                "idle-waiting GPU-h", "target <= 10 s"):
        table.add_column(col, justify="right")
    ctx = multiprocessing.get_context("fork")
    for name in args.policies.split(","):
        with ctx.Pool(1) as pool:
            r = pool.apply(replay, (name, args.gpus))
        table.add_row(name, f"{r['wall_s']:.1f}", f"{r['rss_mib']:.0f}", f"{r['cycles']:,}",
                      f"{r['avg_jct_h']:.2f}", f"{r['sat']:.3f}", f"{r['iww']:,.1f}",
                      "ok" if r["wall_s"] <= 10 else "MISSED")
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
