"""Quota requests, stored by the planner's rules: a period planned from the stored requests
never fails because of one of them (``planner.scenario.parse_scenario`` is the rule book).

A request names a known team, a period (``YYYY-MM``) and a GPU type of the inventory;
``min_gpus <= gpus``; its tier is one of the planner's; the teams it cooperates with exist;
and there is one request per team, period and GPU type (a second one is a ``Conflict``
naming the first, to be changed with PATCH instead).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy.orm import Session

from allotment.domain.period import Period
from allotment.errors import InputError
from allotment.planner.scenario import Rules
from allotment.storage import repo
from allotment.storage import requests as stored
from allotment.storage.models import RequestRow


def check(s: Session, team: str, period: str, gpu_type: str, gpus: int, min_gpus: int,
          cooperates_with: list[str], tier: str = "normal",
          request_id: int | None = None) -> None:
    """The rules of the module docstring (``request_id``: the request being changed)."""
    if not repo.is_team(s, team):
        raise InputError("team", f"unknown team {team!r}")
    Period.parse(period)
    cap = repo.capacity(s)
    if gpu_type not in cap:
        raise InputError("gpu_type", f"unknown GPU type {gpu_type!r}; inventory has {sorted(cap)}")
    if min_gpus > gpus:
        raise InputError("min_gpus", f"{min_gpus} is above gpus ({gpus})")
    tiers = Rules().tiers
    if tier not in tiers:
        raise InputError("tier", f"unknown tier {tier!r}; the planner's tiers are "
                         f"{', '.join(sorted(tiers, key=lambda t: -tiers[t]))}")
    for other in cooperates_with:
        if not repo.is_team(s, other):
            raise InputError("cooperates_with", f"unknown team {other!r}")
    other_id = stored.other_for(s, team, period, gpu_type, request_id)
    if other_id is not None:
        raise repo.Conflict(f"team {team} already has request {other_id} for {period} "
                            f"{gpu_type}: change it with PATCH /v1/requests/{other_id}")


def create(s: Session, actor: str, now: float, *, team: str, period: str, gpu_type: str,
           gpus: int, min_gpus: int = 0, tier: str = "normal", launch: date | None = None,
           justification: str = "", cooperates_with: list[str] | None = None) -> RequestRow:
    """Store a new request that keeps the rules."""
    coop = list(cooperates_with or [])
    check(s, team, period, gpu_type, gpus, min_gpus, coop, tier)
    return stored.add(s, team=team, period=period, gpu_type=gpu_type, gpus=gpus,
                      min_gpus=min_gpus, tier=tier,
                      launch=launch.isoformat() if launch else None,
                      justification=justification, cooperates_with=coop,
                      created_by=actor, updated_at=now)


def update(s: Session, row: RequestRow, changes: dict[str, Any], now: float) -> RequestRow:
    """Change the fields in ``changes`` (dates stored as ISO text); the result keeps the
    rules, or nothing is written (the caller's transaction rolls back)."""
    for k, v in changes.items():
        setattr(row, k, v.isoformat() if isinstance(v, date) else v)
    check(s, row.team, row.period, row.gpu_type, row.gpus, row.min_gpus,
          list(row.cooperates_with), row.tier, row.id)
    row.updated_at = now
    return row
