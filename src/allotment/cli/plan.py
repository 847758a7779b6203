"""``allot plan``: plan GPU quotas for a period from a scenario, with reasons and what-ifs;
``allot plan publish``: run and publish one through the service."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from allotment.cli.app import _call, _fail, app, console, load_yaml
from allotment.errors import AllotmentError, InputError


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


def plan_publish(scenario: Path | None, plan_id: int | None) -> None:
    """``allot plan publish FILE`` (run and publish) or ``allot plan publish --id N``."""
    if plan_id is None:
        if scenario is None:
            _fail(AllotmentError("scenario: give a scenario file or --id of a draft plan"))
            return
        try:
            data = load_yaml(scenario, "scenario")
        except AllotmentError as exc:
            _fail(exc)
            return
        draft = _call("POST", "/v1/plans", json={"scenario": json.loads(
            json.dumps(data, default=str))})
        plan_id = draft["id"]
    p = _call("POST", f"/v1/plans/{plan_id}/publish")
    console.print(f"plan {p['id']} published for {p['period']}: "
                  + ", ".join(f"{a['team']} {a['allocated']} {a['gpu_type']}"
                              for a in p["result"]["teams"].values()))
