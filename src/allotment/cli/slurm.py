"""``allot slurm``: sync quotas down to Slurm, read usage up from sacct, import a cluster."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from allotment.cli.app import _fail, app, console
from allotment.errors import AllotmentError

slurm_app = typer.Typer(no_args_is_help=True,
                        help="Govern a Slurm cluster: sync quotas, read usage, import.")
app.add_typer(slurm_app, name="slurm")

DbOpt = Annotated[str | None, typer.Option("--db", help="database URL (default $ALLOTMENT_DB "
                                           "or sqlite:///./allotment.db)")]
ConfOpt = Annotated[str | None, typer.Option(help="slurm.conf (default $SLURM_CONF)")]
DataDir = Annotated[Path, typer.Option(envvar="ALLOTMENT_DATA_DIR", help="the service's data "
                                       "directory (its audit key and head file)")]


@slurm_app.command("sync")
def sync_cmd(
    db: DbOpt = None,
    slurm_conf: ConfOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the diff, change nothing")]
    = False,
    submit_user: Annotated[list[str] | None, typer.Option(
        help="Unix user the service submits as (repeatable; default: this user)")] = None,
    grace_s: Annotated[int, typer.Option(min=0, max=86400, help="GraceTime of a preempted "
                                         "borrowing job")] = 30,
    data_dir: DataDir = Path(".allotment"),
) -> None:
    """Make Slurm enforce the quotas in force: accounts, one QOS per team with its
    guarantee, the borrowing QOS, users."""
    from allotment.backends.slurm.cmd import Slurm
    from allotment.backends.slurm.service import run_sync
    from allotment.storage.db import Database

    try:
        database = Database(db, data_dir)
        database.upgrade()
        res = run_sync(database, Slurm(slurm_conf), time.time(), dry_run, submit_user, grace_s)
    except AllotmentError as exc:
        _fail(exc)
        return
    for c in res.changes:
        console.print(c.line(), markup=False, highlight=False)
    for note in res.notes:
        console.print(f"note: {note}", markup=False, highlight=False)
    verb = "would change" if dry_run else "changed"
    console.print(f"period {res.period}: {verb} {len(res.changes)} thing(s) in Slurm"
                  + ("" if res.changes else " (already in sync)"))


@slurm_app.command("usage")
def usage_cmd(
    db: DbOpt = None,
    slurm_conf: ConfOpt = None,
    hours: Annotated[float, typer.Option(min=0.01, max=24 * 400,
                                         help="read this many hours back")] = 24.0,
    data_dir: DataDir = Path(".allotment"),
) -> None:
    """Read ``sacct`` into the service's accounting for the last HOURS, and print it."""
    from allotment.backends.slurm.cmd import Slurm
    from allotment.backends.slurm.service import import_usage
    from allotment.domain.period import Period
    from allotment.governance import accounting
    from allotment.storage.db import Database

    try:
        database = Database(db, data_dir)
        database.upgrade()
        now = time.time()
        n = import_usage(database, Slurm(slurm_conf), now - hours * 3600, now + 1, now)
        with database.session() as s:
            rows = accounting.usage_summary(s, Period.of(now))
    except AllotmentError as exc:
        _fail(exc)
        return
    t = Table(title=f"usage from {n} sacct record(s) (this period)")
    for c in ("team", "gpu type", "GPU-h used", "GPU-h borrowed", "preemptions"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["team"], r["gpu_type"], f"{r['used_gpu_hours']:.3f}",
                  f"{r['borrowed_gpu_hours']:.3f}", str(r["preemptions"]))
    console.print(t)


@slurm_app.command("import")
def import_cmd(
    out: Annotated[Path, typer.Option(help="folder for org.yaml and inventory.json")]
    = Path("."),
    slurm_conf: ConfOpt = None,
    gpu_type: Annotated[str, typer.Option(help="type of GPUs whose gres has no type")] = "gpu",
    db: Annotated[str | None, typer.Option("--db", help="also load both into this service "
                                           "database")] = None,
    data_dir: DataDir = Path(".allotment"),
) -> None:
    """Build an org file from the account tree and an inventory from sinfo's GPU nodes."""
    import yaml

    from allotment.backends.slurm.cmd import Slurm
    from allotment.backends.slurm.importer import import_cluster
    from allotment.domain.cluster import GpuType
    from allotment.domain.orgspec import org_from_data

    try:
        nodes, org = import_cluster(Slurm(slurm_conf), gpu_type)
        if not nodes:
            raise AllotmentError("sinfo lists no node with GPUs (gres gpu)")
        if not org:
            raise AllotmentError("sacctmgr lists no account besides root")
        cap: dict[GpuType, int] = {}
        for n in nodes:
            cap[GpuType(n.gpu_type)] = cap.get(GpuType(n.gpu_type), 0) + n.gpus
        org_from_data({"org": org}, cap)  # refuse an org that does not fit, naming the field
        inventory = {"nodes": [{"name": n.name, "gpu_type": n.gpu_type, "gpus": n.gpus,
                                "state": n.state} for n in nodes]}
        out.mkdir(parents=True, exist_ok=True)
        (out / "org.yaml").write_text(yaml.safe_dump({"org": org}, sort_keys=False))
        (out / "inventory.json").write_text(json.dumps(inventory, indent=2) + "\n")
        if db is not None:
            from allotment.storage import repo
            from allotment.storage.db import Database

            database = Database(db, data_dir)
            database.upgrade()
            now = time.time()
            with database.session() as s:
                repo.set_inventory(s, [repo.NodeSpec(n.name, n.gpu_type, n.gpus, 0, 0,
                                                     n.state) for n in nodes], "slurm-import", now)
                repo.set_org(s, {"org": org}, "slurm-import", now)
    except (AllotmentError, OSError) as exc:
        _fail(exc if isinstance(exc, AllotmentError) else AllotmentError(str(exc)))
        return
    console.print(f"{len(nodes)} GPU node(s), {sum(n.gpus for n in nodes)} GPUs; "
                  f"{len(org)} top-level org node(s) -> {out / 'org.yaml'}, "
                  f"{out / 'inventory.json'}" + (f"; loaded into {db}" if db else ""))
