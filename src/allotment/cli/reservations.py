"""``allot reserve`` and ``allot reservations``: launch reservations through the service
(``governance.reservations`` has the rules)."""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from allotment.cli.app import _call, _fail, app, console
from allotment.errors import InputError

reservations_app = typer.Typer(help="Launch reservations: list (the default), approve, "
                               "cancel.", invoke_without_command=True)
app.add_typer(reservations_app, name="reservations")


def _said(r: dict[str, Any]) -> None:
    console.print(f"reservation {r['name']}: [bold]{r['status']}[/] ({r['gpus']} "
                  f"{r['gpu_type']} GPUs for team {r['team']}, {r['start']} to {r['end']}"
                  f"{', approved by ' + r['approved_by'] if r['approved_by'] else ''})",
                  highlight=False)
    text = (r.get("impact") or {}).get("text")
    if r["status"] == "pending" and text:
        console.print(f"  impact: {escape(text)}", highlight=False)
        console.print("  an admin approves it with: allot reservations approve "
                      f"{r['name']}", highlight=False)


@app.command()
def reserve(
    team: Annotated[str, typer.Option(help="your team")],
    gpus: Annotated[int, typer.Option(help="GPUs to hold for the launch")],
    start: Annotated[str, typer.Option(help="ISO 8601 start, e.g. 2026-12-01T09:00Z "
                                       "(without an offset: UTC)")],
    hours: Annotated[float, typer.Option(help="length of the window in hours")],
    reason: Annotated[str, typer.Option(help="why (the launch)")],
    gpu_type: Annotated[str | None, typer.Option(help="GPU type (default: the only one)")]
    = None,
    name: Annotated[str | None, typer.Option(help="name (default: <team>-<start>)")] = None,
) -> None:
    """Ask for a launch reservation (leads): approved at once within the team's guarantee,
    else pending an admin, with the guarantees it would shrink."""
    if not math.isfinite(hours):  # JSON has no NaN or infinity: say so, not a traceback
        _fail(InputError("hours", f"must be a finite number of hours, got {hours}"))
    body: dict[str, Any] = {"team": team, "gpus": gpus, "start": start, "hours": hours,
                            "reason": reason}
    if gpu_type is not None:
        body["gpu_type"] = gpu_type
    if name is not None:
        body["name"] = name
    _said(_call("POST", "/v1/reservations", json=body))


@reservations_app.callback()
def reservations_list(
    ctx: typer.Context,
    status: Annotated[list[str] | None, typer.Option(help="pending, approved or cancelled")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Launch reservations, by start: name, team, GPUs, type, start, end, status."""
    if ctx.invoked_subcommand is not None:
        return
    params: dict[str, Any] = {"limit": 500}
    if status:
        params["status"] = status
    page = _call("GET", "/v1/reservations", params=params)
    if as_json:
        print(json.dumps(page, indent=2))
        return
    t = Table(title=f"{len(page['items'])} of {page['total']} reservations")
    for col in ("name", "team", "GPUs", "type", "start", "end", "status"):
        t.add_column(col, overflow="fold", justify="right" if col == "GPUs" else "left")
    for r in page["items"]:
        t.add_row(r["name"], r["team"], str(r["gpus"]), r["gpu_type"], r["start"], r["end"],
                  r["status"])
    console.print(t)


@reservations_app.command("approve")
def reservations_approve(name: Annotated[str, typer.Argument(help="reservation name")]) -> None:
    """Approve a pending reservation (admins)."""
    _said(_call("POST", f"/v1/reservations/{name}/approve"))


@reservations_app.command("cancel")
def reservations_cancel(name: Annotated[str, typer.Argument(help="reservation name")]) -> None:
    """Cancel a reservation (a lead of its team, or an admin)."""
    _said(_call("DELETE", f"/v1/reservations/{name}"))
