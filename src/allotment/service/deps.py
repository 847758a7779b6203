"""Request dependencies: the database session (one transaction per request) and the
authenticated user, plus the authorisation rules every route applies.

The session's transaction commits before the response is sent: ``SessionDep`` is a
``yield`` dependency with ``scope="function"``, whose exit (commit, or rollback on an
error) FastAPI runs as soon as the route has returned and its answer is serialised, and
before a byte of that answer goes out. With the default scope the exit ran after the
response was sent, so a crash right after a 201 lost the acknowledged write. A commit that
fails turns the answer into an error; the client never sees a 2xx for it. One definition
covers every route (``tests/service/test_durability.py`` checks that each route's session
is function-scoped); the dashboard's pages open ``db.session()`` blocks that commit
before they return.

Roles: ``member`` submits and sees its own team's jobs and org-wide summaries; ``lead``
also edits its team's requests, files disputes, and resolves disputes assigned to its org
node; ``admin`` may do everything. A user belongs to an org node: a team, or a group
whose teams it then covers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session

from allotment.storage import repo
from allotment.storage.db import Database
from allotment.storage.models import User


def get_session(request: Request) -> Iterator[Session]:
    db: Database = request.app.state.db
    with db.session() as s:
        yield s


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def current_user(request: Request) -> User:
    """The token's user, looked up in a short transaction of its own (so the request's
    transaction, and on SQLite its write lock, starts only in the route itself)."""
    auth = request.headers.get("authorization", "")
    token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    if not token:
        token = request.cookies.get("allotment_token", "")
    user = None
    if token:
        db: Database = request.app.state.db
        with db.sessions() as s:
            user = repo.user_by_token(s, token)
            if user is not None:
                s.expunge(user)
    if user is None:
        raise HTTPException(401, "missing or invalid API token (Authorization: Bearer ...)",
                            headers={"WWW-Authenticate": "Bearer"})
    return user


CurrentUser = Annotated[User, Depends(current_user)]


def require_role(user: User, *roles: str) -> None:
    if user.role != "admin" and user.role not in roles:
        raise HTTPException(403, f"role {user.role} may not do this (needs "
                            f"{' or '.join(roles) or 'admin'})")


def teams_of(s: Session, user: User) -> set[str] | None:
    """Teams ``user`` acts for; None means every team (admin)."""
    if user.role == "admin":
        return None
    return repo.teams_under(s, user.org_node)


def require_team(s: Session, user: User, team: str) -> None:
    teams = teams_of(s, user)
    if teams is not None and team not in teams:
        raise HTTPException(403, f"user {user.name} does not belong to team {team}")


def nodes_under(s: Session, node: str | None) -> set[str]:
    """Every org node in the subtree of ``node`` (itself included)."""
    rows = repo.org_rows(s)
    out = {node} if node else set()
    grew = True
    while grew:
        grew = False
        for r in rows:
            if r.parent in out and r.name not in out:
                out.add(r.name)
                grew = True
    return out
