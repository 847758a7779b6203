"""The commands that talk to the service over HTTP with the saved token: ``login``,
``submit``, ``jobs``, ``why``, ``cancel``, ``usage``."""

from __future__ import annotations

import json
import shlex
from typing import Annotated, Any

import typer
from rich.table import Table

from allotment.cli.app import _call, _fail, _when, app, console
from allotment.errors import AllotmentError


@app.command()
def login(url: Annotated[str, typer.Option(help="service URL")],
          token: Annotated[str, typer.Option(help="API token")]) -> None:
    """Save the service URL and token for the other commands."""
    from allotment.service.client import write_config

    path = write_config(url, token)
    me = _call("GET", "/v1/me")
    console.print(f"logged in as {me['name']} ({me['role']}); saved to {path}")


@app.command()
def submit(
    command: Annotated[list[str], typer.Argument(help="the command (after --)")],
    team: Annotated[str, typer.Option(help="team")],
    gpus: Annotated[int, typer.Option(help="GPUs (gang, all-or-nothing)")] = 1,
    gpu_type: Annotated[str | None, typer.Option(help="GPU type (default: the only one)")]
    = None,
    name: Annotated[str, typer.Option(help="job name")] = "",
    priority: Annotated[str, typer.Option(help="low, normal or high")] = "normal",
    preemptible: Annotated[bool, typer.Option(help="may be preempted when borrowing")] = True,
    time_limit_s: Annotated[float | None, typer.Option(help="time limit (estimates)")] = None,
    reservation: Annotated[str | None, typer.Option(help="the launch reservation to run in")]
    = None,
) -> None:
    """Submit a job: allot submit --team llama --gpus 8 -- python train.py"""
    if gpu_type is None:
        inv = _call("GET", "/v1/inventory")
        types = sorted(inv["gpus_by_type"])
        if len(types) != 1:
            _fail(AllotmentError(f"gpu_type: choose one of {types} with --gpu-type"))
        gpu_type = types[0]
    job = _call("POST", "/v1/jobs", json={
        "team": team, "gpu_type": gpu_type, "gpus": gpus, "command": shlex.join(command),
        "name": name, "priority_class": priority, "preemptible": preemptible,
        "time_limit_s": time_limit_s, "reservation": reservation})
    console.print(f"submitted job {job['id']} ({gpus} {gpu_type} GPUs for team {team}"
                  f"{', in reservation ' + reservation if reservation else ''})")


@app.command()
def jobs(state: Annotated[list[str] | None, typer.Option(help="filter by state")] = None,
         team: Annotated[str | None, typer.Option(help="filter by team")] = None,
         limit: Annotated[int, typer.Option(help="at most this many")] = 50,
         as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Your teams' jobs, newest first, with their state and why they wait."""
    params: dict[str, Any] = {"limit": limit}
    if state:
        params["state"] = state
    if team:
        params["team"] = team
    page = _call("GET", "/v1/jobs", params=params)
    if as_json:
        print(json.dumps(page, indent=2))
        return
    t = Table(title=f"{len(page['items'])} of {page['total']} jobs")
    for col in ("id", "team", "user", "gpus", "state", "queue", "est. start", "why"):
        t.add_column(col, overflow="fold")
    for j in page["items"]:
        t.add_row(str(j["id"]), j["team"], j["user"], f"{j['gpus']} {j['gpu_type']}", j["state"],
                  str(j["queue_position"] or "-"), _when(j["estimated_start"]), j["reason"])
    console.print(t)


@app.command()
def why(job_id: Annotated[int, typer.Argument(help="job id")]) -> None:
    """Where a job stands and why, in words."""
    from allotment.domain.jobstate import JobState

    j = _call("GET", f"/v1/jobs/{job_id}")
    console.print(f"job {j['id']} of team {j['team']}: [bold]{j['state']}[/]")
    if j["state"] == JobState.PENDING:
        console.print(f"  queue position {j['queue_position'] or '-'} among "
                      f"{j['gpu_type']} jobs; estimated start {_when(j['estimated_start'])}")
    console.print(f"  why: {j['reason']}", highlight=False)
    if j.get("reservation"):
        console.print(f"  in launch reservation {j['reservation']}", highlight=False)
    if j["placement"]:
        console.print(f"  on {j['placement']}, {j['borrowed_gpus']} GPUs borrowed")
    if j["preemptions"]:
        console.print(f"  preempted {j['preemptions']} time(s); last: {j['stop_reason']}")


@app.command()
def cancel(job_id: Annotated[int, typer.Argument(help="job id")]) -> None:
    """Cancel a job (a running one gets SIGTERM, then SIGKILL after the grace period)."""
    j = _call("POST", f"/v1/jobs/{job_id}/cancel")
    console.print(f"job {j['id']}: {j['state']}")


@app.command()
def usage(period: Annotated[str | None, typer.Option(help="YYYY-MM (default: now)")] = None,
          as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """GPU-hours per team: used, borrowed, lent, idle-allocated, the hoarding score, the
    period's budget and what is left of it, and the credit for lending."""
    rows = _call("GET", "/v1/usage", params={"period": period} if period else {})
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    t = Table(title=f"Usage {period or 'this month'} (GPU-hours)")
    for col in ("team", "type", "used", "borrowed", "lent", "idle-allocated", "guaranteed",
                "hoarding", "budget", "remaining", "credit"):
        t.add_column(col, justify="left" if col in ("team", "type") else "right")

    def hours(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    for r in rows:
        t.add_row(r["team"], r["gpu_type"], f"{r['used_gpu_hours']:.2f}",
                  f"{r['borrowed_gpu_hours']:.2f}", f"{r['lent_gpu_hours']:.2f}",
                  f"{r['idle_allocated_gpu_hours']:.2f}", f"{r['guaranteed_gpu_hours']:.2f}",
                  f"{r['hoarding_score']:.2f}", hours(r.get("budget_gpu_hours")),
                  hours(r.get("remaining_gpu_hours")), hours(r.get("credit_gpu_hours")))
    console.print(t)
