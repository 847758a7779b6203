"""Requests, plans, disputes and accounting: the governance half of the repository.

A plan is run from a scenario (given, or built from the stored org, inventory, requests and
last period's usage), stored as a draft with its full JSON report, and published for a
period: publishing writes each team's allocation as its guarantee for that period and
supersedes the period's earlier plan. A dispute goes to the lead of the team's parent org
node; unanswered after the escalation time it moves one level up, and past the top to the
admins. Every step is an audit entry.
"""

from __future__ import annotations

import calendar
import time as _time
from datetime import date
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from allotment.errors import InputError
from allotment.planner.allocate import Plan, allocate
from allotment.planner.cooperation import cooperation_options
from allotment.planner.report import compare, to_json
from allotment.planner.scenario import Rules, Scenario, parse_scenario
from allotment.storage import audit, inbox, repo
from allotment.storage.models import (
    DisputeRow,
    OrgNodeRow,
    PlanRow,
    QuotaRow,
    RequestRow,
    UsageRow,
    User,
)


# -- requests -------------------------------------------------------------------------
def request_page(s: Session, period: str | None, teams: set[str] | None, limit: int,
                 offset: int) -> tuple[list[RequestRow], int]:
    where = [RequestRow.period == period] if period else []
    if teams is not None:
        where.append(RequestRow.team.in_(teams))
    return repo.paginate(s, RequestRow, where, RequestRow.id, limit, offset)


def check_request(s: Session, team: str, period: str, gpu_type: str, gpus: int,
                  min_gpus: int, cooperates_with: list[str], tier: str = "normal",
                  request_id: int | None = None) -> None:
    """The planner's rules for a stored request (``planner.scenario.parse_scenario``), so
    that a period planned from the stored requests never fails because of one: a known
    team, period and GPU type, min_gpus <= gpus, one of the planner's tiers, cooperating
    teams that exist, and one request per team, period and GPU type (``request_id``: the
    request being changed)."""
    if not repo.is_team(s, team):
        raise InputError("team", f"unknown team {team!r}")
    if not repo.PERIOD_RE.match(period):
        raise InputError("period", f"{period!r}: use YYYY-MM")
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
    other_id = s.scalar(select(RequestRow.id).where(
        RequestRow.team == team, RequestRow.period == period, RequestRow.gpu_type == gpu_type,
        RequestRow.id != (request_id or 0)))
    if other_id is not None:
        raise repo.Conflict(f"team {team} already has request {other_id} for {period} "
                            f"{gpu_type}: change it with PATCH /v1/requests/{other_id}")


# -- plans ----------------------------------------------------------------------------
def history_for(s: Session, period: str) -> dict[str, dict[str, float]]:
    """Per team: GPU-hours used and idle-allocated in ``period`` (the planner's history)."""
    out: dict[str, dict[str, float]] = {}
    for row in usage_rows(s, period):
        h = out.setdefault(row.team, {"used_gpu_hours": 0.0, "idle_gpu_hours": 0.0})
        h["used_gpu_hours"] += row.used_gpu_s / 3600
        h["idle_gpu_hours"] += row.idle_gpu_s / 3600
    return out


def previous_period(period: str) -> str:
    y, m = int(period[:4]), int(period[5:7])
    return f"{y - 1}-12" if m == 1 else f"{y}-{m - 1:02d}"


def scenario_from_db(s: Session, period: str, as_of: date, rules: dict[str, Any] | None,
                     reserve: dict[str, int] | None) -> Scenario:
    """The stored org (weights), inventory, requests for ``period`` and last period's usage."""
    if not repo.PERIOD_RE.match(period):
        raise InputError("period", f"{period!r}: use YYYY-MM")
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
            for r in request_page(s, period, None, 10**9, 0)[0]]
    hist = history_for(s, previous_period(period))
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


def run_plan(s: Session, sc: Scenario, actor: str, now: float) -> PlanRow:
    plan = allocate(sc)
    result = to_json(plan, cooperation_options(sc, plan))
    row = PlanRow(period=sc.period, status="draft", scenario=sc.model_dump(mode="json"),
                  result=result, created_by=actor, created_at=now)
    s.add(row)
    s.flush()
    audit.append(s, now, actor, "plan.drafted", f"plan:{row.id}",
                 f"draft plan for {sc.period}", {"allocated": result["allocated"]})
    return row


def plan_of(row: PlanRow) -> tuple[Scenario, Plan]:
    sc = parse_scenario(row.scenario)
    return sc, allocate(sc)


def get_plan(s: Session, plan_id: int) -> PlanRow:
    row = s.get(PlanRow, plan_id)
    if row is None:
        raise repo.NotFound(f"plan {plan_id}")
    return row


def compare_plans(a: PlanRow, b: PlanRow) -> list[dict[str, Any]]:
    return [{"team": d.team, "gpu_type": d.gpu_type, "a": d.before, "b": d.after,
             "delta": d.delta, "reason_a": d.reason_before, "reason_b": d.reason_after}
            for d in compare(plan_of(a)[1], plan_of(b)[1])]


def publish(s: Session, row: PlanRow, actor: str, now: float) -> None:
    """Make the plan's allocations the guarantees of its period (borrow and lend limits
    stay those of the org file). A plan splits the whole of each GPU type it plans, so for
    those types it is the period's only guarantee: a team it gives nothing holds 0 in the
    period, whatever its default, and a group that sets its own guarantee in the org file
    holds what the plan gives its teams. (Without this, one lead's request of 1 GPU for a
    team with no default made every plan of the period unpublishable: the defaults of the
    other teams plus the plan added up to more than the cluster.)"""
    if not repo.PERIOD_RE.match(row.period):
        raise InputError("period", f"plan period {row.period!r}: publish needs YYYY-MM")
    if row.status == "published":
        raise repo.Conflict(f"plan {row.id} is already published")
    teams = repo.teams_under(s, None)
    unknown = sorted({a["team"] for a in row.result["teams"].values()} - teams)
    if unknown:
        raise InputError("scenario.org", f"teams {unknown} are not teams of the stored org")
    s.execute(delete(QuotaRow).where(QuotaRow.period == row.period))
    for old in s.execute(select(PlanRow).where(PlanRow.period == row.period,
                                               PlanRow.status == "published")).scalars():
        old.status = "superseded"
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
    for (node, gpu_type), guaranteed in sorted(planned.items()):
        base = s.get(QuotaRow, ("default", node, gpu_type))
        s.add(QuotaRow(period=row.period, org_node=node, gpu_type=gpu_type,
                       guaranteed=guaranteed,
                       borrow_limit=base.borrow_limit if base else None,
                       lend_limit=base.lend_limit if base else None,
                       source=f"plan:{row.id}"))
    s.flush()
    # the published quotas must fit the inventory now (an over-full plan is refused)
    try:
        repo.load_org(s, _period_start(row.period))
    except Exception as exc:
        raise InputError("plan", f"published quotas do not fit the inventory: {exc}") from None
    row.status, row.published_at = "published", now
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


def _period_start(period: str) -> float:
    y, m = int(period[:4]), int(period[5:7])
    return float(calendar.timegm((y, m, 1, 0, 0, 0)))


# -- disputes -------------------------------------------------------------------------
def parent_of(s: Session, node: str | None) -> str | None:
    if node is None:
        return None
    row = s.get(OrgNodeRow, node)
    return None if row is None else row.parent


def next_assignee(s: Session, node: str | None, filer: str) -> str | None:
    """The first org node from ``node`` upwards that the filer does not lead (None: past
    the top, the admins). A lead leads its own org node only, so at most one is skipped."""
    user = s.execute(select(User).where(User.name == filer)).scalar()
    own = user.org_node if user is not None and user.role == "lead" else None
    while node is not None and node == own:
        node = parent_of(s, node)
    return node


def may_not_resolve(s: Session, row: DisputeRow, name: str, role: str,
                    org_node: str | None) -> str | None:
    """Why this user may not resolve the dispute, or None if it may. Rule: never the one
    who filed it, never a lead of the team it concerns; an admin otherwise may; a lead may
    if the dispute is assigned to its org node or to one below it."""
    if name == row.filed_by:
        return (f"you filed dispute {row.id}; the next lead up "
                f"({row.assigned_to or 'the admins'}) resolves it")
    if role == "lead" and org_node == row.team:
        return f"you lead team {row.team}, which dispute {row.id} is about"
    if role == "admin":
        return None
    above: set[str] = set()
    node = row.assigned_to
    while node is not None:
        above.add(node)
        node = parent_of(s, node)
    if role != "lead" or row.assigned_to is None or org_node not in above:
        return (f"dispute {row.id} is assigned to {row.assigned_to or 'the admins'}, "
                f"not to {name}")
    return None


def file_dispute(s: Session, team: str, filed_by: str, subject_kind: str, subject_id: str,
                 wants: str, why: str, gpu_type: str | None, wanted_gpus: int | None,
                 period: str | None, now: float, escalation_s: float) -> DisputeRow:
    from allotment.storage.models import JobRow

    if not repo.is_team(s, team):
        raise InputError("team", f"unknown team {team!r}")
    # an id is ASCII digits within the INTEGER columns' range: str.isdigit alone takes
    # "²" (which int() refuses) and 64 digits (which no database column holds)
    number = (int(subject_id) if subject_id.isascii() and subject_id.isdigit()
              and len(subject_id) <= 10 else 0)
    if not 1 <= number <= 2_147_483_647:
        raise InputError("subject_id", f"{subject_id[:20]!r} is not a {subject_kind} id")
    if subject_kind == "plan":
        if s.get(PlanRow, number) is None:
            raise InputError("subject_id", f"no plan {subject_id!r}")
    elif subject_kind == "preemption":
        if s.get(JobRow, number) is None:
            raise InputError("subject_id", f"no job {subject_id!r}")
    else:
        raise InputError("subject_kind", f"{subject_kind!r}: choose plan or preemption")
    if gpu_type is not None and gpu_type not in repo.capacity(s):
        raise InputError("gpu_type", f"unknown GPU type {gpu_type!r}")
    if period is not None and not repo.PERIOD_RE.match(period):
        raise InputError("period", f"{period!r}: use YYYY-MM")
    to = next_assignee(s, parent_of(s, team), filed_by)
    row = DisputeRow(team=team, filed_by=filed_by, subject_kind=subject_kind,
                     subject_id=subject_id, wants=wants, why=why, gpu_type=gpu_type,
                     wanted_gpus=wanted_gpus, period=period, state="open", assigned_to=to,
                     level=0, escalate_at=now + escalation_s if to is not None else None,
                     quota_change={}, history=[{"time": now, "step": "filed", "by": filed_by,
                                                "to": to or "admins"}],
                     created_at=now)
    s.add(row)
    s.flush()
    audit.append(s, now, filed_by, "dispute.filed", f"dispute:{row.id}", why,
                 {"team": team, "subject": f"{subject_kind}:{subject_id}", "wants": wants,
                  "assigned_to": to or "admins"})
    return row


def get_dispute(s: Session, dispute_id: int) -> DisputeRow:
    row = s.get(DisputeRow, dispute_id)
    if row is None:
        raise repo.NotFound(f"dispute {dispute_id}")
    return row


def dispute_page(s: Session, visible: Any, limit: int, offset: int) -> tuple[list[DisputeRow], int]:
    where = [visible] if visible is not None else []
    return repo.paginate(s, DisputeRow, where, DisputeRow.id, limit, offset)


def resolve_dispute(s: Session, row: DisputeRow, by: str, decision: str, reason: str,
                    guaranteed: int | None, now: float) -> None:
    if row.state != "open":
        raise repo.Conflict(f"dispute {row.id} is already {row.state}")
    if decision not in ("granted", "partially_granted", "denied"):
        raise InputError("decision", f"{decision!r}: granted, partially_granted or denied")
    change: dict[str, Any] = {}
    if guaranteed is not None:
        if decision == "denied":
            raise InputError("guaranteed", "a denied dispute changes no quota")
        if row.gpu_type is None or row.period is None:
            raise InputError("guaranteed", "the dispute names no gpu_type and period")
        repo.set_quota(s, row.period, row.team, row.gpu_type, guaranteed,
                       f"dispute:{row.id}", by, now, f"dispute {row.id}: {reason}")
        try:
            repo.load_org(s, _period_start(row.period))
        except Exception as exc:
            raise InputError("guaranteed", f"{guaranteed} does not fit: {exc}") from None
        change = {"period": row.period, "gpu_type": row.gpu_type, "guaranteed": guaranteed}
    row.state, row.decision, row.decision_reason = "resolved", decision, reason
    row.resolved_by, row.resolved_at, row.quota_change = by, now, change
    row.escalate_at = None
    row.history = [*row.history, {"time": now, "step": decision, "by": by, "reason": reason}]
    audit.append(s, now, by, "dispute.resolved", f"dispute:{row.id}", reason,
                 {"team": row.team, "decision": decision, "quota_change": change})


def escalate_due(s: Session, now: float, escalation_s: float) -> list[int]:
    out = []
    due = s.execute(select(DisputeRow).where(DisputeRow.state == "open",
                                             DisputeRow.escalate_at.is_not(None),
                                             DisputeRow.escalate_at <= now)).scalars()
    for row in list(due):
        up = next_assignee(s, parent_of(s, row.assigned_to), row.filed_by)
        frm = row.assigned_to
        row.assigned_to, row.level = up, row.level + 1
        row.escalate_at = now + escalation_s if up is not None else None
        row.history = [*row.history, {"time": now, "step": "escalated", "from": frm,
                                      "to": up or "admins"}]
        audit.append(s, now, "scheduler", "dispute.escalated", f"dispute:{row.id}",
                     f"not answered by {frm} in time", {"from": frm, "to": up or "admins",
                                                         "level": row.level})
        out.append(row.id)
    return out


# -- accounting -----------------------------------------------------------------------
def period_bounds(period: str) -> tuple[int, int]:
    if not repo.PERIOD_RE.match(period):
        raise InputError("period", f"{period!r}: use YYYY-MM")
    y, m = int(period[:4]), int(period[5:7])
    start = calendar.timegm((y, m, 1, 0, 0, 0))
    end = calendar.timegm((y + (m == 12), 1 if m == 12 else m + 1, 1, 0, 0, 0))
    return start, end


def usage_rows(s: Session, period: str) -> list[UsageRow]:
    start, end = period_bounds(period)
    return list(s.execute(select(UsageRow).where(UsageRow.hour >= start, UsageRow.hour < end))
                .scalars())


def usage_row(s: Session, team: str, gpu_type: str, hour: int) -> UsageRow:
    """The usage row of a team, GPU type and hour, made (all zero) if there is none."""
    row = s.get(UsageRow, (team, gpu_type, hour))
    if row is None:
        row = UsageRow(team=team, gpu_type=gpu_type, hour=hour, used_gpu_s=0.0,
                       borrowed_gpu_s=0.0, lent_gpu_s=0.0, idle_gpu_s=0.0,
                       guaranteed_gpu_s=0.0, preemptions=0)
        s.add(row)
    return row


def hoarding_score(idle_gpu_hours: float, used_gpu_hours: float) -> float:
    """Idle-allocated over used GPU-time: 0 when every held GPU worked."""
    return round(idle_gpu_hours / used_gpu_hours, 4) if used_gpu_hours > 0 else 0.0


def usage_summary(s: Session, period: str) -> list[dict[str, Any]]:
    """Per team and GPU type: GPU-hours used, borrowed, lent, idle-allocated, guaranteed,
    and the hoarding score = idle-allocated / used GPU-hours (0 = every held GPU worked)."""
    acc: dict[tuple[str, str], list[float]] = {}
    preemptions: dict[tuple[str, str], int] = {}
    for r in usage_rows(s, period):
        a = acc.setdefault((r.team, r.gpu_type), [0.0] * 5)
        for k, v in enumerate((r.used_gpu_s, r.borrowed_gpu_s, r.lent_gpu_s, r.idle_gpu_s,
                               r.guaranteed_gpu_s)):
            a[k] += v
        preemptions[(r.team, r.gpu_type)] = (preemptions.get((r.team, r.gpu_type), 0)
                                             + (r.preemptions or 0))
    out = []
    for (team, t), a in sorted(acc.items()):
        used, borrowed, lent, idle, guaranteed = (x / 3600 for x in a)
        out.append({"team": team, "gpu_type": t, "period": period,
                    "preemptions": preemptions[(team, t)],
                    "used_gpu_hours": round(used, 4), "borrowed_gpu_hours": round(borrowed, 4),
                    "lent_gpu_hours": round(lent, 4), "idle_allocated_gpu_hours": round(idle, 4),
                    "guaranteed_gpu_hours": round(guaranteed, 4),
                    "hoarding_score": hoarding_score(idle, used)})
    return out


def today(now: float) -> date:
    return date(*_time.gmtime(now)[:3])

