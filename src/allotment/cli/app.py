"""The ``allot`` app, its consoles and the helpers every command group shares: ``_fail``
(print the error in one line, exit 2), ``load_yaml``, ``_call`` (a request to the service,
failing like ``_fail``), ``_when``, and the ``--db`` / ``--data-dir`` options of the
commands that open the database.

Each command group is a module of its own (``simulate``, ``plan``, ``service``, ``client``,
``admin``, ``audit``, ``dispute``, ``slurm``); ``cli/main.py`` imports them, which
registers their commands. They import this module, never ``main``."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.markup import escape

from allotment import __version__
from allotment.errors import AllotmentError, InputError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Allotment: fair, efficient sharing of a GPU fleet.")
console = Console(width=max(Console().width, 170))
err_console = Console(stderr=True, soft_wrap=True)  # an error stays one line


def _fail(exc: AllotmentError) -> None:
    err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
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


DbOpt = Annotated[str | None, typer.Option("--db", help="database URL (default $ALLOTMENT_DB, "
                                           "else allotment.db in the data directory)")]
DataDir = Annotated[Path, typer.Option(
    envvar="ALLOTMENT_DATA_DIR", help="data directory: the audit key and head file, run "
    "folders and logs, simulator reports ($ALLOTMENT_DATA_DIR)")]


def database_at(db: str | None, data_dir: Path, create: bool = False) -> str:
    """The database of a command: ``--db``, else ``$ALLOTMENT_DB``, else ``allotment.db`` in
    ``data_dir`` (the same default for every command). One that does not exist is refused
    in one line before anything is created, unless ``create`` (a new service's SQLite
    file: ``allot up``, ``allot serve --create-db``; a PostgreSQL database is never made
    here)."""
    from allotment.storage.db import default_url, require_database

    url = db or default_url(data_dir)
    if not create or not url.startswith("sqlite"):
        require_database(url)
    return url


def _client() -> Any:
    from allotment.service.client import Client

    return Client()


def _call(method: str, path: str, **kw: Any) -> Any:
    body = kw.get("json")
    for k, v in (body.items() if isinstance(body, dict) else ()):
        if isinstance(v, float) and not math.isfinite(v):  # JSON has no NaN or infinity
            _fail(InputError(k, f"must be a finite number, got {v}"))
    client = _client()
    try:
        return client.call(method, path, **kw)
    except AllotmentError as exc:
        _fail(exc)
    finally:
        client.http.close()  # one request per command; no socket left open


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
