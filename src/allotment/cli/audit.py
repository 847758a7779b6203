"""``allot audit verify``: recompute the audit chain on the database, under DATA_DIR's key."""

from __future__ import annotations

from pathlib import Path

import typer

from allotment.cli.app import DataDir, DbOpt, _fail, app, console, err_console
from allotment.errors import AllotmentError

audit_app = typer.Typer(no_args_is_help=True, help="The hash-chained audit log.")
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify(db: DbOpt = None, data_dir: DataDir = Path(".allotment")) -> None:
    """Recompute the audit chain under the key of DATA_DIR, and compare the head row and the
    head file with it; exit 1 if any entry was edited or deleted, naming it."""
    from sqlalchemy.exc import SQLAlchemyError

    from allotment.storage import audit
    from allotment.storage.db import Database

    try:
        database = Database(db, data_dir)
        database.require_current_schema()
        with database.session() as s:
            result = audit.verify(s)
    except AllotmentError as exc:
        _fail(exc)
        return
    except SQLAlchemyError as exc:
        _fail(AllotmentError(f"database {db or 'default'}: {exc.__class__.__name__}: "
                             f"{str(exc).splitlines()[0]}"))
        return
    if result.ok:
        how = (f"keyed from entry {result.keyed_from}, head file agrees"
               if result.keyed_from is not None else
               "not keyed yet (the service keys it at its next append)")
        console.print(f"audit log OK: {result.entries} entries, chain intact; {how}")
        return
    for p in result.problems:
        err_console.print(f"[bold red]audit:[/] {p}", highlight=False)
    raise typer.Exit(1)
