"""``allot trace``: make traces to replay with ``allot simulate`` (``sim.synth``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml

from allotment.cli.app import _fail, app, console
from allotment.errors import AllotmentError, InputError

trace_app = typer.Typer(no_args_is_help=True, help="Make traces for allot simulate.")
app.add_typer(trace_app, name="trace")


@trace_app.command("synth")
def synth_cmd(
    out: Annotated[Path, typer.Option(help="trace CSV to write (the generic format)")],
    scenario: Annotated[str, typer.Option(help="workload scenario: llm-lab")] = "llm-lab",
    gpus: Annotated[int, typer.Option(help="cluster size in GPUs")] = 16384,
    days: Annotated[float, typer.Option(help="length of the trace in days")] = 30.0,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same trace)")] = 1,
    org_out: Annotated[Path | None, typer.Option(
        help="also write an org YAML whose guarantees fit the cluster")] = None,
) -> None:
    """Write a synthetic trace (and its org file); the scenario's distributions and their
    sources are in ``allotment/sim/synth.py``."""
    from allotment.sim.synth import org_data, synthesize, trace_csv

    try:
        if gpus <= 0:
            raise InputError("gpus", f"must be >= 1, got {gpus}")
        for path, field in ((out, "out"), (org_out, "org-out")):
            if path is not None and path.is_dir():
                raise InputError(field, f"{path} is a folder; give a file name")
        trace = synthesize(scenario, gpus, days, seed)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(trace_csv(trace))
            if org_out is not None:
                org_out.parent.mkdir(parents=True, exist_ok=True)
                org_out.write_text(yaml.safe_dump(org_data(trace), sort_keys=False))
        except OSError as exc:
            raise InputError("out", f"cannot write: {exc.strerror}: {exc.filename}") from None
    except AllotmentError as exc:
        _fail(exc)
        return
    teams = len(trace.guarantees)
    console.print(f"wrote {out}: {len(trace.jobs):,} jobs of {teams} teams over {days:g} days, "
                  f"demand {trace.demand_fraction():.1%} of {gpus:,} GPUs"
                  + (f"; {org_out}" if org_out is not None else ""))


__all__ = ["synth_cmd", "trace_app"]
