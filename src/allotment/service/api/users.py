"""Users and their API tokens: ``/v1/me`` for anyone; the rest for admins."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from allotment.service import schemas as sch
from allotment.service.bounds import CheckedJsonRoute, Id, Limit, Offset
from allotment.service.deps import AdminUser, CurrentUser, SessionDep, now
from allotment.storage import repo
from allotment.storage.models import User

router = APIRouter(route_class=CheckedJsonRoute)


@router.get("/v1/me", response_model=sch.UserPublic, tags=["users"])
def me(user: CurrentUser) -> User:
    return user


@router.post("/v1/users", response_model=sch.UserCreated, status_code=201, tags=["users"])
def create_user(body: sch.UserCreate, request: Request, s: SessionDep,
                user: AdminUser) -> dict[str, Any]:
    new, token = repo.create_user(s, body.name, body.role, body.team, now(request), user.name)
    return {"id": new.id, "name": new.name, "role": new.role, "org_node": new.org_node,
            "token": token}


@router.get("/v1/users", response_model=sch.Page[sch.UserPublic], tags=["users"])
def list_users(s: SessionDep, user: AdminUser, limit: Limit = 100,
               offset: Offset = 0) -> dict[str, Any]:
    rows, total = repo.paginate(s, User, [], User.id, limit, offset)
    return {"items": rows, "total": total, "limit": limit, "offset": offset}


@router.get("/v1/users/{user_id}/tokens", response_model=list[sch.TokenPublic], tags=["users"])
def list_tokens(user_id: Id, s: SessionDep, user: AdminUser) -> Any:
    """A user's API tokens: ids, creation and revocation times (never the token)."""
    return repo.tokens_of(s, repo.get_user(s, user_id))


@router.post("/v1/users/{user_id}/tokens", response_model=sch.TokenCreated, status_code=201,
             tags=["users"])
def issue_token(user_id: Id, request: Request, s: SessionDep,
                user: AdminUser) -> dict[str, Any]:
    """A new API token for the user, shown once."""
    row, token = repo.issue_token(s, repo.get_user(s, user_id), now(request), user.name)
    return {"id": row.id, "user_id": row.user_id, "created_at": row.created_at,
            "revoked_at": row.revoked_at, "token": token}


@router.delete("/v1/tokens/{token_id}", status_code=204, tags=["users"])
def revoke_token(token_id: Id, request: Request, s: SessionDep, user: AdminUser) -> None:
    """Revoke a token: refused from now on, with the dashboard sessions opened with it."""
    repo.revoke_token(s, token_id, user.name, now(request))


@router.post("/v1/users/{user_id}/disable", response_model=sch.UserPublic, tags=["users"])
def disable_user(user_id: Id, request: Request, s: SessionDep, user: AdminUser) -> User:
    """Refuse every token and session of the user from now on (its sessions end)."""
    return repo.set_disabled(s, repo.get_user(s, user_id), True, user.name, now(request))


@router.post("/v1/users/{user_id}/enable", response_model=sch.UserPublic, tags=["users"])
def enable_user(user_id: Id, request: Request, s: SessionDep, user: AdminUser) -> User:
    """Let a disabled user in again (its tokens that were not revoked work again)."""
    return repo.set_disabled(s, repo.get_user(s, user_id), False, user.name, now(request))
