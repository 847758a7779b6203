"""Repository functions for users, tokens, the org tree, quotas, inventory and settings.

The API, ``governance/`` and the scheduler loop call these; they never build queries
themselves. Every function takes the caller's session (one transaction) and raises
``InputError`` naming the field for a user mistake, ``NotFound``/``Conflict`` for a missing
or busy object.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.orm import Session

from allotment.domain.cluster import Cluster, GpuType, Node
from allotment.domain.jobstate import ACTIVE, JobState
from allotment.domain.org import OrgNode, OrgTree, Quota
from allotment.domain.orgspec import idle_windows, org_from_data
from allotment.domain.period import Period
from allotment.errors import AllotmentError, InputError
from allotment.storage import audit, batch, inbox, reorg
from allotment.storage.models import (
    ApiToken,
    JobRow,
    NodeRow,
    OrgNodeRow,
    QuotaRow,
    Setting,
    UiSession,
    User,
)

ROLES = ("member", "lead", "admin")


class NotFound(AllotmentError):
    def __init__(self, what: str) -> None:
        super().__init__(f"{what} not found")
        self.what = what


class Conflict(AllotmentError):
    """The object exists but is in a state that forbids the change."""


def paginate(s: Session, model: Any, where: Sequence[Any], order: Any, limit: int,
             offset: int) -> tuple[list[Any], int]:
    """Rows of ``model`` matching every condition in ``where``, in ``order``, one page of
    them, and how many match in all (for ``Page.total``)."""
    q, c = select(model), select(func.count()).select_from(model)
    for cond in where:
        q, c = q.where(cond), c.where(cond)
    total = int(s.execute(c).scalar_one())
    return list(s.execute(q.order_by(order).limit(limit).offset(offset)).scalars()), total


# -- users and tokens -----------------------------------------------------------------
def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_user(s: Session, name: str, role: str, org_node: str | None, now: float,
                actor: str = "system") -> tuple[User, str]:
    """Create a user and its first token; the token is returned once and stored hashed."""
    if not re.fullmatch(r"[A-Za-z0-9_.@-]{1,64}", name):
        raise InputError("name", f"{name!r}: 1-64 letters, digits or _.@-")
    if role not in ROLES:
        raise InputError("role", f"{role!r}: choose from {', '.join(ROLES)}")
    if role != "admin" and org_node is None:
        raise InputError("team", f"a {role} belongs to a team or org node")
    if org_node is not None and s.get(OrgNodeRow, org_node) is None:
        raise InputError("team", f"unknown org node {org_node!r}")
    if s.execute(select(User).where(User.name == name)).scalar() is not None:
        raise InputError("name", f"user {name!r} already exists")
    user = User(name=name, role=role, org_node=org_node, created_at=now)
    s.add(user)
    s.flush()
    token = new_token(s, user, now)
    audit.append(s, now, actor, "user.created", f"user:{name}",
                 f"{role} of {org_node or 'the org'}", {"role": role, "org_node": org_node})
    return user, token


def new_token(s: Session, user: User, now: float) -> str:
    return issue_token(s, user, now)[1]


def issue_token(s: Session, user: User, now: float, actor: str | None = None
                ) -> tuple[ApiToken, str]:
    """A new API token of ``user`` (returned once, stored hashed); audited when an
    ``actor`` issues it to an existing user."""
    token = "alt_" + secrets.token_urlsafe(32)
    row = ApiToken(user_id=user.id, token_hash=hash_token(token), created_at=now)
    s.add(row)
    s.flush()
    if actor is not None:
        audit.append(s, now, actor, "token.issued", f"user:{user.name}",
                     f"token {row.id} issued", {"token_id": row.id})
    return row, token


# The queries every API request or every submit makes are built once: building a
# statement costs more than running it (benchmarks/submit_load.py).
_USER_BY_TOKEN = select(User).join(ApiToken, ApiToken.user_id == User.id).where(
    ApiToken.token_hash == bindparam("token_hash"), ApiToken.revoked_at.is_(None),
    User.disabled_at.is_(None))


def user_by_token(s: Session, token: str) -> User | None:
    """The user of an API token that is not revoked, if the user is not disabled (one
    query: every API request asks)."""
    return s.execute(_USER_BY_TOKEN, {"token_hash": hash_token(token)}).scalar()


def get_user(s: Session, user_id: int) -> User:
    user = s.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id}")
    return user


def user_by_name(s: Session, name: str) -> User | None:
    return s.execute(select(User).where(User.name == name)).scalar()


def user_named(s: Session, name: str) -> User:
    user = user_by_name(s, name)
    if user is None:
        raise NotFound(f"user {name!r}")
    return user


def tokens_of(s: Session, user: User) -> list[ApiToken]:
    return list(s.execute(select(ApiToken).where(ApiToken.user_id == user.id)
                          .order_by(ApiToken.id)).scalars())


def revoke_token(s: Session, token_id: int, actor: str, now: float) -> ApiToken:
    """Revoke a token: refused from now on, and the dashboard sessions opened with it end.
    Revoking a revoked token changes nothing."""
    row = s.get(ApiToken, token_id)
    if row is None:
        raise NotFound(f"token {token_id}")
    if row.revoked_at is None:
        row.revoked_at = now
        s.execute(delete(UiSession).where(UiSession.token_id == row.id))
        user = s.get(User, row.user_id)
        audit.append(s, now, actor, "token.revoked", f"user:{user.name if user else '?'}",
                     f"token {row.id} revoked", {"token_id": row.id})
        s.flush()
    return row


def set_disabled(s: Session, user: User, disabled: bool, actor: str, now: float) -> User:
    """Disable a user (every token and session refused from now on; its sessions end) or
    enable it again (its tokens that were not revoked work again). The last enabled admin
    cannot be disabled."""
    if disabled and user.disabled_at is None:
        if user.role == "admin" and s.execute(
                select(func.count()).select_from(User).where(
                    User.role == "admin", User.disabled_at.is_(None))).scalar_one() <= 1:
            raise Conflict(f"user {user.name} is the last enabled admin; create another "
                           "admin first")
        user.disabled_at = now
        s.execute(delete(UiSession).where(UiSession.user_id == user.id))
        audit.append(s, now, actor, "user.disabled", f"user:{user.name}", "disabled", {})
    elif not disabled and user.disabled_at is not None:
        user.disabled_at = None
        audit.append(s, now, actor, "user.enabled", f"user:{user.name}", "enabled", {})
    s.flush()
    return user


# -- dashboard sessions -----------------------------------------------------------------
def open_session(s: Session, token: str, now: float, ttl_s: float) -> tuple[User, str] | None:
    """A dashboard session for a valid API token: a new random id (returned once, stored
    as its SHA-256) that expires after ``ttl_s``. None if the token is not valid."""
    row = s.execute(select(ApiToken).where(ApiToken.token_hash == hash_token(token),
                                           ApiToken.revoked_at.is_(None))).scalar()
    user = None if row is None else s.get(User, row.user_id)
    if row is None or user is None or user.disabled_at is not None:
        return None
    s.execute(delete(UiSession).where(UiSession.expires_at <= now))
    session_id = "als_" + secrets.token_urlsafe(32)
    s.add(UiSession(session_hash=hash_token(session_id), user_id=user.id, token_id=row.id,
                    created_at=now, expires_at=now + ttl_s))
    s.flush()
    return user, session_id


def user_by_session(s: Session, session_id: str, now: float) -> User | None:
    """The user of a dashboard session that has not expired, whose token is not revoked
    and whose user is not disabled."""
    got = s.execute(select(User).join(UiSession, UiSession.user_id == User.id)
                    .join(ApiToken, ApiToken.id == UiSession.token_id)
                    .where(UiSession.session_hash == hash_token(session_id),
                           UiSession.expires_at > now, ApiToken.revoked_at.is_(None),
                           User.disabled_at.is_(None))).scalar()
    return got


def end_session(s: Session, session_id: str) -> None:
    s.execute(delete(UiSession).where(UiSession.session_hash == hash_token(session_id)))


def count_users(s: Session) -> int:
    return int(s.execute(select(func.count()).select_from(User)).scalar_one())


# -- settings -------------------------------------------------------------------------
def get_setting(s: Session, key: str, default: str | None = None) -> str | None:
    row = s.get(Setting, key)
    return default if row is None else row.value


def install_id(s: Session) -> str:
    """A random id of this database, made once: names runs in a shared workload manager
    (Slurm), so two installations, or one whose database was reset, never mix up job ids."""
    got = get_setting(s, "install_id")
    if got is None:
        import secrets

        got = secrets.token_hex(3)
        set_setting(s, "install_id", got)
    return got


def set_setting(s: Session, key: str, value: str) -> None:
    row = s.get(Setting, key)
    if row is None:
        s.add(Setting(key=key, value=value))
    else:
        row.value = value


# -- inventory ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class NodeSpec:
    name: str
    gpu_type: str
    gpus: int
    rack: int = 0
    pod: int = 0
    state: str = "up"


def set_inventory(s: Session, nodes: Sequence[NodeSpec], actor: str, now: float) -> None:
    """Replace the inventory. A node that holds a running job cannot be removed or shrunk."""
    check_inventory(s, nodes)
    s.execute(delete(NodeRow))
    for k, n in enumerate(nodes):
        s.add(NodeRow(name=n.name, gpu_type=n.gpu_type, gpus=n.gpus, rack=n.rack, pod=n.pod,
                      position=k, state=n.state))
    s.flush()
    totals: dict[str, int] = {}
    for n in nodes:
        totals[n.gpu_type] = totals.get(n.gpu_type, 0) + n.gpus
    inbox.note(s, inbox.Change.RESHAPE)
    audit.append(s, now, actor, "inventory.set", "inventory",
                 f"{len(nodes)} nodes", {"gpus_by_type": totals})


def check_inventory(s: Session, nodes: Sequence[NodeSpec]) -> None:
    """Refuse (writing nothing) what ``set_inventory`` refuses: a duplicate node, or one
    removed or shrunk under running jobs."""
    names: set[str] = set()
    for k, n in enumerate(nodes):
        if n.name in names:
            raise InputError(f"nodes[{k}].name", f"duplicate node {n.name!r}")
        names.add(n.name)
    held: dict[str, int] = {}
    for job in s.execute(select(JobRow).where(JobRow.state.in_(ACTIVE))).scalars():
        for node, gpus in job.placement:
            held[node] = held.get(node, 0) + gpus
    new = {n.name: n for n in nodes}
    for node, gpus in sorted(held.items()):
        if node not in new or new[node].gpus < gpus:
            raise Conflict(f"node {node!r} holds {gpus} GPUs of running jobs; drain it first")


def node_rows(s: Session) -> list[NodeRow]:
    return list(s.execute(select(NodeRow).order_by(NodeRow.position)).scalars())


def load_cluster(s: Session) -> tuple[Cluster, list[str]]:
    """The nodes that are up, as the core's ``Cluster``, and their names by index."""
    rows = [r for r in node_rows(s) if r.state == "up"]
    nodes = tuple(Node(k, r.name, GpuType(r.gpu_type), r.gpus, r.rack, r.pod)
                  for k, r in enumerate(rows))
    return Cluster(nodes), [r.name for r in rows]


def capacity(s: Session) -> dict[GpuType, int]:
    """Installed GPUs by type, down nodes included: quotas are planned against what is
    installed, so a node going down does not void the plan (its guarantees then wait or
    reclaim borrowed GPUs, as Kueue's nominal quotas do)."""
    return dict(batch.once(s, "capacity", lambda: {
        GpuType(t): int(n) for t, n in s.execute(_CAPACITY).all()}))


_CAPACITY = select(NodeRow.gpu_type, func.sum(NodeRow.gpus)).group_by(
    NodeRow.gpu_type).order_by(NodeRow.gpu_type)


def largest_node(s: Session, gpu_type: GpuType) -> int:
    """The most GPUs one node of ``gpu_type`` has (0 without such a node)."""
    return int(s.execute(select(func.max(NodeRow.gpus)).where(
        NodeRow.gpu_type == gpu_type)).scalar() or 0)


# -- org tree and quotas --------------------------------------------------------------
def set_org(s: Session, data: Any, actor: str, now: float, version: bool = True) -> OrgTree:
    """Replace the org tree and its default quotas from an org file (``domain.orgspec``);
    with ``version``, record it as a version of its own (``governance.reorg`` records its
    versions itself, with their changes)."""
    cap = capacity(s)
    if not cap:
        raise InputError("inventory", "set the inventory before the org tree")
    tree = org_from_data(data, cap)
    windows = idle_windows(data)
    teams_in_use = {t for (t,) in s.execute(
        select(JobRow.team).where(JobRow.state.in_((JobState.PENDING, *ACTIVE))).distinct())}
    missing = sorted(teams_in_use - set(tree.team_ids))
    if missing:
        raise Conflict(f"teams {missing} have queued or running jobs and must stay teams")
    s.execute(delete(OrgNodeRow))
    s.execute(delete(QuotaRow).where(QuotaRow.period == "default"))
    for k, name in enumerate(tree.names[1:], start=1):
        node = tree.nodes[k]
        assert node is not None
        s.add(OrgNodeRow(name=name, parent=node.parent, weight=node.weight, position=k,
                         idle_window_s=windows.get(name)))
        for t, q in node.quotas.items():
            s.add(QuotaRow(period="default", org_node=name, gpu_type=t,
                           guaranteed=q.guaranteed, borrow_limit=q.borrow_limit,
                           lend_limit=q.lend_limit, source="org"))
    s.flush()
    if version:
        reorg.record_version(s, data, len(tree.team_ids), [], {}, actor, now)
    inbox.note(s, inbox.Change.RESHAPE)
    audit.append(s, now, actor, "org.set", "org", f"{len(tree.team_ids)} teams",
                 {"teams": list(tree.team_ids)})
    return tree


def org_rows(s: Session) -> list[OrgNodeRow]:
    return list(s.execute(select(OrgNodeRow).order_by(OrgNodeRow.position)).scalars())


def published_periods(s: Session) -> list[str]:
    """The periods that have quotas of their own (published plans, dispute changes)."""
    return [p for (p,) in s.execute(select(QuotaRow.period).distinct()) if p != "default"]


def effective_period(s: Session, now: float) -> str:
    """The newest published period not after this month, else ``default``."""
    current = str(Period.of(now))
    periods = [p for (p,) in s.execute(select(QuotaRow.period).distinct())
               if p != "default" and p <= current]
    return max(periods) if periods else "default"


def quota_rows(s: Session, period: str) -> list[QuotaRow]:
    return list(s.execute(select(QuotaRow).where(QuotaRow.period == period)).scalars())


def load_org(s: Session, now: float, cap: dict[GpuType, int] | None = None) -> OrgTree | None:
    """The org tree with the quotas in force at ``now``; None if no org is set."""
    rows = org_rows(s)
    if not rows:
        return None
    period = effective_period(s, now)
    quotas: dict[str, dict[GpuType, Quota]] = {}
    for q in quota_rows(s, "default"):
        quotas.setdefault(q.org_node, {})[GpuType(q.gpu_type)] = Quota(
            q.guaranteed, q.borrow_limit, q.lend_limit)
    if period != "default":
        for q in quota_rows(s, period):
            quotas.setdefault(q.org_node, {})[GpuType(q.gpu_type)] = Quota(
                q.guaranteed, q.borrow_limit, q.lend_limit)
    cap = capacity(s) if cap is None else cap
    nodes = []
    for r in rows:
        qs = {t: q for t, q in quotas.get(r.name, {}).items() if t in cap}
        nodes.append(OrgNode(r.name, r.parent, qs, r.weight, explicit_guarantee=bool(qs)))
    return OrgTree(nodes, cap)


def teams_under(s: Session, node: str | None) -> set[str]:
    """Leaf teams in the subtree of ``node`` (all teams for None)."""
    return set(batch.once(s, ("teams_under", node), lambda: frozenset(_teams_under(s, node))))


def _teams_under(s: Session, node: str | None) -> set[str]:
    rows = org_rows(s)
    children: dict[str | None, list[str]] = {}
    for r in rows:
        children.setdefault(r.parent, []).append(r.name)
    out: set[str] = set()
    stack = [node] if node is not None else list(children.get(None, []))
    while stack:
        n = stack.pop()
        kids = children.get(n, [])
        if not kids and n is not None:
            out.add(n)
        stack.extend(kids)
    return out


def nodes_under(s: Session, node: str | None) -> set[str]:
    """Every org node in the subtree of ``node`` (itself included; none for None)."""
    rows = org_rows(s)
    out = {node} if node else set()
    grew = True
    while grew:
        grew = False
        for r in rows:
            if r.parent in out and r.name not in out:
                out.add(r.name)
                grew = True
    return out


def is_team(s: Session, name: str) -> bool:
    """Whether ``name`` is an org node without children (one query, once per batch)."""
    return batch.once(s, ("is_team", name),
                      lambda: s.execute(_IS_TEAM, {"name": name}).first() is not None)


_IS_TEAM = select(OrgNodeRow.name).where(
    OrgNodeRow.name == bindparam("name"),
    ~select(OrgNodeRow.name).where(OrgNodeRow.parent == bindparam("name")).exists())


def set_quota(s: Session, period: str, team: str, gpu_type: str, guaranteed: int,
              source: str, actor: str, now: float, reason: str) -> None:
    """Set one team's guarantee for a period (a dispute's adjustment); audited."""
    row = s.get(QuotaRow, (period, team, gpu_type))
    base = s.get(QuotaRow, ("default", team, gpu_type))
    old = row.guaranteed if row is not None else (base.guaranteed if base else 0)
    if row is None:
        row = QuotaRow(period=period, org_node=team, gpu_type=gpu_type, guaranteed=guaranteed,
                       borrow_limit=base.borrow_limit if base else None,
                       lend_limit=base.lend_limit if base else None, source=source)
        s.add(row)
    else:
        row.guaranteed, row.source = guaranteed, source
    s.flush()
    inbox.note(s, inbox.Change.RESHAPE)
    audit.append(s, now, actor, "quota.changed", f"team:{team}", reason,
                 {"period": period, "gpu_type": gpu_type, "from": old, "to": guaranteed,
                  "source": source})


def replace_period_quotas(s: Session, period: str, guaranteed: Mapping[tuple[str, str], int],
                          source: str) -> None:
    """Make ``guaranteed`` (org node, GPU type -> GPUs) the whole of ``period``'s quotas;
    each keeps the borrow and lend limits of its default quota."""
    s.execute(delete(QuotaRow).where(QuotaRow.period == period))
    for (node, gpu_type), gpus in sorted(guaranteed.items()):
        base = s.get(QuotaRow, ("default", node, gpu_type))
        s.add(QuotaRow(period=period, org_node=node, gpu_type=gpu_type, guaranteed=gpus,
                       borrow_limit=base.borrow_limit if base else None,
                       lend_limit=base.lend_limit if base else None, source=source))
    s.flush()
