"""``allot admin``: administer the database directly (users, tokens), without the service."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from allotment.cli.app import DataDir, DbOpt, _fail, _when, app, console
from allotment.errors import AllotmentError

admin_app = typer.Typer(no_args_is_help=True, help="Administer the database directly.")
app.add_typer(admin_app, name="admin")


@admin_app.command("create-user")
def create_user(
    name: Annotated[str, typer.Argument(help="user name")],
    role: Annotated[str, typer.Option(help="member, lead or admin")] = "admin",
    team: Annotated[str | None, typer.Option(help="team or org node (not for admins)")] = None,
    db: DbOpt = None,
    data_dir: DataDir = Path(".allotment"),
) -> None:
    """Create a user (the first admin, typically) and print its API token once."""
    from allotment.storage import repo

    def act(s: Any) -> str:
        return repo.create_user(s, name, role, team, time.time(), "cli")[1]

    token = _admin(db, data_dir, act)
    console.print(f"created {role} {name}; API token (shown once):")
    print(token)


def _admin(db: str | None, data_dir: Path, act: Any) -> Any:
    """Run ``act(session)`` in one transaction on the database; errors end the command."""
    from allotment.service.private import private_database
    from allotment.storage.db import Database

    try:
        database = Database(db, data_dir)
        private_database(database.url)
        database.upgrade()
        database.check_audit_key()
        with database.session() as s:
            return act(s)
    except AllotmentError as exc:
        _fail(exc)


@admin_app.command("list-tokens")
def list_tokens(name: Annotated[str, typer.Argument(help="user name")], db: DbOpt = None,
                data_dir: DataDir = Path(".allotment")) -> None:
    """A user's API tokens: id, when made, whether revoked (never the token itself)."""
    from allotment.storage import repo

    def act(s: Any) -> list[tuple[int, float, float | None]]:
        user = repo.user_named(s, name)
        return [(t.id, t.created_at, t.revoked_at) for t in repo.tokens_of(s, user)]

    t = Table(title=f"tokens of {name}")
    for col in ("id", "created", "revoked"):
        t.add_column(col)
    for tid, created, revoked in _admin(db, data_dir, act):
        t.add_row(str(tid), _when(created), _when(revoked))
    console.print(t)


@admin_app.command("issue-token")
def issue_token(name: Annotated[str, typer.Argument(help="user name")], db: DbOpt = None,
                data_dir: DataDir = Path(".allotment")) -> None:
    """Give a user a new API token and print it once."""
    from allotment.storage import repo

    def act(s: Any) -> tuple[int, str]:
        row, token = repo.issue_token(s, repo.user_named(s, name), time.time(), "cli")
        return row.id, token

    tid, token = _admin(db, data_dir, act)
    console.print(f"token {tid} of {name} (shown once):")
    print(token)


@admin_app.command("revoke-token")
def revoke_token(
    token_id: Annotated[int | None, typer.Argument(help="token id (allot admin list-tokens)")]
    = None,
    user: Annotated[str | None, typer.Option(help="revoke every token of this user")] = None,
    db: DbOpt = None,
    data_dir: DataDir = Path(".allotment"),
) -> None:
    """Revoke a token (or all of a user's): refused at once, its dashboard sessions end."""
    from allotment.storage import repo

    if (token_id is None) == (user is None):
        _fail(AllotmentError("revoke-token: give a token id or --user NAME"))

    def act(s: Any) -> list[int]:
        now = time.time()
        ids = [token_id] if token_id is not None else [
            t.id for t in repo.tokens_of(s, repo.user_named(s, user or ""))
            if t.revoked_at is None]
        for tid in ids:
            repo.revoke_token(s, tid, "cli", now)
        return [int(t) for t in ids if t is not None]

    ids = _admin(db, data_dir, act)
    console.print(f"revoked token(s) {', '.join(map(str, ids)) or '(none left)'}")


@admin_app.command("disable-user")
def disable_user(name: Annotated[str, typer.Argument(help="user name")], db: DbOpt = None,
                 data_dir: DataDir = Path(".allotment")) -> None:
    """Disable a user: its tokens and dashboard sessions are refused at once."""
    from allotment.storage import repo

    _admin(db, data_dir, lambda s: repo.set_disabled(s, repo.user_named(s, name), True, "cli",
                                                     time.time()))
    console.print(f"user {name} disabled")


@admin_app.command("enable-user")
def enable_user(name: Annotated[str, typer.Argument(help="user name")], db: DbOpt = None,
                data_dir: DataDir = Path(".allotment")) -> None:
    """Enable a disabled user again (its tokens that were not revoked work again)."""
    from allotment.storage import repo

    _admin(db, data_dir, lambda s: repo.set_disabled(s, repo.user_named(s, name), False,
                                                     "cli", time.time()))
    console.print(f"user {name} enabled")
