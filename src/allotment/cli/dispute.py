"""``allot dispute``: file, list and resolve disputes through the service."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from allotment.cli.app import _call, _fail, app, console
from allotment.errors import AllotmentError

dispute_app = typer.Typer(no_args_is_help=True, help="File, list and resolve disputes.")
app.add_typer(dispute_app, name="dispute")


@dispute_app.command("file")
def dispute_file(
    team: Annotated[str, typer.Option(help="your team")],
    wants: Annotated[str, typer.Option(help="what the team wants")],
    why_: Annotated[str, typer.Option("--why", help="why")],
    plan: Annotated[int | None, typer.Option(help="the plan disputed")] = None,
    preemption: Annotated[int | None, typer.Option(help="the preempted job disputed")] = None,
    gpu_type: Annotated[str | None, typer.Option(help="GPU type of the quota asked")] = None,
    gpus: Annotated[int | None, typer.Option(help="guaranteed GPUs asked")] = None,
    period: Annotated[str | None, typer.Option(help="period YYYY-MM of the quota")] = None,
) -> None:
    """File a dispute about a plan or a preemption (leads)."""
    if (plan is None) == (preemption is None):
        _fail(AllotmentError("subject: give exactly one of --plan or --preemption"))
    d = _call("POST", "/v1/disputes", json={
        "team": team, "subject_kind": "plan" if plan is not None else "preemption",
        "subject_id": str(plan if plan is not None else preemption), "wants": wants,
        "why": why_, "gpu_type": gpu_type, "wanted_gpus": gpus, "period": period})
    console.print(f"dispute {d['id']} filed; assigned to {d['assigned_to'] or 'the admins'}")


@dispute_app.command("list")
def dispute_list() -> None:
    """Disputes you can see, with their escalation level."""
    page = _call("GET", "/v1/disputes")
    t = Table(title="Disputes")
    for col in ("id", "team", "subject", "state", "assigned to", "level", "wants", "decision"):
        t.add_column(col, overflow="fold")
    for d in page["items"]:
        t.add_row(str(d["id"]), d["team"], f"{d['subject_kind']} {d['subject_id']}", d["state"],
                  d["assigned_to"] or "admins", str(d["level"]), d["wants"],
                  f"{d['decision'] or '-'}: {d['decision_reason'] or ''}")
    console.print(t)


@dispute_app.command("resolve")
def dispute_resolve(
    dispute_id: Annotated[int, typer.Argument(help="dispute id")],
    decision: Annotated[str, typer.Option(help="granted, partially_granted or denied")],
    reason: Annotated[str, typer.Option(help="why")],
    guaranteed: Annotated[int | None, typer.Option(help="new guarantee for the period")] = None,
) -> None:
    """Resolve a dispute assigned to you (or any, as admin)."""
    d = _call("POST", f"/v1/disputes/{dispute_id}/resolve", json={
        "decision": decision, "reason": reason, "guaranteed": guaranteed})
    console.print(f"dispute {d['id']}: {d['decision']}")
