"""Quotas down to Slurm: the accounts, QOS and user associations that make Slurm enforce a plan.

The mapping (checked against a real slurmctld/slurmdbd in ``tests/slurm``):

* one Slurm account per org node, under a tree that mirrors the org tree (top-level nodes
  under ``root``); Slurm lowercases account names, so names are lowercased here and two org
  nodes that differ only in case are refused;
* one QOS per team for its guaranteed work, ``allot_g_<account>``, carrying
  ``GrpTRES=gres/gpu=N`` (``gres/gpu:<type>=N`` per type on a cluster with several GPU
  types), N the team's guarantee: a guaranteed job that would take the team past N waits
  with ``Reason=QOSGrpGRES``. A QOS counts only the jobs that run in it, so a team's
  borrowing jobs (QOS ``allot_borrow``) never hold its guaranteed ones. No association
  carries a limit: Slurm counts every job of an association (borrowed GPUs too) against
  the association's ``GrpTRES``, which held a team's guaranteed job (``AssocGrpGRES``)
  while its own borrower ran, and never preempts for a limit, only for nodes. (A group
  guarantee above the sum of its teams' is not enforced by Slurm; Allotment's own
  scheduler still enforces it for the jobs it launches.);
* every team QOS preempts QOS ``allot_borrow`` (requeue, after ``GraceTime``), the team's
  own borrowers included: a guaranteed job within its guarantee can only wait for nodes,
  and there Slurm preempts. ``allot_borrow`` is bounded by the installed GPUs;
* which QOS a job may use is the association's: a team account and its users may use
  ``allot_borrow`` and the team's QOS (the default); a group account and its users only
  ``allot_borrow``. Set on the accounts too, so a user added by hand inherits them rather
  than Slurm's ``normal``, which no limit governs;
* the submit user(s) and the Allotment users of each team get an association on its account.

Migrating the first layout (one shared QOS ``allot_guaranteed``, the guarantee on the team's
association) is a diff like any other: team QOS added, association limits cleared, QOS lists
changed, pending jobs of ``allot_guaranteed`` moved to their team's QOS (``scontrol update``),
then ``allot_guaranteed`` removed. Slurm cannot change a running job's QOS, and a job
requeued in a removed QOS waits forever (``InvalidQOS``), so ``allot_guaranteed`` stays
while a job still runs in it (``notes`` says so); the first sync after they end removes it.

Everything here is pure except ``read_state`` and ``apply``; ``diff`` orders the changes so
that a QOS exists before a list names it, parents before children, users before their
account's QOS list, and removals last.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from allotment.backends.slurm.cmd import Slurm
from allotment.domain.org import OrgTree
from allotment.errors import ConfigurationError

BORROW_QOS = "allot_borrow"
TEAM_QOS_PREFIX = "allot_g_"  # + the team's account: the QOS of its guaranteed work
LEGACY_QOS = "allot_guaranteed"  # the first layout's shared guaranteed QOS, migrated away
MARK = "allotment"  # the description of the accounts and team QOS Allotment owns
GUARANTEED_PRIORITY = 1000
PENDING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SPECIAL_EXIT"}  # squeue %T


def account_name(org_node: str) -> str:
    return org_node.lower()


def team_qos(team: str) -> str:
    """The QOS of ``team``'s guaranteed work (Slurm lowercases QOS names too)."""
    return TEAM_QOS_PREFIX + account_name(team)


@dataclass(frozen=True)
class Account:
    name: str
    parent: str
    grp_tres: tuple[tuple[str, int], ...]  # sorted (tres, limit)
    ours: bool = True
    qos: tuple[str, ...] = ()  # sorted; the QOS its jobs (and inheriting users) may use
    default_qos: str = ""


@dataclass(frozen=True)
class Qos:
    name: str
    priority: int
    preempt: tuple[str, ...]
    preempt_mode: str
    grace_s: int
    grp_tres: tuple[tuple[str, int], ...]
    description: str = MARK


@dataclass(frozen=True)
class UserAssoc:
    user: str
    account: str
    qos: tuple[str, ...]
    default_qos: str


@dataclass(frozen=True)
class QueuedJob:
    """A job still in ``LEGACY_QOS`` (read only while that QOS exists)."""
    job_id: str
    account: str
    state: str  # squeue %T: PENDING, RUNNING, ...


@dataclass
class SlurmState:
    accounts: dict[str, Account] = field(default_factory=dict)
    qos: dict[str, Qos] = field(default_factory=dict)
    users: dict[tuple[str, str], UserAssoc] = field(default_factory=dict)
    legacy_jobs: tuple[QueuedJob, ...] = ()


@dataclass(frozen=True)
class Change:
    op: str  # "+", "~", "-"
    kind: str  # "qos", "account", "user", "job"
    target: str
    detail: str
    args: tuple[str, ...]  # the tool's arguments
    tool: str = "sacctmgr"  # "sacctmgr" (run with -i) or "scontrol"

    def line(self) -> str:
        return f"{self.op} {self.kind} {self.target}: {self.detail}"


def gpu_tres(gpu_types: Iterable[str]) -> dict[str, str]:
    """GPU type -> TRES name: ``gres/gpu`` on a one-type cluster, else ``gres/gpu:<type>``."""
    types = sorted(gpu_types)
    if len(types) == 1:
        return {types[0]: "gres/gpu"}
    return {t: f"gres/gpu:{t.lower()}" for t in types}


def tres_text(tres: Iterable[tuple[str, int]]) -> str:
    return ",".join(f"{k}={v}" for k, v in tres)


def parse_tres(text: str) -> tuple[tuple[str, int], ...]:
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        k, _, v = part.partition("=")
        try:
            out.append((k, int(v)))
        except ValueError:
            continue
    return tuple(sorted(out))


def _hms(seconds: int) -> str:
    d, rem = divmod(seconds, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    return (f"{d}-" if d else "") + f"{h:02d}:{m:02d}:{s:02d}"


def _seconds(text: str) -> int:
    text = text.strip()
    if not text:
        return 0
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
    parts = [int(p) for p in text.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    return days * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]


def desired(org: OrgTree, users: Mapping[str, Iterable[str]], grace_s: int = 30) -> SlurmState:
    """The Slurm state that enforces ``org``'s guarantees; ``users``: team -> user names
    that get an association on the team's account."""
    seen: dict[str, str] = {}
    for name in org.names[1:]:
        acct = account_name(name)
        if acct in seen:
            raise ConfigurationError(f"org nodes {seen[acct]!r} and {name!r} are one Slurm "
                                     f"account {acct!r} (Slurm lowercases account names)")
        if acct == "root":
            raise ConfigurationError(f"org node {name!r} would be Slurm's root account")
        seen[acct] = name
    tres = gpu_tres(org.gpu_types)
    state = SlurmState()
    installed = tuple(sorted((tres[t], org.capacity[t]) for t in org.gpu_types))
    state.qos[BORROW_QOS] = Qos(BORROW_QOS, 0, (), "requeue", grace_s, installed)
    for i in range(1, len(org.names)):
        parent = org.parent[i]
        name = account_name(org.names[i])
        if org.is_team[i]:
            # the guarantee on the team's own QOS, which counts its guaranteed jobs only
            q = team_qos(org.names[i])
            limit = tuple(sorted((tres[t], org.guaranteed[t][i]) for t in org.gpu_types))
            state.qos[q] = Qos(q, GUARANTEED_PRIORITY, (BORROW_QOS,), "requeue", 0, limit)
            allowed, default = tuple(sorted((BORROW_QOS, q))), q
        else:
            allowed, default = (BORROW_QOS,), BORROW_QOS  # a group's own jobs only borrow
        state.accounts[name] = Account(
            name, "root" if parent == 0 else account_name(org.names[parent]), (),
            qos=allowed, default_qos=default)
    for team in org.team_ids:
        team_acct = state.accounts[account_name(team)]
        for user in sorted(set(users.get(team, ()))):
            state.users[(user, team_acct.name)] = UserAssoc(
                user, team_acct.name, team_acct.qos, team_acct.default_qos)
    return state


def _list(text: str) -> tuple[str, ...]:
    return tuple(sorted(q for q in text.split(",") if q))


def read_state(slurm: Slurm) -> SlurmState:
    """The accounts, QOS and user associations Slurm has now (cluster-wide), and the jobs
    still queued or running in the first layout's QOS."""
    state = SlurmState()
    ours = {r[0] for r in slurm.rows(["sacctmgr", "-n", "-P", "show", "account",
                                      "format=account,description"]) if r[-1] == MARK}
    for r in slurm.rows(["sacctmgr", "-n", "-P", "show", "assoc",
                         "format=account,parentname,user,grptres,qos,defaultqos"]):
        acct, parent, user, grp, qos, dqos = (r + [""] * 6)[:6]
        if user:
            state.users[(user, acct)] = UserAssoc(user, acct, _list(qos), dqos)
        elif acct != "root":
            state.accounts[acct] = Account(acct, parent or "root", parse_tres(grp),
                                           acct in ours, _list(qos), dqos)
    for r in slurm.rows(["sacctmgr", "-n", "-P", "show", "qos", "format=name,priority,"
                         "preempt,preemptmode,gracetime,grptres,description"]):
        name, prio, preempt, mode, grace, grp, desc = (r + [""] * 7)[:7]
        state.qos[name] = Qos(name, int(prio or 0), _list(preempt), mode or "cluster",
                              _seconds(grace), parse_tres(grp), desc)
    if LEGACY_QOS in state.qos:
        state.legacy_jobs = tuple(
            QueuedJob(*[*r, "", "", ""][:3]) for r in slurm.rows(
                ["squeue", "-h", "-q", LEGACY_QOS, "-o", "%i|%a|%T"]))
    return state


def _clear(old: tuple[tuple[str, int], ...], new: tuple[tuple[str, int], ...]) -> str:
    """GrpTRES text setting ``new`` and clearing (-1) what only ``old`` has."""
    gone = {k for k, _ in old} - {k for k, _ in new}
    return tres_text(sorted([*new, *((k, -1) for k in gone)]))


def _qos_of_team(want: SlurmState, account: str) -> str | None:
    """The team QOS a legacy job of ``account`` moves to (None: not a team account)."""
    a = want.accounts.get(account)
    return a.default_qos if a is not None and a.default_qos != BORROW_QOS else None


def _legacy_kept(current: SlurmState, want: SlurmState) -> list[QueuedJob]:
    """The jobs that keep ``LEGACY_QOS`` alive: running ones (Slurm changes no running
    job's QOS) and pending ones of accounts that are no team (nowhere to move them)."""
    return [j for j in current.legacy_jobs
            if j.state not in PENDING or _qos_of_team(want, j.account) is None]


def notes(current: SlurmState, want: SlurmState) -> list[str]:
    """What a sync leaves on purpose, in words (printed with the diff)."""
    kept = _legacy_kept(current, want)
    if LEGACY_QOS not in current.qos or not kept:
        return []
    return [f"qos {LEGACY_QOS} kept while {len(kept)} job(s) are still in it "
            f"({', '.join(j.job_id for j in kept[:10])}): Slurm cannot move a running job "
            "to another QOS (nor has a pending job of an account that is no team a team QOS "
            "to go to); the first sync after they end removes it"]


def _qos_args(q: Qos, have: Qos | None) -> tuple[str, ...]:
    grp = _clear(have.grp_tres if have else (), q.grp_tres)
    return (f"priority={q.priority}", f"preempt={','.join(q.preempt)}",
            f"preemptmode={q.preempt_mode}", f"gracetime={q.grace_s}",
            *((f"grptres={grp}",) if grp else ()))


def _qos_lists(qos: Iterable[str], default: str) -> tuple[str, str]:
    return f"qos={','.join(qos)}", f"defaultqos={default}"


def diff(current: SlurmState, want: SlurmState) -> list[Change]:
    """The changes that take Slurm from ``current`` to ``want``, in a safe order:

    1. QOS (``allot_borrow`` before the team QOS that preempt it);
    2. accounts added or moved, top-down (a parent before its children);
    3. users: their QOS lists before their account's (Slurm refuses an account list that
       leaves a user association without its default QOS); a pending job of
       ``LEGACY_QOS`` can start no more once its user's list lacks that QOS;
    4. those pending jobs moved to their team's QOS;
    5. account limits and QOS lists, deepest first (clearing an association's limit
       before step 4 let a legacy job start in the legacy QOS, seen on Slurm 22.05);
    6. removals: accounts (children first), then the QOS no longer wanted.
    """
    out: list[Change] = []
    for q in sorted(want.qos.values(), key=lambda q: (len(q.preempt), q.name)):
        have = current.qos.get(q.name)
        detail = (f"Priority={q.priority} Preempt={','.join(q.preempt) or '-'} "
                  f"PreemptMode={q.preempt_mode} GraceTime={_hms(q.grace_s)} "
                  f"GrpTRES={tres_text(q.grp_tres) or '-'}")
        if have is None:
            out.append(Change("+", "qos", q.name, detail,
                              ("add", "qos", q.name, *_qos_args(q, None),
                               f"description={MARK}")))
        elif (have.priority, have.preempt, have.preempt_mode.lower(), have.grace_s,
              have.grp_tres) != (q.priority, q.preempt, q.preempt_mode, q.grace_s, q.grp_tres):
            out.append(Change("~", "qos", q.name, detail,
                              ("modify", "qos", "where", f"name={q.name}", "set",
                               *_qos_args(q, have))))
    # 2. accounts top-down: a parent before its children
    depth: dict[str, int] = {}

    def d(name: str) -> int:
        if name not in depth:
            p = want.accounts[name].parent
            depth[name] = 0 if p == "root" else d(p) + 1
        return depth[name]

    lists: list[Change] = []
    for a in sorted(want.accounts.values(), key=lambda a: (d(a.name), a.name)):
        have_a = current.accounts.get(a.name)
        if have_a is None:
            out.append(Change("+", "account", a.name, f"parent={a.parent} "
                              f"QOS={','.join(a.qos)} DefaultQOS={a.default_qos}",
                              ("add", "account", a.name, f"parent={a.parent}",
                               f"description={MARK}", f"organization={MARK}",
                               *_qos_lists(a.qos, a.default_qos))))
            continue
        if have_a.parent != a.parent:
            out.append(Change("~", "account", a.name, f"parent {have_a.parent} -> {a.parent}",
                              ("modify", "account", "where", f"name={a.name}", "set",
                               f"parent={a.parent}")))
        if have_a.grp_tres != a.grp_tres:
            lists.append(Change("~", "account", a.name,
                                f"GrpTRES {tres_text(have_a.grp_tres) or '-'} -> "
                                f"{tres_text(a.grp_tres) or '-'}",
                                ("modify", "account", "where", f"name={a.name}", "set",
                                 f"grptres={_clear(have_a.grp_tres, a.grp_tres)}")))
        if (have_a.qos, have_a.default_qos) != (a.qos, a.default_qos):
            lists.append(Change("~", "account", a.name,
                                f"QOS {','.join(have_a.qos) or '-'} -> {','.join(a.qos)}, "
                                f"DefaultQOS {have_a.default_qos or '-'} -> {a.default_qos}",
                                ("modify", "account", "where", f"name={a.name}", "set",
                                 *_qos_lists(a.qos, a.default_qos))))
    for (user, acct), u in sorted(want.users.items()):
        have_u = current.users.get((user, acct))
        detail = f"QOS={','.join(u.qos)} DefaultQOS={u.default_qos}"
        if have_u is None:
            out.append(Change("+", "user", f"{user}@{acct}", detail,
                              ("add", "user", user, f"account={acct}",
                               *_qos_lists(u.qos, u.default_qos))))
        elif (have_u.qos, have_u.default_qos) != (u.qos, u.default_qos):
            out.append(Change("~", "user", f"{user}@{acct}", detail,
                              ("modify", "user", "where", f"name={user}", f"account={acct}",
                               "set", *_qos_lists(u.qos, u.default_qos))))
    for (user, acct) in sorted(current.users):
        owner = current.accounts.get(acct)
        if owner is not None and owner.ours and acct in want.accounts and \
                (user, acct) not in want.users:
            out.append(Change("-", "user", f"{user}@{acct}", "no longer in the team",
                              ("remove", "user", "where", f"name={user}", f"account={acct}")))
    for j in current.legacy_jobs:
        to = _qos_of_team(want, j.account)
        if j.state in PENDING and to is not None:
            out.append(Change("~", "job", j.job_id, f"QOS {LEGACY_QOS} -> {to}",
                              ("update", f"jobid={j.job_id}", f"qos={to}"), tool="scontrol"))
    out += sorted(lists, key=lambda c: -d(c.target))  # deepest first (a stable sort)
    # accounts Allotment made that the org no longer has: children first
    gone = [a for a in current.accounts.values() if a.ours and a.name not in want.accounts]
    for a in sorted(gone, key=lambda a: -_depth(current, a.name)):
        out.append(Change("-", "account", a.name, "no longer in the org tree",
                          ("remove", "account", "where", f"name={a.name}")))
    for q in sorted(current.qos.values(), key=lambda q: q.name):
        if q.name in want.qos:
            continue
        if q.name == LEGACY_QOS and not _legacy_kept(current, want):
            out.append(Change("-", "qos", q.name, "replaced by one QOS per team",
                              ("remove", "qos", "where", f"name={q.name}")))
        elif q.name.startswith(TEAM_QOS_PREFIX) and q.description == MARK:
            out.append(Change("-", "qos", q.name, "its team is no longer in the org tree",
                              ("remove", "qos", "where", f"name={q.name}")))
    return out


def _depth(state: SlurmState, name: str) -> int:
    k = 0
    while name in state.accounts and state.accounts[name].parent != "root" and k < 100:
        name, k = state.accounts[name].parent, k + 1
    return k


def apply(slurm: Slurm, changes: list[Change]) -> None:
    for c in changes:
        slurm.run(["sacctmgr", "-i", *c.args] if c.tool == "sacctmgr" else [c.tool, *c.args])
