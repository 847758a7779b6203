"""Disputes: a lead contests a plan or a preemption; someone above decides.

Assignment. A dispute goes to the first org node above its team that the filer does not
lead (a lead leads its own node only, so at most one is skipped); past the top, to the
admins (``assigned_to`` None). Unanswered ``escalation_s`` after that, it moves one level
up by the same rule, until it reaches the admins.

Who sees it. An admin sees every dispute; anyone else those about a team under its org
node, and those assigned to its node or a node below it (so the leads a dispute escalated
to see it, evaluated now).

Who resolves it. Never the user who filed it, never a lead of the team it is about; an
admin otherwise may; a lead may if it is assigned to the lead's node or to one below it.
A resolution may set the team's guarantee for the dispute's period and GPU type, if that
still fits the inventory. Every step is an audit entry.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from allotment.domain.period import Period
from allotment.errors import InputError
from allotment.storage import audit, repo
from allotment.storage import disputes as stored
from allotment.storage.disputes import Where
from allotment.storage.models import DisputeRow, JobRow, OrgNodeRow, PlanRow, User

DECISIONS = ("granted", "partially_granted", "denied")


# -- who sees it --------------------------------------------------------------------------
def visible_to(s: Session, user: User) -> Where | None:
    """The disputes ``user`` may see, as a condition for storage (None: all, for admins)."""
    if user.role == "admin":
        return None
    return stored.about_or_assigned(repo.teams_under(s, user.org_node),
                                    repo.nodes_under(s, user.org_node))


def may_see(s: Session, user: User, row: DisputeRow) -> bool:
    visible = visible_to(s, user)
    return visible is None or stored.matches(s, row.id, visible)


def page_for(s: Session, user: User, limit: int, offset: int) -> tuple[list[DisputeRow], int]:
    """The disputes ``user`` may see, oldest first, and how many in all."""
    return stored.page(s, visible_to(s, user), limit, offset)


def recent_for(s: Session, user: User, limit: int) -> list[DisputeRow]:
    """The newest ``limit`` disputes ``user`` may see, newest first."""
    return stored.recent(s, visible_to(s, user), limit)


# -- assignment -----------------------------------------------------------------------------
def parent_of(s: Session, node: str | None) -> str | None:
    if node is None:
        return None
    row = s.get(OrgNodeRow, node)
    return None if row is None else row.parent


def next_assignee(s: Session, node: str | None, filer: str) -> str | None:
    """The first org node from ``node`` upwards that the filer does not lead (None: past
    the top, the admins)."""
    user = repo.user_by_name(s, filer)
    own = user.org_node if user is not None and user.role == "lead" else None
    while node is not None and node == own:
        node = parent_of(s, node)
    return node


def may_not_resolve(s: Session, row: DisputeRow, name: str, role: str,
                    org_node: str | None) -> str | None:
    """Why this user may not resolve the dispute (the rule of the module docstring), or
    None if it may."""
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


# -- the workflow -----------------------------------------------------------------------------
def file(s: Session, team: str, filed_by: str, subject_kind: str, subject_id: str,
         wants: str, why: str, gpu_type: str | None, wanted_gpus: int | None,
         period: str | None, now: float, escalation_s: float) -> DisputeRow:
    """File a dispute about plan or preempted job ``subject_id`` and assign it."""
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
    if period is not None:
        Period.parse(period)
    to = next_assignee(s, parent_of(s, team), filed_by)
    row = stored.add(s, team=team, filed_by=filed_by, subject_kind=subject_kind,
                     subject_id=subject_id, wants=wants, why=why, gpu_type=gpu_type,
                     wanted_gpus=wanted_gpus, period=period, state=stored.OPEN,
                     assigned_to=to, level=0,
                     escalate_at=now + escalation_s if to is not None else None,
                     quota_change={}, history=[{"time": now, "step": "filed", "by": filed_by,
                                                "to": to or "admins"}],
                     created_at=now)
    audit.append(s, now, filed_by, "dispute.filed", f"dispute:{row.id}", why,
                 {"team": team, "subject": f"{subject_kind}:{subject_id}", "wants": wants,
                  "assigned_to": to or "admins"})
    return row


def resolve(s: Session, row: DisputeRow, by: str, decision: str, reason: str,
            guaranteed: int | None, now: float) -> None:
    """Decide an open dispute (the caller checked ``may_not_resolve``); with
    ``guaranteed``, set the team's guarantee for the dispute's period and GPU type."""
    if row.state != stored.OPEN:
        raise repo.Conflict(f"dispute {row.id} is already {row.state}")
    if decision not in DECISIONS:
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
            repo.load_org(s, Period.parse(row.period).start)
        except Exception as exc:
            raise InputError("guaranteed", f"{guaranteed} does not fit: {exc}") from None
        change = {"period": row.period, "gpu_type": row.gpu_type, "guaranteed": guaranteed}
    row.state, row.decision, row.decision_reason = stored.RESOLVED, decision, reason
    row.resolved_by, row.resolved_at, row.quota_change = by, now, change
    row.escalate_at = None
    row.history = [*row.history, {"time": now, "step": decision, "by": by, "reason": reason}]
    audit.append(s, now, by, "dispute.resolved", f"dispute:{row.id}", reason,
                 {"team": row.team, "decision": decision, "quota_change": change})


def escalate_due(s: Session, now: float, escalation_s: float) -> list[int]:
    """Move every open dispute whose escalation time has come one level up; their ids."""
    out = []
    for row in stored.due(s, now):
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
