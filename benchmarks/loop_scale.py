"""The live loop at LLM-lab scale: 2,000 nodes x 8 GPUs (16,000 GPUs), 200 teams in groups
of 20, 10,000 pending jobs of mixed sizes (1-64 GPUs), on the fake backend.

It times the first tick (which admits a few thousand jobs) and then 20 steady ticks, in
each of which a few running jobs finish and a few new jobs arrive through the service's
submit path. Targets: the admitting tick under 1,000 ms, the median steady tick under
100 ms. Runs on SQLite, and also on PostgreSQL where ``ALLOTMENT_TEST_PG_URL`` is set (the
database's tables are dropped first). The last line is
``admit_tick_ms=<n> median_tick_ms=<n>`` for SQLite.

    python benchmarks/loop_scale.py [--nodes 2000] [--teams 200] [--jobs 10000] [--ticks 20]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import text

from allotment.backends.fake import FakeBackend
from allotment.scheduler.config import SchedulerConfig
from allotment.service.loop import LoopConfig, SchedulerLoop
from allotment.storage import jobs as jobrepo
from allotment.storage import repo
from allotment.storage.db import Database
from allotment.storage.models import Base

SIZES = [1] * 30 + [2] * 15 + [4] * 15 + [8] * 25 + [16] * 8 + [32] * 5 + [64] * 2


def org(teams: int, per_team: int) -> list[dict[str, Any]]:
    return [{"name": f"group{g}", "children": [
        {"name": f"team{t}", "guaranteed": {"h100": per_team}}
        for t in range(g * 20, min(teams, (g + 1) * 20))]} for g in range(-(-teams // 20))]


class Clock:
    def __init__(self) -> None:
        self.t = 1_795_000_000.0

    def __call__(self) -> float:
        return self.t


def spec(rng: random.Random, teams: int, k: int) -> jobrepo.JobSpec:
    return jobrepo.JobSpec(f"team{rng.randrange(teams)}", "h100", rng.choice(SIZES),
                           f"python train.py --run {k}", f"job{k}")


def run(url: str, data_dir: Path, nodes: int, teams: int, jobs: int, ticks: int,
        seed: int = 7) -> dict[str, float]:
    rng = random.Random(seed)
    db = Database(url, data_dir)
    if url.startswith("postgresql"):
        with db.engine.begin() as conn:
            Base.metadata.drop_all(conn)
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    db.upgrade()
    clock = Clock()
    with db.session() as s:
        repo.set_inventory(s, [repo.NodeSpec(f"node{k:05d}", "h100", 8, k // 16, k // 256)
                               for k in range(nodes)], "bench", clock())
        repo.set_org(s, {"org": org(teams, nodes * 8 // teams)}, "bench", clock())
    with db.session() as s:
        for k in range(jobs):
            jobrepo.submit(s, "ann", spec(rng, teams, k), clock())
    backend = FakeBackend()
    loop = SchedulerLoop(db, backend, LoopConfig(scheduler=SchedulerConfig(min_runtime_s=0)),
                         clock=clock)
    t = time.perf_counter()
    first = loop.tick()
    admit_ms = (time.perf_counter() - t) * 1000
    steady: list[float] = []
    decided = 0
    k = jobs
    for _ in range(ticks):
        clock.t += 2.0
        alive = [key for key, st in backend.runs.items() if st.state == "alive"]
        for key in rng.sample(alive, min(5, len(alive))):
            backend.finish(*key)
        with db.session() as s:
            for _ in range(5):
                jobrepo.submit(s, "ann", spec(rng, teams, k), clock())
                k += 1
        t = time.perf_counter()
        report = loop.tick()
        steady.append((time.perf_counter() - t) * 1000)
        decided += report.decided
    db.dispose()
    return {"admitted": len(first.admitted), "admit_ms": admit_ms,
            "median_ms": statistics.median(steady), "max_ms": max(steady),
            "decided": decided, "ticks": ticks}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=2000)
    ap.add_argument("--teams", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=10000)
    ap.add_argument("--ticks", type=int, default=20)
    args = ap.parse_args()
    targets = [("sqlite", None)]
    pg = os.environ.get("ALLOTMENT_TEST_PG_URL")
    if pg:
        targets.append(("postgresql", pg))
    table = Table(title=f"Live loop: {args.nodes:,} nodes x 8 GPUs, {args.teams} teams, "
                        f"{args.jobs:,} pending jobs; first tick, then {args.ticks} steady "
                        "ticks (5 finish, 5 arrive)")
    for c in ("database", "admitted", "admitting tick ms", "median steady ms", "max steady ms",
              "cycles run", "targets < 1,000 / < 100 ms"):
        table.add_column(c, justify="right")
    results = {}
    with tempfile.TemporaryDirectory(prefix="allotment-loop-") as tmp:
        for name, url in targets:
            r = run(url or f"sqlite:///{Path(tmp) / 'loop.db'}", Path(tmp) / f"data-{name}",
                    args.nodes, args.teams, args.jobs, args.ticks)
            results[name] = r
            ok = r["admit_ms"] < 1000 and r["median_ms"] < 100
            table.add_row(name, f"{r['admitted']:,}", f"{r['admit_ms']:,.0f}",
                          f"{r['median_ms']:,.0f}", f"{r['max_ms']:,.0f}",
                          f"{r['decided']}/{r['ticks']}", "met" if ok else "MISSED")
    Console(width=140).print(table)
    s = results["sqlite"]
    print(f"admit_tick_ms={s['admit_ms']:.0f} median_tick_ms={s['median_ms']:.0f}")


if __name__ == "__main__":
    main()
