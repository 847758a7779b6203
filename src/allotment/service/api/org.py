"""The inventory and the org tree: anyone reads them; admins replace them (a diff first,
then one transaction: ``governance.reorg`` and ``governance.inventory``; ``dry_run``
answers the diff and writes nothing) and read the org's versions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from sqlalchemy.orm import Session

from allotment.errors import InputError
from allotment.governance import inventory, reorg
from allotment.service import schemas as sch
from allotment.service.bounds import CheckedJsonRoute, Limit, Offset
from allotment.service.deps import AdminUser, CurrentUser, SessionDep, now
from allotment.storage import reorg as versions
from allotment.storage import repo

router = APIRouter(route_class=CheckedJsonRoute)


def _inventory(s: Session) -> dict[str, Any]:
    return {"nodes": repo.node_rows(s), "gpus_by_type": dict(repo.capacity(s))}


def _org(s: Session, t: float) -> dict[str, Any]:
    """The org tree with the quotas in force at ``t`` (the period's over the defaults)."""
    period = repo.effective_period(s, t)
    quotas: dict[str, dict[str, Any]] = {}
    for q in repo.quota_rows(s, "default") + (repo.quota_rows(s, period)
                                              if period != "default" else []):
        quotas.setdefault(q.org_node, {})[q.gpu_type] = q
    rows = repo.org_rows(s)
    parents = {r.parent for r in rows}
    return {"period": period, "nodes": [
        {"name": r.name, "parent": r.parent, "weight": r.weight, "is_team": r.name not in parents,
         "idle_window_s": r.idle_window_s, "quotas": list(quotas.get(r.name, {}).values())}
        for r in rows]}


@router.get("/v1/inventory", response_model=sch.InventoryPublic, tags=["org"])
def get_inventory(s: SessionDep, user: CurrentUser) -> dict[str, Any]:
    return _inventory(s)


DryRun = Annotated[bool, Query(description="answer the diff; change nothing")]


@router.put("/v1/inventory", response_model=sch.InventoryApplied, tags=["org"])
def put_inventory(body: sch.InventoryUpdate, request: Request, s: SessionDep,
                  user: AdminUser, dry_run: DryRun = False) -> dict[str, Any]:
    changes = inventory.apply(s, [repo.NodeSpec(n.name, n.gpu_type, n.gpus, n.rack, n.pod,
                                                n.state) for n in body.nodes],
                              user.name, now(request), dry_run)
    return {**_inventory(s), "changes": changes, "dry_run": dry_run}


@router.get("/v1/org", response_model=sch.OrgPublic, tags=["org"])
def get_org(request: Request, s: SessionDep, user: CurrentUser) -> dict[str, Any]:
    return _org(s, now(request))


@router.put("/v1/org", response_model=sch.OrgApplied, tags=["org"])
def put_org(body: sch.OrgUpdate, request: Request, s: SessionDep, user: AdminUser,
            dry_run: DryRun = False,
            force: Annotated[list[str] | None, Query(
                max_length=1000, description="OLD=NEW: the work of removed team OLD goes "
                "to team NEW (or a split's heir)")] = None) -> dict[str, Any]:
    """Replace the org tree: renames (``renamed_from``), merges (``merged_from``), splits
    (``split_from``), moves and removals keep their history (``governance.reorg``)."""
    for k, f in enumerate(force or []):
        if len(f) > 300 or "\x00" in f:
            raise InputError(f"force[{k}]", "at most 300 characters, no NUL")
    got = reorg.apply(s, {"org": body.org}, force or [], user.name, now(request), dry_run)
    return {**_org(s, now(request)), "changes": got.changes, "dry_run": got.dry_run,
            "version": got.version, "moved": got.moved}


@router.get("/v1/org/history", response_model=sch.Page[sch.OrgVersionPublic], tags=["org"])
def org_history(s: SessionDep, user: AdminUser, limit: Limit = 50,
                offset: Offset = 0) -> dict[str, Any]:
    """The org's versions, newest first: who applied each, its changes and moves."""
    rows, total = versions.versions(s, limit, offset)
    return {"items": rows, "total": total, "limit": limit, "offset": offset}
