"""The ``allot`` command line: the app of ``cli/app.py`` with every command group.

Importing a group's module registers its commands; this order is the order of
``allot --help`` (commands: version, simulate, plan, serve, scheduler, up, login, submit,
jobs, why, cancel, usage, reserve; groups: reservations, org, inventory, admin, audit,
dispute, slurm). The modules import
``cli/app.py``, never this one, so there is no import cycle."""

from __future__ import annotations

import sys

from allotment.cli.app import app, err_console
from allotment.errors import AllotmentError

# the order of registration is the order of the help
# isort: off
from allotment.cli import simulate, plan, service, client, reservations  # noqa: F401
from allotment.cli import org, admin, audit, dispute, slurm, trace  # noqa: F401
# isort: on


def main() -> None:  # pragma: no cover - console entry
    try:
        app()
    except AllotmentError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        sys.exit(2)


__all__ = ["app", "main"]
