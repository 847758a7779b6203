"""Plans: run one, compare two, publish one.

A plan is run from a scenario (given, or built from the stored org, inventory, requests
for the period and last period's usage), stored as a draft with its full JSON report, and
published for its period: publishing writes each team's allocation as its guarantee for
that period and supersedes the period's earlier plan. Every step is an audit entry.
"""

from __future__ import annotations

import time
from datetime import date
from typing import Any

from sqlalchemy.orm import Session

from allotment.domain.period import Period
from allotment.errors import InputError
from allotment.governance import accounting
from allotment.planner.allocate import Plan, allocate
from allotment.planner.cooperation import cooperation_options
from allotment.planner.report import compare as compare_allocations
from allotment.planner.report import to_json
from allotment.planner.scenario import Scenario, parse_scenario
from allotment.storage import audit, inbox, repo
from allotment.storage import plans as stored
from allotment.storage import requests as stored_requests
from allotment.storage.models import OrgNodeRow, PlanRow


def today(now: float) -> date:
    """The date (UTC) of Unix time ``now``: a stored-data plan's default ``as_of``."""
    return date(*time.gmtime(now)[:3])


def scenario_from_db(s: Session, period: str, as_of: date, rules: dict[str, Any] | None,
                     reserve: dict[str, int] | None) -> Scenario:
    """The stored org (weights), inventory, requests for ``period`` and last period's usage."""
    month = Period.parse(period)
    rows = repo.org_rows(s)
    if not rows:
        raise InputError("org", "no org tree is set")
    children: dict[str | None, list[OrgNodeRow]] = {}
    for r in rows:
        children.setdefault(r.parent, []).append(r)

    def spec(parent: str | None) -> list[dict[str, Any]]:
        return [{"name": r.name, "weight": r.weight, "children": spec(r.name)}
                for r in children.get(parent, [])]

    reqs = [{"team": r.team, "gpu_type": r.gpu_type, "gpus": r.gpus, "min_gpus": r.min_gpus,
             "tier": r.tier, "launch": r.launch, "justification": r.justification,
             "cooperates_with": list(r.cooperates_with)}
            for r in stored_requests.page(s, period, None, 10**9, 0)[0]]
    hist = accounting.history_for(s, month.previous())
    data: dict[str, Any] = {
        "period": period, "as_of": as_of.isoformat(),
        "inventory": {t: n for t, n in repo.capacity(s).items()},
        "reserve": reserve or {}, "org": spec(None), "requests": reqs,
        "history": {t: {"used_gpu_hours": h["used_gpu_hours"],
                        "idle_gpu_hours": h["idle_gpu_hours"]}
                    for t, h in hist.items() if repo.is_team(s, t)},
    }
    if rules:
        data["rules"] = rules
    return parse_scenario(data)


def run(s: Session, sc: Scenario, actor: str, now: float) -> PlanRow:
    """Allocate ``sc`` and store the result as a draft plan."""
    plan = allocate(sc)
    result = to_json(plan, cooperation_options(sc, plan))
    row = stored.add_draft(s, sc.period, sc.model_dump(mode="json"), result, actor, now)
    audit.append(s, now, actor, "plan.drafted", f"plan:{row.id}",
                 f"draft plan for {sc.period}", {"allocated": result["allocated"]})
    return row


def run_from(s: Session, actor: str, now: float, scenario: dict[str, Any] | None = None,
             period: str | None = None, as_of: date | None = None,
             rules: dict[str, Any] | None = None,
             reserve: dict[str, int] | None = None) -> PlanRow:
    """A draft plan of a whole ``scenario``, else of ``period`` from the stored data."""
    if scenario is not None:
        sc = parse_scenario(scenario)
    elif period is not None:
        sc = scenario_from_db(s, period, as_of or today(now), rules, reserve)
    else:
        raise InputError("scenario", "give a scenario, or a period to plan from stored requests")
    return run(s, sc, actor, now)


def plan_of(row: PlanRow) -> tuple[Scenario, Plan]:
    sc = parse_scenario(row.scenario)
    return sc, allocate(sc)


def compare(a: PlanRow, b: PlanRow) -> list[dict[str, Any]]:
    """Per team and GPU type: what ``a`` and ``b`` give, the change, and both reasons."""
    return [{"team": d.team, "gpu_type": d.gpu_type, "a": d.before, "b": d.after,
             "delta": d.delta, "reason_a": d.reason_before, "reason_b": d.reason_after}
            for d in compare_allocations(plan_of(a)[1], plan_of(b)[1])]


def publish(s: Session, row: PlanRow, actor: str, now: float) -> None:
    """Make the plan's allocations the guarantees of its period (borrow and lend limits
    stay those of the org file). A plan splits the whole of each GPU type it plans, so for
    those types it is the period's only guarantee: a team it gives nothing holds 0 in the
    period, whatever its default, and a group that sets its own guarantee in the org file
    holds what the plan gives its teams. (Without this, one lead's request of 1 GPU for a
    team with no default made every plan of the period unpublishable: the defaults of the
    other teams plus the plan added up to more than the cluster.)"""
    if not Period.is_valid(row.period):
        raise InputError("period", f"plan period {row.period!r}: publish needs YYYY-MM")
    if row.status == stored.PUBLISHED:
        raise repo.Conflict(f"plan {row.id} is already published")
    teams = repo.teams_under(s, None)
    unknown = sorted({a["team"] for a in row.result["teams"].values()} - teams)
    if unknown:
        raise InputError("scenario.org", f"teams {unknown} are not teams of the stored org")
    stored.supersede(s, row.period)
    planned: dict[tuple[str, str], int] = {}
    for a in row.result["teams"].values():
        members = a.get("members") or [a["team"]]
        for team in members:
            planned[(team, a["gpu_type"])] = a["allocated"] if len(members) == 1 else 0
    parents = {r.name: r.parent for r in repo.org_rows(s)}
    for default in repo.quota_rows(s, "default"):
        key = (default.org_node, default.gpu_type)
        if key in planned or default.gpu_type not in row.result.get("capacity", {}):
            continue
        if default.org_node in teams:
            planned[key] = 0
        else:  # a group with a guarantee of its own: what the plan gives its teams
            planned[key] = sum(n for (team, t), n in planned.items() if t == default.gpu_type
                               and team in teams and _under(parents, team, default.org_node))
    repo.replace_period_quotas(s, row.period, planned, f"plan:{row.id}")
    # the published quotas must fit the inventory now (an over-full plan is refused)
    try:
        repo.load_org(s, Period.parse(row.period).start)
    except Exception as exc:
        raise InputError("plan", f"published quotas do not fit the inventory: {exc}") from None
    row.status, row.published_at = stored.PUBLISHED, now
    inbox.note(s, inbox.Change.RESHAPE)
    audit.append(s, now, actor, "plan.published", f"plan:{row.id}",
                 f"quotas for {row.period} set from plan {row.id}",
                 {"period": row.period, "guaranteed": {
                     f"{a['team']}/{a['gpu_type']}": a["allocated"]
                     for a in row.result["teams"].values()}})


def _under(parents: dict[str, str | None], node: str, ancestor: str) -> bool:
    """Whether ``ancestor`` is above ``node`` in the org tree."""
    up = parents.get(node)
    while up is not None:
        if up == ancestor:
            return True
        up = parents.get(up)
    return False
