"""The ``allot`` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from allotment import __version__
from allotment.domain.cluster import GpuType, make_cluster
from allotment.domain.org import OrgTree
from allotment.domain.orgspec import org_from_data
from allotment.errors import AllotmentError, InputError, OrgFileError
from allotment.policies import POLICIES, SchedulerConfig, make_policy

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Allotment: fair, efficient sharing of a GPU fleet.")
console = Console(width=max(Console().width, 170))
err_console = Console(stderr=True)


def _fail(exc: AllotmentError) -> None:
    err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
    raise typer.Exit(2)


def load_yaml(path: Path, field: str) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InputError(field, f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise InputError(field, f"{path} is not valid YAML: {exc}") from None


@app.command()
def version() -> None:
    """Print the version."""
    console.print(__version__)


@app.command()
def simulate(
    trace: Annotated[str, typer.Option(help="philly, tiresias-60, or a CSV path")] = "philly",
    gpus: Annotated[int, typer.Option(help="cluster size in GPUs")] = 512,
    gpus_per_node: Annotated[int, typer.Option(help="GPUs per node")] = 8,
    nodes_per_rack: Annotated[int, typer.Option(help="nodes per rack / NVLink island")] = 4,
    racks_per_pod: Annotated[int, typer.Option(help="racks per pod")] = 8,
    org: Annotated[Path | None, typer.Option(help="org YAML with guarantees")] = None,
    policies: Annotated[str, typer.Option(help="comma-separated policy names")] = (
        "static,fifo,las,fairshare"
    ),
    out: Annotated[Path, typer.Option(help="output folder")] = Path("out/simulate"),
    grace_s: Annotated[float, typer.Option(help="preemption grace period (s)")] = 60.0,
    min_runtime_s: Annotated[float, typer.Option(help="never preempt younger jobs (s)")] = 300.0,
    checkpoint_s: Annotated[float, typer.Option(help="job checkpoint interval (s)")] = 1800.0,
    limit: Annotated[int | None, typer.Option(help="replay only the first N jobs")] = None,
    plots: Annotated[bool, typer.Option(help="draw PNG plots")] = True,
    events: Annotated[bool, typer.Option(help="write events.csv per policy")] = False,
) -> None:
    """Replay a trace through each policy and compare them."""
    from allotment.sim.engine import SimConfig
    from allotment.sim.engine import simulate as run_sim
    from allotment.sim.orgs import trace_org
    from allotment.sim.report import plots as draw_plots
    from allotment.sim.report import summary, table, write_json
    from allotment.sim.traces import load_trace, resolve_trace

    try:
        names = [p.strip() for p in policies.split(",") if p.strip()]
        if not names:
            raise InputError("policies", "give at least one policy")
        for name in names:
            make_policy(name)
        if gpus <= 0:
            raise InputError("gpus", f"must be >= 1, got {gpus}")
        if gpus_per_node <= 0:
            raise InputError("gpus-per-node", f"must be >= 1, got {gpus_per_node}")
        if nodes_per_rack <= 0 or racks_per_pod <= 0:
            raise InputError("nodes-per-rack", "topology sizes must be >= 1")
        if limit is not None and limit <= 0:
            raise InputError("limit", f"must be >= 1, got {limit}")
        path = resolve_trace(trace)
        jobs = load_trace(trace)
        if limit is not None:
            jobs = jobs[:limit]
        types: list[str] = sorted({w.gpu_type for w in jobs}) or ["gpu"]
        per_type = {t: gpus // len(types) + (1 if k < gpus % len(types) else 0)
                    for k, t in enumerate(types)}
        cluster = make_cluster(per_type, gpus_per_node, nodes_per_rack, racks_per_pod)
        capacity = {GpuType(t): cluster.capacity(GpuType(t)) for t in types}
        tree: OrgTree
        if org is not None:
            tree = org_from_data(load_yaml(org, "org"), capacity)
            missing = sorted({w.team for w in jobs} - set(tree.team_ids))
            if missing:
                raise OrgFileError("org", f"teams in the trace but not in {org}: {missing[:10]}")
        else:
            tree = trace_org(jobs, capacity)
        too_big = [w for w in jobs if w.gpus > capacity[w.gpu_type]]
        if too_big:
            w = too_big[0]
            raise InputError("gpus", f"job {w.id} needs {w.gpus} GPUs; the cluster has "
                             f"{capacity[w.gpu_type]} {w.gpu_type} (give a larger --gpus)")
        cfg = SchedulerConfig(grace_s=grace_s, min_runtime_s=min_runtime_s)
        out.mkdir(parents=True, exist_ok=True)
    except AllotmentError as exc:
        _fail(exc)
        return
    results = []
    sim_cfg = SimConfig(checkpoint_interval_s=checkpoint_s, record_events=events)
    with Progress(TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                  console=err_console, transient=False) as progress:
        for name in names:
            task = progress.add_task(f"replaying {len(jobs):,} jobs under {name}", total=1.0)
            def advance(fraction: float, task: TaskID = task) -> None:
                progress.update(task, completed=fraction)

            res = run_sim(jobs, cluster, tree, make_policy(name, cfg), sim_cfg, progress=advance)
            results.append(res)
            if events:
                with (out / f"events-{name}.csv").open("w") as fh:
                    fh.write("time,event,job_id,detail\n")
                    for t, ev, jid, detail in res.events:
                        fh.write(f"{t},{ev},{jid},\"{detail}\"\n")
    meta = {"trace": str(path), "gpus": cluster.total_gpus, "gpus_per_node": gpus_per_node,
            "nodes": len(cluster.nodes), "jobs": len(jobs), "grace_s": grace_s,
            "min_runtime_s": min_runtime_s, "checkpoint_s": checkpoint_s}
    doc = summary(results, meta)
    json_path = write_json(doc, out)
    console.print(table(results, f"{trace}: {len(jobs):,} jobs on {cluster.total_gpus} GPUs "
                                 f"({len(cluster.nodes)} nodes x {gpus_per_node})"))
    written = [json_path]
    if plots:
        written += draw_plots(results, out, sim_cfg.bin_s)
    console.print("wrote " + ", ".join(str(p) for p in written))


def main() -> None:  # pragma: no cover - console entry
    try:
        app()
    except AllotmentError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        sys.exit(2)


__all__ = ["POLICIES", "app", "json", "main"]
