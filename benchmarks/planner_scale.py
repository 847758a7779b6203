"""Planner at scale: 10,000 teams in a 5-level tree (org > 4 > 16 > 64 > 256 > teams),
4 GPU types, one request per team per type it uses. Target: a plan in under 100 ms.

    python benchmarks/planner_scale.py [--teams 10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from allotment.planner import allocate, parse_scenario

TYPES = ["a100", "h100", "h200", "l40s"]


def build(teams: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)

    def level(prefix: str, depth: int, fan: int, left: list[int]) -> list[dict[str, Any]]:
        out = []
        for k in range(fan):
            name = f"{prefix}.{k}"
            if depth == 4:
                kids = []
                for _ in range(rng.randint(30, 50)):
                    if left[0] <= 0:
                        break
                    kids.append({"name": f"team{left[0]}", "weight": rng.choice([0.5, 1, 2])})
                    left[0] -= 1
                if kids:
                    out.append({"name": name, "weight": rng.choice([1, 2]), "children": kids})
            else:
                out.append({"name": name, "weight": rng.choice([1, 2]),
                            "children": level(name, depth + 1, 4, left)})
        return [o for o in out if o["children"]]

    org = level("o", 1, 4, [teams])
    names: list[str] = []

    def collect(nodes: list[dict[str, Any]]) -> None:
        for n in nodes:
            if "children" in n:
                collect(n["children"])
            else:
                names.append(n["name"])

    collect(org)
    requests = []
    for t in names:
        for g in rng.sample(TYPES, rng.choice([1, 1, 2])):
            gpus = rng.choice([8, 16, 32, 64, 128, 256, 512])
            requests.append({"team": t, "gpu_type": g, "gpus": gpus,
                             "min_gpus": rng.choice([0, 0, 8]),
                             "tier": rng.choice(["normal", "normal", "high", "low"]),
                             "launch": f"2027-0{rng.randint(1, 6)}-15" if rng.random() < 0.2
                             else None})
    return {"period": "2027-01", "as_of": "2026-11-22",
            "inventory": {g: 250_000 for g in TYPES}, "org": org,
            "requests": [{k: v for k, v in r.items() if v is not None} for r in requests]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teams", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    data = build(args.teams, args.seed)
    t0 = time.perf_counter()
    sc = parse_scenario(data)
    parse_s = time.perf_counter() - t0
    times = []
    plan = None
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        plan = allocate(sc)
        times.append(time.perf_counter() - t0)
    assert plan is not None
    table = Table(title=f"planner: {args.teams:,} teams, 5-level tree, {len(TYPES)} GPU types, "
                        f"{len(sc.requests):,} requests")
    for col in ("measure", "value", "target"):
        table.add_column(col)
    table.add_row("validate scenario (ms)", f"{parse_s * 1000:.0f}", "")
    table.add_row("allocate, median (ms)", f"{statistics.median(times) * 1000:.0f}", "< 100")
    table.add_row("allocate, min (ms)", f"{min(times) * 1000:.0f}", "")
    table.add_row("GPUs allocated", f"{sum(a.allocated for a in plan.allocations):,}", "")
    Console(width=110).print(table)


if __name__ == "__main__":
    main()
