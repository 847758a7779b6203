"""One scheduling cycle at scale: 16,384 GPUs (2,048 nodes x 8), 200 teams in a 3-level
tree (org > 4 divisions > 40 groups > 200 teams), 50,000 pending jobs, fairshare.

Scenarios:
  cold   one cycle on an empty cluster: admits until the cluster is full
  steady 30 cycles on a ~full cluster; before each, 2% of running jobs end
Targets: >= 5,000 admissions/s and a median steady cycle under 50 ms.
The last line is ``admissions_per_s=<number>`` over every measured cycle.

    python benchmarks/cycle_scale.py [--seed 1] [--pending 50000] [--policy fairshare]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from rich.console import Console
from rich.table import Table

from allotment.domain.cluster import GpuType, make_cluster
from allotment.domain.org import OrgNode, OrgTree, Quota, TeamId
from allotment.domain.workload import JobId, Workload
from allotment.policies import make_policy
from allotment.scheduler.cycle import decide
from allotment.scheduler.state import ClusterState

GPU = GpuType("gpu")


def build_org(capacity: int) -> OrgTree:
    nodes = []
    per_team = capacity // 200
    for d in range(4):
        nodes.append(OrgNode(f"div{d}", None, {}, 1.0 + d % 2, explicit_guarantee=False))
        for g in range(10):
            gname = f"div{d}-grp{g}"
            nodes.append(OrgNode(gname, f"div{d}", {}, 1.0, explicit_guarantee=False))
            for t in range(5):
                nodes.append(OrgNode(f"{gname}-team{t}", gname, {GPU: Quota(per_team)}, 1.0))
    return OrgTree(nodes, {GPU: capacity})


def make_jobs(rng: random.Random, teams: list[str], n: int, start_seq: int,
              now: float) -> list[Workload]:
    sizes = [1] * 60 + [2] * 12 + [4] * 12 + [8] * 12 + [16] * 3 + [32]
    return [
        Workload(JobId(f"job{start_seq + k}"), TeamId(rng.choice(teams)), GPU, rng.choice(sizes),
                 now + k * 1e-3, start_seq + k, priority=rng.choice([0, 0, 0, 1]))
        for k in range(n)
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--pending", type=int, default=50_000)
    ap.add_argument("--policy", default="fairshare")
    ap.add_argument("--cycles", type=int, default=30)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    cluster = make_cluster({"gpu": 16_384}, 8, 4, 8)
    org = build_org(cluster.total_gpus)
    policy = make_policy(args.policy)
    state = ClusterState(cluster, org, pending_key=policy.pending_key)
    teams = list(org.team_ids)
    for w in make_jobs(rng, teams, args.pending, 0, 0.0):
        state.submit(w)
    seq = args.pending
    now = 100.0
    rows = []

    def cycle(label: str) -> tuple[float, int]:
        t0 = time.perf_counter()
        d = decide(state, policy, now)
        dt = time.perf_counter() - t0
        for a in d.admits:
            state.start(a.job_id, a.placement, now, None, a.borrowed_gpus)
        rows.append((label, dt, len(d.admits), len(d.preempts), state.num_pending,
                     cluster.total_gpus - sum(state.free)))
        return dt, len(d.admits)

    cold_t, cold_n = cycle("cold")
    steady: list[tuple[float, int]] = []
    for k in range(args.cycles):
        now += 60.0
        running = sorted(state.running)
        for job_id in rng.sample(running, max(1, len(running) // 50)):
            state.stop(job_id, now)
        new = make_jobs(rng, teams, 500, seq, now)
        seq += len(new)
        for w in new:
            state.submit(w)
        steady.append(cycle(f"steady {k + 1}"))

    console = Console(width=120)
    table = Table(title=f"{args.policy}: 16,384 GPUs, 200 teams, {args.pending:,} pending")
    for col in ("cycle", "ms", "admitted", "preempted", "pending after", "GPUs busy"):
        table.add_column(col, justify="right")
    for label, dt, n, p, pending, busy in rows[:4] + rows[-2:]:
        table.add_row(label, f"{dt * 1000:.1f}", f"{n:,}", f"{p:,}", f"{pending:,}", f"{busy:,}")
    console.print(table)
    med = statistics.median(dt for dt, _ in steady)
    total_t = cold_t + sum(dt for dt, _ in steady)
    total_n = cold_n + sum(n for _, n in steady)
    summary = Table(title="summary")
    for col in ("measure", "value", "target"):
        summary.add_column(col)
    summary.add_row("cold cycle admissions/s", f"{cold_n / cold_t:,.0f}", ">= 5,000")
    summary.add_row("steady admissions/s",
                    f"{sum(n for _, n in steady) / sum(dt for dt, _ in steady):,.0f}", ">= 5,000")
    summary.add_row("median steady cycle (ms)", f"{med * 1000:.1f}", "< 50")
    console.print(summary)
    print(f"admissions_per_s={total_n / total_t:.0f}")


if __name__ == "__main__":
    main()
