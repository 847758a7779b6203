"""Comparison of simulated policies: summary JSON, a Rich table, and PNG plots."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from allotment.scheduler.config import DEFAULTS
from allotment.sim.engine import SimResult
from allotment.sim.metrics import GANG_BUCKETS


def summary(results: Sequence[SimResult], meta: dict[str, Any]) -> dict[str, Any]:
    """The ``summary.json`` document: ``{"policies": {name: {...}}, ...meta}``."""
    policies: dict[str, Any] = {}
    for r in results:
        entry: dict[str, Any] = dict(r.metrics.summary())
        entry["wall_s"] = round(r.wall_s, 3)
        entry["cycles"] = r.cycles
        entry["teams"] = {
            name: {
                "guaranteed_gpus": tm.guaranteed,
                "gpu_hours": round(tm.gpu_hours, 3),
                "guarantee_satisfaction": round(tm.satisfaction, 6),
                "jobs_completed": tm.jobs,
                "avg_jct_s": round(tm.avg_jct_s, 3),
                **budget_fields(r, name, tm.gpu_hours),
            }
            for name, tm in sorted(r.metrics.teams.items())
        }
        policies[r.policy] = entry
    return {**meta, "policies": policies}


def budget_fields(r: SimResult, team: str, gpu_hours: float) -> dict[str, Any]:
    """``budget_gpu_hours`` (None: no budget), ``used_gpu_hours`` (of the GPU types it has
    a budget for; all its GPU-hours without one), ``over_budget_since_s`` (the first time
    it passed a budget, None if never) and, with credits, ``credit_gpu_hours`` at the end."""
    ledger = r.ledger
    keys = [] if ledger is None else [k for k in sorted(ledger.budget_gpu_s) if k[0] == team]
    out: dict[str, Any] = {"budget_gpu_hours": None, "used_gpu_hours": round(gpu_hours, 3),
                           "over_budget_since_s": None}
    if ledger is not None and keys:
        over = [ledger.over_since[k] for k in keys if k in ledger.over_since]
        out = {"budget_gpu_hours": round(sum(ledger.budget_gpu_s[k] for k in keys) / 3600, 3),
               "used_gpu_hours": round(sum(ledger.used_gpu_s.get(k, 0.0) for k in keys)
                                       / 3600, 3),
               "over_budget_since_s": round(min(over), 3) if over else None}
    if ledger is not None and ledger.credit_half_life_s is not None:
        out["credit_gpu_hours"] = round(ledger.credit_gpu_s.get(team, 0.0) / 3600, 3)
    return out


def write_json(doc: dict[str, Any], out: Path) -> Path:
    path = out / "summary.json"
    path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    return path


def _h(seconds: float) -> str:
    return f"{seconds / 3600:,.2f}"


def table(results: Sequence[SimResult], title: str) -> Table:
    t = Table(title=title)
    for col in (
        "policy", "done", "rejected", "util", "idle-waiting GPU-h",
        "reserved GPU-h", "avg JCT h", "p50 JCT h", "p99 JCT h", "avg queue h",
        "guar. start p99 s", "min guar. sat.", "Jain", "preempt", "lost GPU-h", "wall s",
    ):
        t.add_column(col, justify="left" if col == "policy" else "right")
    for r in results:
        m = r.metrics
        t.add_row(
            r.policy, f"{m.completed:,}", f"{m.rejected:,}", f"{m.utilization:.3f}",
            f"{m.idle_while_waiting_gpu_hours:,.1f}", f"{m.reserved_idle_gpu_hours:,.1f}",
            _h(m.avg_jct_s), _h(m.median_jct_s), _h(m.p99_jct_s), _h(m.avg_queue_s),
            f"{m.guaranteed_start_p99_s:,.0f}",
            f"{m.min_team_guarantee_satisfaction:.3f}", f"{m.jain_fairness:.3f}",
            f"{m.preemptions:,}", f"{m.preempted_gpu_hours_lost:,.1f}", f"{r.wall_s:.1f}",
        )
    return t


def gang_table(results: Sequence[SimResult], title: str) -> Table:
    """Queueing by gang size (``queue_by_gang``): jobs, then average / p95 / max hours."""
    t = Table(title=title)
    t.add_column("policy", justify="left")
    for name, _, _ in GANG_BUCKETS:
        t.add_column(f"{name} GPUs: jobs", justify="right")
        t.add_column("avg / p95 / max queue h", justify="right")
    for r in results:
        row = [r.policy]
        for name, _, _ in GANG_BUCKETS:
            q = r.metrics.queue_by_gang.get(name, {})
            row.append(f"{int(q.get('jobs', 0)):,}")
            row.append(" / ".join(_h(float(q.get(k, 0.0))) for k in
                                  ("avg_queue_s", "p95_queue_s", "max_queue_s")))
        t.add_row(*row)
    return t


def _save(plt: Any, fig: Any, ax: Any, title: str, path: Path,
          legend_size: int | None = None) -> Path:
    ax.set_title(title)
    ax.legend(fontsize=legend_size)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plots(results: Sequence[SimResult], out: Path, bin_s: float,
          default_policy: str = DEFAULTS.policy) -> list[Path]:
    """utilisation.png, jct_cdf.png (one curve per policy, and for ``default_policy`` one
    dashed curve per gang-size bucket) and team_share.png in ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(10, 4))
    for r in results:
        bins = r.metrics.utilization_bins
        # a day's moving average keeps the lines readable over months
        k = max(1, int(86400 // bin_s))
        smooth = [sum(bins[max(0, i - k + 1): i + 1]) / len(bins[max(0, i - k + 1): i + 1])
                  for i in range(len(bins))]
        ax.plot([i * bin_s / 86400 for i in range(len(smooth))], smooth, label=r.policy, lw=1)
    ax.set_xlabel("days since first submission")
    ax.set_ylabel("GPU utilisation (24 h mean)")
    ax.set_ylim(0, 1.05)
    paths.append(_save(plt, fig, ax, "Utilisation over time", out / "utilisation.png"))

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        jcts = r.metrics.jcts
        if not jcts:
            continue
        n = len(jcts)
        ax.plot([max(j, 1.0) / 3600 for j in jcts], [(i + 1) / n for i in range(n)],
                label=r.policy, lw=1)
    for r in results:
        if r.policy != default_policy:
            continue
        for name, values in r.metrics.jcts_by_gang.items():
            if values:
                n = len(values)
                ax.plot([max(j, 1.0) / 3600 for j in values], [(i + 1) / n for i in range(n)],
                        label=f"{r.policy}, {name} GPUs ({n:,} jobs)", lw=1, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("job completion time (hours, log)")
    ax.set_ylabel("fraction of jobs")
    paths.append(_save(plt, fig, ax, "JCT CDF", out / "jct_cdf.png"))

    teams = sorted({t for r in results for t in r.metrics.teams})
    fig, ax = plt.subplots(figsize=(max(7, len(teams) * 0.7), 4))
    width = 0.8 / (len(results) + 1)
    for k, r in enumerate(results):
        span = r.metrics.makespan_s or 1.0
        ax.bar([i + k * width for i in range(len(teams))],
               [r.metrics.teams[t].gpu_hours * 3600 / span if t in r.metrics.teams else 0
                for t in teams], width, label=f"{r.policy}: avg GPUs held")
    if results:
        g = [results[0].metrics.teams[t].guaranteed if t in results[0].metrics.teams else 0
             for t in teams]
        ax.bar([i + len(results) * width for i in range(len(teams))], g, width,
               label="guarantee", color="black", alpha=0.6)
    ax.set_xticks([i + 0.4 for i in range(len(teams))], teams, rotation=45, ha="right")
    ax.set_ylabel("GPUs")
    paths.append(_save(plt, fig, ax, "Per-team share vs guarantee", out / "team_share.png",
                       legend_size=7))
    return paths
