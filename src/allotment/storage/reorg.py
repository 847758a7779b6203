"""Rows of a reorganisation: the org's versions, and the re-keying of every table that keys
rows by org node name (``governance.reorg`` runs these in one transaction, in the order
of its ``REKEY`` steps).

``Moves`` says where each old node's rows go: ``to`` maps an old name to its new one (a
rename, a merge, a split's heir, a removal forced onto another team). Rows of two old
names that land on one key are added together (usage, period quotas, requests). Nothing
here decides: the workflow has checked the moves before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from allotment.storage.models import (
    AuditHead,
    BudgetRow,
    DisputeRow,
    JobRow,
    OrgVersionRow,
    QuotaRow,
    RequestRow,
    UsageRow,
    User,
)

# the scheduler loop's persisted memory (``service.loop.live``) and the org version its
# state was built from when it was written
MEMORY_KEY = "scheduler_memory"
MEMORY_VERSION_KEY = "scheduler_memory_org_version"


@dataclass(frozen=True, slots=True)
class Moves:
    """Where the rows of old org nodes go.

    - ``to``: old name -> new name (never an identity);
    - ``removed``: old nodes that are gone with nothing in their place: their period quotas
      and requests are deleted, open disputes assigned to them go to the admins; their
      jobs and usage stay under the old name (history);
    - ``quota_dropped``: old nodes in ``to`` whose period quotas are not carried over (a
      split's heir or a ``--force`` target gets the new org file's guarantee, not the old
      team's)."""

    to: Mapping[str, str] = field(default_factory=dict)
    removed: frozenset[str] = frozenset()
    quota_dropped: frozenset[str] = frozenset()

    def of(self, name: str) -> str:
        return self.to.get(name, name)


# -- versions -------------------------------------------------------------------------
def lock(s: Session) -> None:
    """Wait for, then hold until commit, the audit chain's head row (every audited write
    takes it): a reorganisation reads the org after any other one has committed."""
    s.execute(select(AuditHead.id).where(AuditHead.id == 1).with_for_update())


def record_version(s: Session, org: dict[str, Any], teams: int, changes: list[Any],
                   moves: Mapping[str, str], actor: str, now: float) -> OrgVersionRow:
    row = OrgVersionRow(created_at=now, actor=actor, teams=teams, org=org,
                        changes=list(changes), moves=dict(moves))
    s.add(row)
    s.flush()
    return row


def current_version(s: Session) -> int:
    """The newest org version's id (0 before the first)."""
    return int(s.execute(select(func.max(OrgVersionRow.id))).scalar() or 0)


def versions(s: Session, limit: int, offset: int) -> tuple[list[OrgVersionRow], int]:
    total = int(s.execute(select(func.count()).select_from(OrgVersionRow)).scalar_one())
    rows = s.execute(select(OrgVersionRow).order_by(OrgVersionRow.id.desc())
                     .limit(limit).offset(offset)).scalars()
    return list(rows), total


def moves_since(s: Session, version: int) -> list[dict[str, str]]:
    """The ``moves`` of every version after ``version``, oldest first."""
    rows = s.execute(select(OrgVersionRow.moves).where(OrgVersionRow.id > version)
                     .order_by(OrgVersionRow.id)).scalars()
    return [{str(k): str(v) for k, v in (m or {}).items()} for m in rows]


# -- what is keyed by team ------------------------------------------------------------
def work_by_team(s: Session, states: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    """Team -> (jobs, GPUs) of its jobs in ``states``."""
    rows = s.execute(select(JobRow.team, func.count(), func.sum(JobRow.gpus))
                     .where(JobRow.state.in_(states)).group_by(JobRow.team)).all()
    return {t: (int(n), int(g or 0)) for t, n, g in rows}


def users_by_node(s: Session) -> dict[str, int]:
    rows = s.execute(select(User.org_node, func.count()).where(User.org_node.is_not(None))
                     .group_by(User.org_node)).all()
    return {str(n): int(c) for n, c in rows}


def period_quota_rows(s: Session) -> list[QuotaRow]:
    return list(s.execute(select(QuotaRow).where(QuotaRow.period != "default")
                          .order_by(QuotaRow.period, QuotaRow.org_node,
                                    QuotaRow.gpu_type)).scalars())


QuotaKey = tuple[str, str, str]  # period, org node, GPU type
QuotaValue = tuple[int, int | None, int | None, str]  # guaranteed, borrow, lend, source


def _add_limit(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a + b


def period_quotas_after(rows: list[QuotaRow], m: Moves) -> dict[QuotaKey, QuotaValue]:
    """The period quotas once re-keyed (pure): each follows its node's move; two that land
    on one key add up (guarantees, and limits unless one has none: no limit then); those
    of removed nodes and of ``quota_dropped`` nodes are gone."""
    out: dict[QuotaKey, QuotaValue] = {}
    for r in rows:
        if r.org_node in m.removed or r.org_node in m.quota_dropped:
            continue
        key = (r.period, m.of(r.org_node), r.gpu_type)
        got = out.get(key)
        if got is None:
            out[key] = (r.guaranteed, r.borrow_limit, r.lend_limit, r.source)
        else:
            out[key] = (got[0] + r.guaranteed, _add_limit(got[1], r.borrow_limit),
                        _add_limit(got[2], r.lend_limit), "reorg")
    return out


def rekey_jobs(s: Session, m: Moves) -> int:
    """Every job of a moved team, finished ones too (``allot jobs`` and usage agree)."""
    n = 0
    for old, new in sorted(m.to.items()):
        n += s.execute(update(JobRow).where(JobRow.team == old).values(team=new)).rowcount  # type: ignore[attr-defined]
    return n


def rekey_usage(s: Session, m: Moves) -> int:
    """Usage rows (team, GPU type, hour): moved, and added up where two teams merge."""
    if not m.to:
        return 0
    old_rows = list(s.execute(select(UsageRow).where(UsageRow.team.in_(sorted(m.to))))
                    .scalars())
    sums: dict[tuple[str, str, int], list[float]] = {}
    for r in old_rows:
        acc = sums.setdefault((m.of(r.team), r.gpu_type, r.hour), [0.0] * 6)
        for k, v in enumerate((r.used_gpu_s, r.borrowed_gpu_s, r.lent_gpu_s, r.idle_gpu_s,
                               r.guaranteed_gpu_s, r.preemptions)):
            acc[k] += v
    for r in old_rows:
        s.expunge(r)
    s.execute(delete(UsageRow).where(UsageRow.team.in_(sorted(m.to))))
    for (team, gpu_type, hour), acc in sorted(sums.items()):
        row = s.get(UsageRow, (team, gpu_type, hour))
        if row is None:
            row = UsageRow(team=team, gpu_type=gpu_type, hour=hour, used_gpu_s=0.0,
                           borrowed_gpu_s=0.0, lent_gpu_s=0.0, idle_gpu_s=0.0,
                           guaranteed_gpu_s=0.0, preemptions=0)
            s.add(row)
        row.used_gpu_s += acc[0]
        row.borrowed_gpu_s += acc[1]
        row.lent_gpu_s += acc[2]
        row.idle_gpu_s += acc[3]
        row.guaranteed_gpu_s += acc[4]
        row.preemptions += int(acc[5])
    s.flush()
    return len(old_rows)


def rekey_period_quotas(s: Session, m: Moves) -> int:
    """The quotas of every published period (``default`` is the org file's, replaced by the
    new file), as ``period_quotas_after`` says."""
    rows = period_quota_rows(s)
    touched = [r for r in rows if r.org_node in m.to or r.org_node in m.removed]
    if not touched:
        return 0
    after = period_quotas_after(rows, m)
    for r in rows:
        s.expunge(r)
    s.execute(delete(QuotaRow).where(QuotaRow.period != "default"))
    for (period, node, gpu_type), (g, b, lend, source) in sorted(after.items()):
        s.add(QuotaRow(period=period, org_node=node, gpu_type=gpu_type, guaranteed=g,
                       borrow_limit=b, lend_limit=lend, source=source))
    s.flush()
    return len(touched)


def rekey_budgets(s: Session, m: Moves) -> int:
    """GPU-hour budgets of every period: moved with their team (two teams merged into one
    add up per period and GPU type); a removed team's are deleted."""
    rows = list(s.execute(select(BudgetRow)).scalars())
    touched = [r for r in rows if r.team in m.to or r.team in m.removed]
    if not touched:
        return 0
    after: dict[tuple[str, str, str], tuple[float, str]] = {}
    for r in rows:
        if r.team in m.removed:
            continue
        key = (r.period, m.of(r.team), r.gpu_type)
        hours, source = after.get(key, (0.0, r.source))
        after[key] = (hours + r.gpu_hours, source)
    for r in rows:
        s.expunge(r)
    s.execute(delete(BudgetRow))
    for (period, team, gpu_type), (hours, source) in sorted(after.items()):
        s.add(BudgetRow(period=period, team=team, gpu_type=gpu_type, gpu_hours=hours,
                        source=source))
    s.flush()
    return len(touched)


def rekey_ledger(raw: dict[str, Any], m: Moves) -> dict[str, Any]:
    """The scheduler's budget and credit ledger (``SchedulerMemory.ledger``, JSON) with its
    teams moved: GPU-hours used and credit add up on a merge, the earliest time over budget
    and the highest warning sent are kept; a removed team's entries are dropped."""
    if not raw:
        return raw

    def moved(name: str, pick: Any) -> list[list[object]]:
        out: dict[tuple[str, str], Any] = {}
        for team, t, v in raw.get(name) or []:
            if team in m.removed:
                continue
            key = (m.of(str(team)), str(t))
            out[key] = v if key not in out else pick(out[key], v)
        return [[team, t, v] for (team, t), v in sorted(out.items())]

    credit: dict[str, float] = {}
    for team, v in (raw.get("credit") or {}).items():
        if team not in m.removed:
            credit[m.of(team)] = credit.get(m.of(team), 0.0) + float(v)
    return {**raw, "used": moved("used", lambda a, b: a + b),
            "over_since": moved("over_since", min), "warned": moved("warned", max),
            "credit": dict(sorted(credit.items()))}


def rekey_requests(s: Session, m: Moves) -> int:
    """Requests: moved (two for one team, period and GPU type add up into the older one);
    a removed team's are deleted; ``cooperates_with`` names follow too."""
    n = 0
    if m.removed:
        n += s.execute(delete(RequestRow).where(RequestRow.team.in_(sorted(m.removed)))
                       ).rowcount  # type: ignore[attr-defined]
    rows = list(s.execute(select(RequestRow).order_by(RequestRow.id)).scalars())
    kept: dict[tuple[str, str, str], RequestRow] = {}
    for r in rows:
        if r.team not in m.to:
            kept[(r.team, r.period, r.gpu_type)] = r
    for r in rows:
        coop = [m.of(t) for t in r.cooperates_with or [] if t not in m.removed]
        if r.team not in m.to:
            if coop != list(r.cooperates_with or []):
                r.cooperates_with = sorted(set(coop) - {r.team})
            continue
        n += 1
        new = m.of(r.team)
        other = kept.get((new, r.period, r.gpu_type))
        if other is None:
            r.team = new
            r.cooperates_with = sorted(set(coop) - {new})
            kept[(new, r.period, r.gpu_type)] = r
            s.flush()
        else:
            other.gpus += r.gpus
            other.min_gpus += r.min_gpus
            other.justification = "; ".join(x for x in (other.justification,
                                                        r.justification) if x)[:10_000]
            other.cooperates_with = sorted((set(other.cooperates_with or []) | set(coop))
                                           - {new})
            s.delete(r)
            s.flush()
    return n


def rekey_disputes(s: Session, m: Moves) -> int:
    """Disputes follow their team; one assigned to a moved node follows it, one assigned to
    a removed node goes to the admins."""
    n = 0
    for old, new in sorted(m.to.items()):
        n += s.execute(update(DisputeRow).where(DisputeRow.team == old).values(team=new)
                       ).rowcount  # type: ignore[attr-defined]
        n += s.execute(update(DisputeRow).where(DisputeRow.assigned_to == old)
                       .values(assigned_to=new)).rowcount  # type: ignore[attr-defined]
    if m.removed:
        n += s.execute(update(DisputeRow).where(DisputeRow.assigned_to.in_(sorted(m.removed)))
                       .values(assigned_to=None)).rowcount  # type: ignore[attr-defined]
    return n


def rekey_users(s: Session, m: Moves) -> int:
    """Users of a moved node belong to its new node."""
    n = 0
    for old, new in sorted(m.to.items()):
        n += s.execute(update(User).where(User.org_node == old).values(org_node=new)).rowcount  # type: ignore[attr-defined]
    return n
