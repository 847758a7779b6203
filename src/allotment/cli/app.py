"""The ``allot`` app, its consoles and the helpers every command group shares: ``_fail``
(print the error in one line, exit 2), ``load_yaml``, ``_call`` (a request to the service,
failing like ``_fail``), ``_when``, and the ``--db`` / ``--data-dir`` options of the
commands that open the database.

Each command group is a module of its own (``simulate``, ``plan``, ``service``, ``client``,
``admin``, ``audit``, ``dispute``, ``slurm``); ``cli/main.py`` imports them, which
registers their commands. They import this module, never ``main``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console

from allotment import __version__
from allotment.errors import AllotmentError, InputError

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


DbOpt = Annotated[str | None, typer.Option("--db", help="database URL (default $ALLOTMENT_DB "
                                           "or sqlite:///./allotment.db)")]
DataDir = Annotated[Path, typer.Option(
    envvar="ALLOTMENT_DATA_DIR", help="data directory: the audit key and head file, run "
    "folders and logs, simulator reports ($ALLOTMENT_DATA_DIR)")]


def _client() -> Any:
    from allotment.service.client import Client

    return Client()


def _call(method: str, path: str, **kw: Any) -> Any:
    try:
        return _client().call(method, path, **kw)
    except AllotmentError as exc:
        _fail(exc)


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
