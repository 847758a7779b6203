"""The inventory and the org tree: anyone reads them, admins replace them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session

from allotment.service import schemas as sch
from allotment.service.bounds import CheckedJsonRoute
from allotment.service.deps import AdminUser, CurrentUser, SessionDep, now
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


@router.put("/v1/inventory", response_model=sch.InventoryPublic, tags=["org"])
def put_inventory(body: sch.InventoryUpdate, request: Request, s: SessionDep,
                  user: AdminUser) -> dict[str, Any]:
    repo.set_inventory(s, [repo.NodeSpec(n.name, n.gpu_type, n.gpus, n.rack, n.pod, n.state)
                           for n in body.nodes], user.name, now(request))
    return _inventory(s)


@router.get("/v1/org", response_model=sch.OrgPublic, tags=["org"])
def get_org(request: Request, s: SessionDep, user: CurrentUser) -> dict[str, Any]:
    return _org(s, now(request))


@router.put("/v1/org", response_model=sch.OrgPublic, tags=["org"])
def put_org(body: sch.OrgUpdate, request: Request, s: SessionDep,
            user: AdminUser) -> dict[str, Any]:
    repo.set_org(s, {"org": body.org}, user.name, now(request))
    return _org(s, now(request))
