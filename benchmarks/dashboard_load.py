"""Dashboard page loads at scale: 2,000 nodes (16,000 GPUs), 200 teams, 10,000 jobs (a
quarter running or starting, a third waiting, the rest ended), a week of hourly usage, a
published and a draft plan, 500 audit entries. Target: every page in under 1 s.

Each page is fetched over HTTP from a live server on loopback (uvicorn, SQLite in WAL mode),
as a logged-in admin (who sees every team's jobs: the heaviest case) and as a member.

    python benchmarks/dashboard_load.py [--nodes 2000] [--teams 200] [--jobs 10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from allotment.domain.period import Period
from allotment.governance import plans
from allotment.planner import parse_scenario
from allotment.service.app import create_app
from allotment.storage import audit, repo
from allotment.storage.db import Database
from allotment.storage.models import JobRow, UsageRow

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.service.conftest import LiveServer

PAGES = ["/ui", "/ui/teams", "/ui/teams?window=7d", "/ui/jobs", "/ui/jobs?state=pending",
         "/ui/jobs/1", "/ui/plans", "/ui/disputes", "/ui/audit", "/ui/reports"]


def org_tree(teams: int, per_team: int | None = None) -> list[dict[str, Any]]:
    """Groups of 20 teams; with ``per_team``, each team's guarantee."""
    return [{"name": f"group{g}", "children": [
        {"name": f"team{t}", **({"guaranteed": {"h100": per_team}} if per_team else {})}
        for t in range(g * 20, min(teams, (g + 1) * 20))]} for g in range(-(-teams // 20))]


def seed(db: Database, nodes: int, teams: int, jobs: int, rng: random.Random) -> dict[str, str]:
    now = time.time()
    with db.session() as s:
        _, admin = repo.create_user(s, "root", "admin", None, now)
        specs = [repo.NodeSpec(f"node{k:05d}", "h100", 8, k // 16, k // 256,
                               "down" if k % 97 == 0 else "up") for k in range(nodes)]
        repo.set_inventory(s, specs, "bench", now)
        total = nodes * 8
        per_team = int(total * 0.9) // teams
        org = org_tree(teams, per_team)
        repo.set_org(s, {"org": org}, "bench", now)
        _, member = repo.create_user(s, "ann", "member", "team0", now)
    # jobs: running ones really placed on GPUs (no GPU twice), waiting ones, ended ones
    free = [(f"node{k:05d}", i) for k in range(nodes) if k % 97 for i in range(8)]
    rng.shuffle(free)
    rows = []
    for j in range(jobs):
        team = f"team{rng.randrange(teams)}"
        gpus = rng.choice([1, 1, 2, 4, 8])
        r = rng.random()
        base: dict[str, Any] = dict(team=team, user="ann", name=f"job{j}", gpu_type="h100",
                                    gpus=gpus, command=f"python train.py --run {j}",
                                    submit_time=now - rng.uniform(0, 86400 * 7))
        if r < 0.25 and len(free) >= gpus:
            take, free = free[:gpus], free[gpus:]
            ids: dict[str, list[int]] = {}
            for node, i in take:
                ids.setdefault(node, []).append(i)
            rows.append(JobRow(**base, state="running" if rng.random() < 0.95 else "starting",
                               placement=[[n, len(v)] for n, v in ids.items()], gpu_ids=ids,
                               borrowed_gpus=gpus if rng.random() < 0.2 else 0,
                               start_time=now - rng.uniform(0, 86400), reason="running",
                               idle_last_below=rng.random() < 0.05))
        elif r < 0.6:
            rows.append(JobRow(**base, state="pending", queue_position=j % 500 + 1,
                               reason=f"team {team} at {per_team}/{per_team} guaranteed h100 "
                                      "GPUs; borrowing blocked: no idle GPUs to lend"))
        else:
            rows.append(JobRow(**base, state=rng.choice(["succeeded", "failed", "cancelled"]),
                               end_time=now - rng.uniform(0, 86400), reason="exited"))
    with db.session() as s:
        s.add_all(rows)
        hour = int(now // 3600 * 3600)
        for t in range(teams):
            for h in range(24 * 7):
                s.add(UsageRow(team=f"team{t}", gpu_type="h100", hour=hour - h * 3600,
                               used_gpu_s=rng.uniform(0, per_team) * 3600, borrowed_gpu_s=0.0,
                               lent_gpu_s=0.0, idle_gpu_s=rng.uniform(0, 4) * 3600,
                               guaranteed_gpu_s=per_team * 3600.0, preemptions=0))
        period = str(Period.of(now))
        scenario = {"period": period, "as_of": time.strftime("%Y-%m-%d", time.gmtime(now)),
                    "inventory": {"h100": nodes * 8}, "org": org_tree(teams),
                    "requests": [{"team": f"team{t}", "gpu_type": "h100",
                                  "gpus": rng.randrange(8, 3 * per_team + 8),
                                  "justification": f"team {t}'s work"} for t in range(teams)]}
        first = plans.run(s, parse_scenario(scenario), "bench", now)
        plans.publish(s, first, "bench", now)
        for r in scenario["requests"][: teams // 2]:
            r["gpus"] = int(r["gpus"]) + 40
        plans.run(s, parse_scenario(scenario), "bench", now)
        for k in range(500):
            audit.append(s, now, "scheduler", "job.admitted", f"job:{k + 1}", "bench", {})
    return {"admin": admin, "member": member}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=2000)
    ap.add_argument("--teams", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="allotment-bench-"))
    db = Database(f"sqlite:///{tmp / 'bench.db'}", data_dir=tmp / "data")
    db.upgrade()
    t0 = time.perf_counter()
    tokens = seed(db, args.nodes, args.teams, args.jobs, random.Random(7))
    seeded = time.perf_counter() - t0
    app = create_app(db, None, {"reports_dir": str(tmp / "reports")})
    table = Table(title=f"Dashboard page loads: {args.nodes:,} nodes, {args.teams} teams, "
                        f"{args.jobs:,} jobs (seeded in {seeded:.1f} s); median and max of "
                        f"{args.repeat} loads, target < 1 s")
    for c in ("page", "as", "status", "KiB", "median ms", "max ms", "< 1 s"):
        table.add_column(c, justify="right" if c not in ("page", "as") else "left")
    worst = 0.0
    with LiveServer(app) as server:
        for who in ("admin", "member"):
            auth = {"Authorization": f"Bearer {tokens[who]}"}  # the dashboard takes it too
            with httpx.Client(base_url=server.url, headers=auth, timeout=60) as client:
                for path in PAGES:
                    client.get(path)  # warm
                    times, size, status = [], 0, 0
                    for _ in range(args.repeat):
                        t = time.perf_counter()
                        r = client.get(path)
                        times.append(time.perf_counter() - t)
                        size, status = len(r.content), r.status_code
                    worst = max(worst, max(times))
                    table.add_row(path, who, str(status), f"{size / 1024:,.0f}",
                                  f"{statistics.median(times) * 1000:,.0f}",
                                  f"{max(times) * 1000:,.0f}",
                                  "yes" if max(times) < 1 else "NO")
    db.dispose()
    Console().print(table)
    print(f"slowest load: {worst * 1000:,.0f} ms")


if __name__ == "__main__":
    main()
