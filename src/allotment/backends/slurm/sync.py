"""Quotas down to Slurm: the accounts, limits and QOS that make Slurm enforce a plan.

The mapping (checked against a real slurmctld/slurmdbd in ``tests/slurm``):

* one Slurm account per org node, under a tree that mirrors the org tree (top-level nodes
  under ``root``); Slurm lowercases account names, so names are lowercased here and two org
  nodes that differ only in case are refused;
* each team account's association carries ``GrpTRES=gres/gpu=N`` (``gres/gpu:<type>=N`` per
  type on a cluster with several GPU types), N its guarantee: a job in the guaranteed QOS
  that would take the team past N waits with ``Reason=AssocGrpGRES``. Group accounts carry
  no limit: Slurm counts a group's borrowed jobs against its own limit, so a limit there
  would hold a sibling's guaranteed work while another team borrows. (A group guarantee
  above the sum of its teams' is therefore not enforced by Slurm; Allotment's own
  scheduler still enforces it for the jobs it launches.);
* QOS ``allot_guaranteed`` (the teams' default) preempts QOS ``allot_borrow`` (requeue, after
  ``GraceTime``). ``allot_borrow`` sets its own ``GrpTRES`` to the installed GPUs, and Slurm
  uses a QOS limit in place of the association's: a borrowing job runs beyond the guarantee on
  idle GPUs and is requeued when guaranteed work needs them;
* the submit user(s) and the Allotment users of each team get an association on its account.

Everything here is pure except ``read_state`` and ``apply``; ``diff`` orders the changes so
that parents exist before children and limits are set after accounts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from allotment.backends.slurm.cmd import Slurm
from allotment.domain.org import OrgTree
from allotment.errors import ConfigurationError

GUARANTEED_QOS = "allot_guaranteed"
BORROW_QOS = "allot_borrow"
MARK = "allotment"  # the description of the accounts Allotment owns


def account_name(org_node: str) -> str:
    return org_node.lower()


@dataclass(frozen=True)
class Account:
    name: str
    parent: str
    grp_tres: tuple[tuple[str, int], ...]  # sorted (tres, limit)
    ours: bool = True


@dataclass(frozen=True)
class Qos:
    name: str
    priority: int
    preempt: tuple[str, ...]
    preempt_mode: str
    grace_s: int
    grp_tres: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class UserAssoc:
    user: str
    account: str
    qos: tuple[str, ...]
    default_qos: str


@dataclass
class SlurmState:
    accounts: dict[str, Account] = field(default_factory=dict)
    qos: dict[str, Qos] = field(default_factory=dict)
    users: dict[tuple[str, str], UserAssoc] = field(default_factory=dict)


@dataclass(frozen=True)
class Change:
    op: str  # "+", "~", "-"
    kind: str  # "qos", "account", "user"
    target: str
    detail: str
    args: tuple[str, ...]

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
    state.qos[GUARANTEED_QOS] = Qos(GUARANTEED_QOS, 1000, (BORROW_QOS,), "requeue", 0, ())
    state.qos[BORROW_QOS] = Qos(BORROW_QOS, 0, (), "requeue", grace_s, installed)
    for i in range(1, len(org.names)):
        parent = org.parent[i]
        # limits on teams only: a group's association limit counts its teams' borrowed
        # jobs too, and would hold a sibling's guaranteed job (AssocGrpGRES) while a
        # borrower runs. Groups are bounded by their teams' limits.
        limit = tuple(sorted((tres[t], org.guaranteed[t][i]) for t in org.gpu_types)) \
            if org.is_team[i] else ()
        state.accounts[account_name(org.names[i])] = Account(
            account_name(org.names[i]),
            "root" if parent == 0 else account_name(org.names[parent]), limit)
    for team in org.team_ids:
        for user in sorted(set(users.get(team, ()))):
            key = (user, account_name(team))
            state.users[key] = UserAssoc(user, account_name(team),
                                         (BORROW_QOS, GUARANTEED_QOS), GUARANTEED_QOS)
    return state


def read_state(slurm: Slurm) -> SlurmState:
    """The accounts, QOS and user associations Slurm has now (cluster-wide)."""
    state = SlurmState()
    ours = {r[0] for r in slurm.rows(["sacctmgr", "-n", "-P", "show", "account",
                                      "format=account,description"]) if r[-1] == MARK}
    for r in slurm.rows(["sacctmgr", "-n", "-P", "show", "assoc",
                         "format=account,parentname,user,grptres,qos,defaultqos"]):
        acct, parent, user, grp, qos, dqos = (r + [""] * 6)[:6]
        if user:
            state.users[(user, acct)] = UserAssoc(
                user, acct, tuple(sorted(q for q in qos.split(",") if q)), dqos)
        elif acct != "root":
            state.accounts[acct] = Account(acct, parent or "root", parse_tres(grp), acct in ours)
    for r in slurm.rows(["sacctmgr", "-n", "-P", "show", "qos",
                         "format=name,priority,preempt,preemptmode,gracetime,grptres"]):
        name, prio, preempt, mode, grace, grp = (r + [""] * 6)[:6]
        state.qos[name] = Qos(name, int(prio or 0),
                              tuple(sorted(p for p in preempt.split(",") if p)),
                              mode or "cluster", _seconds(grace), parse_tres(grp))
    return state


def _clear(old: tuple[tuple[str, int], ...], new: tuple[tuple[str, int], ...]) -> str:
    """GrpTRES text setting ``new`` and clearing (-1) what only ``old`` has."""
    gone = {k for k, _ in old} - {k for k, _ in new}
    return tres_text(sorted([*new, *((k, -1) for k in gone)]))


def diff(current: SlurmState, want: SlurmState) -> list[Change]:
    """The changes that take Slurm from ``current`` to ``want``, in a safe order."""
    out: list[Change] = []
    for q in sorted(want.qos.values(), key=lambda q: (len(q.preempt), q.name)):
        have = current.qos.get(q.name)
        grp = _clear(have.grp_tres if have else (), q.grp_tres)
        args = (f"priority={q.priority}", f"preempt={','.join(q.preempt)}",
                f"preemptmode={q.preempt_mode}", f"gracetime={q.grace_s}",
                *((f"grptres={grp}",) if grp else ()))
        detail = (f"Priority={q.priority} Preempt={','.join(q.preempt) or '-'} "
                  f"PreemptMode={q.preempt_mode} GraceTime={_hms(q.grace_s)} "
                  f"GrpTRES={tres_text(q.grp_tres) or '-'}")
        if have is None:
            out.append(Change("+", "qos", q.name, detail, ("add", "qos", q.name, *args)))
        elif (have.priority, have.preempt, have.preempt_mode.lower(), have.grace_s,
              have.grp_tres) != (q.priority, q.preempt, q.preempt_mode, q.grace_s, q.grp_tres):
            out.append(Change("~", "qos", q.name, detail,
                              ("modify", "qos", "where", f"name={q.name}", "set", *args)))
    # accounts top-down: a parent before its children
    depth: dict[str, int] = {}

    def d(name: str) -> int:
        if name not in depth:
            p = want.accounts[name].parent
            depth[name] = 0 if p == "root" else d(p) + 1
        return depth[name]

    for a in sorted(want.accounts.values(), key=lambda a: (d(a.name), a.name)):
        have_a = current.accounts.get(a.name)
        if have_a is None:
            out.append(Change("+", "account", a.name, f"parent={a.parent}",
                              ("add", "account", a.name, f"parent={a.parent}",
                               f"description={MARK}", f"organization={MARK}")))
        elif have_a.parent != a.parent:
            out.append(Change("~", "account", a.name, f"parent {have_a.parent} -> {a.parent}",
                              ("modify", "account", "where", f"name={a.name}", "set",
                               f"parent={a.parent}")))
        old = have_a.grp_tres if have_a else ()
        if old != a.grp_tres:
            out.append(Change("~" if have_a else "+", "account", a.name,
                              f"GrpTRES {tres_text(old) or '-'} -> {tres_text(a.grp_tres)}",
                              ("modify", "account", "where", f"name={a.name}", "set",
                               f"grptres={_clear(old, a.grp_tres)}")))
    for (user, acct), u in sorted(want.users.items()):
        have_u = current.users.get((user, acct))
        qos = ",".join(u.qos)
        if have_u is None:
            out.append(Change("+", "user", f"{user}@{acct}",
                              f"QOS={qos} DefaultQOS={u.default_qos}",
                              ("add", "user", user, f"account={acct}", f"qos={qos}",
                               f"defaultqos={u.default_qos}")))
        elif (tuple(sorted(have_u.qos)), have_u.default_qos) != (tuple(sorted(u.qos)),
                                                                 u.default_qos):
            out.append(Change("~", "user", f"{user}@{acct}",
                              f"QOS={qos} DefaultQOS={u.default_qos}",
                              ("modify", "user", "where", f"name={user}", f"account={acct}",
                               "set", f"qos={qos}", f"defaultqos={u.default_qos}")))
    for (user, acct) in sorted(current.users):
        owner = current.accounts.get(acct)
        if owner is not None and owner.ours and acct in want.accounts and \
                (user, acct) not in want.users:
            out.append(Change("-", "user", f"{user}@{acct}", "no longer in the team",
                              ("remove", "user", "where", f"name={user}", f"account={acct}")))
    # accounts Allotment made that the org no longer has: children first
    gone = [a for a in current.accounts.values() if a.ours and a.name not in want.accounts]
    for a in sorted(gone, key=lambda a: -_depth(current, a.name)):
        out.append(Change("-", "account", a.name, "no longer in the org tree",
                          ("remove", "account", "where", f"name={a.name}")))
    return out


def _depth(state: SlurmState, name: str) -> int:
    k = 0
    while name in state.accounts and state.accounts[name].parent != "root" and k < 100:
        name, k = state.accounts[name].parent, k + 1
    return k


def apply(slurm: Slurm, changes: list[Change]) -> None:
    for c in changes:
        slurm.run(["sacctmgr", "-i", *c.args])
