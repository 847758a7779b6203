"""The ``allot`` command line."""

from __future__ import annotations

import csv
import dataclasses
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
from allotment.domain.workload import JobId
from allotment.errors import AllotmentError, InputError, OrgFileError
from allotment.policies import POLICIES, make_policy
from allotment.scheduler.config import DEFAULTS, LasPreemption, SchedulerConfig

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
    trace: Annotated[str, typer.Option(
        help="philly, tiresias-60, a CSV path, or an sacct -P export")] = "philly",
    gpus: Annotated[int, typer.Option(help="cluster size in GPUs")] = 512,
    gpus_per_node: Annotated[int, typer.Option(help="GPUs per node")] = 8,
    nodes_per_rack: Annotated[int, typer.Option(help="nodes per rack / NVLink island")] = 4,
    racks_per_pod: Annotated[int, typer.Option(help="racks per pod")] = 8,
    org: Annotated[Path | None, typer.Option(help="org YAML with guarantees")] = None,
    policies: Annotated[str, typer.Option(help="comma-separated policy names")] = (
        "static,fifo,las,fairshare"
    ),
    out: Annotated[Path, typer.Option(help="output folder")] = Path("out/simulate"),
    grace_s: Annotated[float, typer.Option(help="preemption grace period (s)")] = DEFAULTS.grace_s,
    min_runtime_s: Annotated[float, typer.Option(
        help="never preempt younger jobs (s)")] = DEFAULTS.min_runtime_s,
    checkpoint_s: Annotated[float, typer.Option(
        help="job checkpoint interval (s)")] = DEFAULTS.checkpoint_s or 1800.0,
    las_preemption: Annotated[str, typer.Option(
        help="fairshare: queue-2 jobs a queue-1 job may preempt: none, team or surplus")] = "none",
    limit: Annotated[int | None, typer.Option(help="replay only the first N jobs")] = None,
    plots: Annotated[bool, typer.Option(help="draw PNG plots")] = True,
    events: Annotated[bool, typer.Option(help="write events.csv per policy")] = False,
    engine: Annotated[str, typer.Option(
        help="memory (the in-memory simulator) or service (the real scheduler loop on a "
             "temporary SQLite database, with a virtual clock)")] = "memory",
) -> None:
    """Replay a trace through each policy and compare them."""
    from allotment.sim.engine import SimConfig
    from allotment.sim.engine import simulate as run_sim
    from allotment.sim.orgs import trace_org
    from allotment.sim.report import plots as draw_plots
    from allotment.sim.report import gang_table, summary, table, write_json
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
        if engine not in ("memory", "service"):
            raise InputError("engine", f"must be memory or service, got {engine!r}")
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
        cfg = SchedulerConfig(grace_s=grace_s, min_runtime_s=min_runtime_s,
                              checkpoint_s=checkpoint_s,
                              las_preemption=LasPreemption.parse(las_preemption,
                                                                 "las-preemption"))
        out.mkdir(parents=True, exist_ok=True)
    except AllotmentError as exc:
        _fail(exc)
        return
    results = []
    sim_cfg = SimConfig(record_events=events)
    with Progress(TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                  console=err_console, transient=False) as progress:
        for name in names:
            task = progress.add_task(f"replaying {len(jobs):,} jobs under {name}", total=1.0)
            def advance(fraction: float, task: TaskID = task) -> None:
                progress.update(task, completed=fraction)

            if engine == "service":
                from allotment.service.replay import replay

                res = replay(jobs, cluster, tree, dataclasses.replace(cfg, policy=name),
                             sim_cfg, progress=advance)
            else:
                res = run_sim(jobs, cluster, tree, make_policy(name, cfg), sim_cfg,
                              progress=advance)
            results.append(res)
            if events:
                with (out / f"events-{name}.csv").open("w", newline="") as fh:
                    writer = csv.writer(fh)
                    writer.writerow(["time", "event", "job_id", "team", "detail"])
                    for t, ev, jid, detail in res.events:
                        rec = res.jobs.get(JobId(jid))
                        writer.writerow([t, ev, jid, rec.workload.team if rec else "", detail])
    meta = {"trace": str(path), "gpus": cluster.total_gpus, "gpus_per_node": gpus_per_node,
            "nodes": len(cluster.nodes), "jobs": len(jobs), "grace_s": grace_s,
            "min_runtime_s": min_runtime_s, "checkpoint_s": checkpoint_s,
            "las_preemption": las_preemption, "engine": engine}
    doc = summary(results, meta)
    json_path = write_json(doc, out)
    console.print(table(results, f"{trace}: {len(jobs):,} jobs on {cluster.total_gpus} GPUs "
                                 f"({len(cluster.nodes)} nodes x {gpus_per_node})"))
    console.print(gang_table(results, "Queueing by gang size (all time waiting, completed "
                                      "jobs)"))
    written = [json_path]
    if plots:
        written += draw_plots(results, out, sim_cfg.bin_s)
    console.print("wrote " + ", ".join(str(p) for p in written))


def parse_capacity(values: list[str], capacity: dict[str, int]) -> dict[str, int]:
    """``+2000``, ``-500``, ``h100=+2000`` or ``h100=12000`` -> new capacity per type."""
    out: dict[str, int] = {}
    for raw in values:
        gpu_type, _, amount = raw.rpartition("=")
        if not gpu_type:
            if len(capacity) != 1:
                raise InputError("capacity", f"{raw!r}: name the GPU type, e.g. h100={raw}")
            gpu_type = next(iter(capacity))
        if gpu_type not in capacity:
            raise InputError("capacity", f"unknown GPU type {gpu_type!r}")
        try:
            n = int(amount.replace(",", "").replace("_", ""))
        except ValueError:
            raise InputError("capacity", f"{raw!r} is not [type=][+|-]number") from None
        base = out.get(gpu_type, capacity[gpu_type])
        value = base + n if amount.strip()[:1] in "+-" else n
        if value < 0:
            raise InputError("capacity", f"{raw!r} leaves {value} GPUs")
        out[gpu_type] = value
    return out


@app.command()
def plan(
    scenario: Annotated[Path, typer.Argument(
        help="scenario YAML/JSON; or `publish FILE` / `publish --id N` to publish through "
             "the service")],
    target: Annotated[Path | None, typer.Argument(help="with publish: the scenario")] = None,
    plan_id: Annotated[int | None, typer.Option("--id", help="with publish: a draft plan")]
    = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="write the plan JSON here")
    ] = None,
    markdown: Annotated[Path | None, typer.Option(help="write the Markdown report here")] = None,
    out: Annotated[Path, typer.Option(help="folder for plan.json and plan.md")] = Path("out/plan"),
    compare: Annotated[Path | None, typer.Option(help="a second scenario to compare")] = None,
    capacity: Annotated[list[str] | None, typer.Option(
        help="capacity override: +2000, -500, h100=+2000 or h100=12000 (repeatable)")] = None,
) -> None:
    """Plan GPU quotas for a period from team requests, with reasons and what-ifs."""
    if str(scenario) == "publish":
        from allotment.cli.service import plan_publish

        plan_publish(target, plan_id)
        return
    from rich.table import Table

    from allotment.planner import allocate, cooperation_options, parse_scenario
    from allotment.planner.report import compare as diff_plans
    from allotment.planner.report import to_json, to_markdown

    try:
        sc = parse_scenario(load_yaml(scenario, "scenario"))
        override = parse_capacity(capacity or [], sc.capacity())
        result = allocate(sc, override)
        coop = cooperation_options(sc, result)
        other = None
        if compare is not None:
            sc_b = parse_scenario(load_yaml(compare, "compare"))
            other = allocate(sc_b, parse_capacity(capacity or [], sc_b.capacity()))
        out.mkdir(parents=True, exist_ok=True)
    except AllotmentError as exc:
        _fail(exc)
        return
    doc = to_json(result, coop)
    json_path = json_out or out / "plan.json"
    md_path = markdown or out / "plan.md"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(doc, indent=2) + "\n")
    md_path.write_text(to_markdown(result, coop))
    caps = ", ".join(f"{t} {n:,}" for t, n in result.capacity.items())
    table = Table(title=f"Plan for {result.period}: {caps} GPUs", show_lines=False)
    for col in ("team", "group", "type", "requested", "minimum", "allocated", "why"):
        table.add_column(col, justify="right" if col in ("requested", "minimum", "allocated")
                         else "left", overflow="fold")
    for a in result.allocations:
        table.add_row(a.team, a.parent, a.gpu_type, f"{a.requested:,}", f"{a.min_gpus:,}",
                      f"[bold]{a.allocated:,}[/]", a.reason)
    console.print(table)
    if sc.other_period_requests:
        console.print(f"left out {sc.other_period_requests} request(s) for other periods")
    for problem in result.infeasible:
        console.print(f"[bold red]cannot be met:[/] {problem}", highlight=False)
    if coop:
        ct = Table(title="Pick one team, or let them cooperate")
        for col in ("teams", "type", "why grouped", "apart", "pooled", "what changes"):
            ct.add_column(col, overflow="fold")
        for c in coop:
            ct.add_row(" + ".join(c.teams), c.gpu_type, c.kind,
                       ", ".join(f"{k} {v:,}" for k, v in c.separate.items()),
                       f"{c.pooled:,}", c.note)
        console.print(ct)
    if other is not None:
        dt = Table(title=f"{scenario.name} -> {compare.name if compare else ''}")
        for col in ("team", "type", "before", "after", "change", "why now"):
            dt.add_column(col, overflow="fold")
        for d in diff_plans(result, other):
            if d.delta or d.reason_before != d.reason_after:
                dt.add_row(d.team, d.gpu_type, f"{d.before:,}", f"{d.after:,}",
                           f"{d.delta:+,}", d.reason_after)
        console.print(dt)
    console.print(f"wrote {json_path}, {md_path}")


from allotment.cli import service as _service  # noqa: E402,F401  (registers its commands)
from allotment.cli import slurm as _slurm  # noqa: E402,F401  (registers allot slurm)
from allotment.cli import trace as _trace  # noqa: E402,F401  (registers allot trace)


def main() -> None:  # pragma: no cover - console entry
    try:
        app()
    except AllotmentError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        sys.exit(2)


__all__ = ["POLICIES", "app", "json", "main"]
