"""``allot simulate``: replay a trace through each policy and compare them."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from allotment.cli.app import _fail, app, console, err_console, load_yaml
from allotment.domain.cluster import GpuType, make_cluster
from allotment.domain.org import OrgTree
from allotment.domain.orgspec import budgets_from_data, org_from_data, reservations_from_data
from allotment.domain.reservation import LaunchReservation
from allotment.domain.workload import JobId
from allotment.errors import AllotmentError, InputError, OrgFileError
from allotment.policies import make_policy
from allotment.scheduler.config import DEFAULTS, LasPreemption, SchedulerConfig


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
    credit_half_life_s: Annotated[float | None, typer.Option(
        help="credit for lending: its half-life in s (off without it)")] = (
            DEFAULTS.credit_half_life_s),
    credit_cap: Annotated[float, typer.Option(
        help="credit cap: this many x guarantee x credit half-life")] = DEFAULTS.credit_cap,
    engine: Annotated[str, typer.Option(
        help="memory (the in-memory simulator) or service (the real scheduler loop on a "
             "temporary SQLite database, with a virtual clock)")] = "memory",
) -> None:
    """Replay a trace through each policy and compare them."""
    from allotment.sim.engine import SimConfig
    from allotment.sim.engine import simulate as run_sim
    from allotment.sim.orgs import trace_org
    from allotment.sim.report import gang_table, summary, table, write_json
    from allotment.sim.report import plots as draw_plots
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
        budgets: dict[tuple[str, GpuType], float] = {}
        launches: list[LaunchReservation] = []
        if org is not None:
            org_data = load_yaml(org, "org")
            tree = org_from_data(org_data, capacity)
            budgets = budgets_from_data(org_data, tree)
            launches = reservations_from_data(
                org_data, tree, {GpuType(t): cluster.max_node_gpus(GpuType(t)) for t in types})
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
        named = [w for w in jobs if w.reservation is not None]
        if named:
            from allotment.scheduler.state import ClusterState

            check = ClusterState(cluster, tree)
            check.set_launches(launches)
            for w in named:
                bad = check.unschedulable(w)
                if bad is not None:
                    raise InputError(bad[0], f"job {w.id}: {bad[1]}")
        cfg = SchedulerConfig(grace_s=grace_s, min_runtime_s=min_runtime_s,
                              checkpoint_s=checkpoint_s,
                              las_preemption=LasPreemption.parse(las_preemption,
                                                                 "las-preemption"),
                              credit_half_life_s=credit_half_life_s, credit_cap=credit_cap)
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
                             sim_cfg, progress=advance, budgets=budgets, launches=launches)
            else:
                res = run_sim(jobs, cluster, tree, make_policy(name, cfg), sim_cfg,
                              progress=advance, budgets=budgets, launches=launches)
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
            "las_preemption": las_preemption, "engine": engine,
            "credit_half_life_s": credit_half_life_s}
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
