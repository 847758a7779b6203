"""``GET /health``: the service answers, with its scheduler's last word on the backend."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter

from allotment.service.bounds import CheckedJsonRoute
from allotment.service.deps import SessionDep
from allotment.storage import repo

router = APIRouter(route_class=CheckedJsonRoute)


@router.get("/health", tags=["meta"])
def health(s: SessionDep) -> dict[str, Any]:
    """The service answers; ``backend`` is the scheduler loop's last word on its backend
    (``unavailable`` with Slurm's error while slurmctld cannot be reached); ``warnings``
    says what the operator should know, e.g. that jobs run on a shared Unix account."""
    backend = json.loads(repo.get_setting(s, "backend_health") or "null")
    isolation = (backend or {}).get("isolation") or {}
    warnings = [isolation["warning"]] if isolation.get("warning") else []
    return {"status": "ok", "backend": backend, "warnings": warnings}
