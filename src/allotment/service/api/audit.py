"""The audit log: the entries a reader may see, and the chain's verification
(``governance.auditing``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from allotment.governance import auditing
from allotment.service import schemas as sch
from allotment.service.bounds import NO_NUL, CheckedJsonRoute, Limit, Offset
from allotment.service.deps import CurrentUser, SessionDep

router = APIRouter(route_class=CheckedJsonRoute)


@router.get("/v1/audit", response_model=sch.Page[sch.AuditPublic], tags=["audit"])
def list_audit(s: SessionDep, user: CurrentUser, limit: Limit = 100, offset: Offset = 0,
               action: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
               subject: Annotated[str | None, Query(max_length=128, pattern=NO_NUL)] = None,
               ) -> dict[str, Any]:
    """Entries the user may read (admins: all; others: their teams', the disputes they may
    see, and the org-wide ones), newest first."""
    rows, total = auditing.page(s, user, action, subject, limit, offset)
    return {"items": rows, "total": total, "limit": limit, "offset": offset}


@router.get("/v1/audit/verify", response_model=sch.AuditVerifyPublic, tags=["audit"])
def verify_audit(s: SessionDep, user: CurrentUser) -> Any:
    return auditing.check(s, user)
