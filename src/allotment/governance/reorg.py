"""Reorganisations that keep history: a new org file, its diff against the stored tree,
and, in one transaction, the re-keying of everything keyed by an org node's name.

The org file is the simulator's (``domain.orgspec``) with three optional fields per node:

    - {name: science, renamed_from: research}      # a rename: all of it follows
    - {name: llm, merged_from: [llama, gpt]}       # a merge (``name`` may be one of them)
    - {name: llama-rl, split_from: llama}          # a split: a part of llama

``apply(s, data, force, actor, now, dry_run)``, in order:
1. parse: the three fields come off the file; the rest must be a valid org file for the
   inventory (errors name the field: ``org[0].children[1].merged_from[0]``);
2. plan (``plan``, pure): teams added, removed, renamed, merged, split, moved to another
   parent, guarantees changed; and the moves (old name -> new name) that history follows.
   A split's work and history go to the part named by ``--force old=part``, else to the
   first part in the file, unless the old name stays (then the parts start afresh);
3. refuse, naming the field: a source that is not in the current org, one claimed twice,
   a rename onto a name the org has (that is a merge: say ``merged_from``), a source
   still in the new org, a removed team with running or pending work and no ``--force
   old=new`` saying where its work goes, work that would land on a group, and quotas of
   a published period that would no longer fit;
4. with ``dry_run``, stop: the plan is the answer and nothing is written;
5. re-key, the ``REKEY`` steps in order, then replace the org tree (``repo.set_org``:
   the scheduler loop's inbox gets a ``reshape``, so it rebuilds its state), record the
   version (``GET /v1/org/history``) and audit every change.

What follows a move: jobs (running ones keep running, now of the new team; pending ones
keep their place in the queue), usage history, the live scheduler's decayed usage, the
quotas of published periods (merged ones add up), requests, disputes and users. A removed
team's rows stay under its name (history), except its period quotas and requests (deleted)
and the open disputes assigned to it (to the admins).

REKEY is the one list of what is keyed by org node name. A table that keys rows by team
(credits, budgets, launch reservations, ...) joins a reorganisation by adding one step here:
``Step("credits", credits_rows.rekey)``, a storage function ``(session, Moves) -> rows
changed`` that moves its rows as ``storage.reorg.Moves`` says (adding up rows of two teams
that merge). The steps run in one transaction, after the checks and before the org tree is
replaced; the audit entry of each change counts the rows each step moved.

The live loop: ``repo.set_org`` notes a ``reshape`` in its inbox, and the loop rebuilds its
state from the re-keyed rows. Two things it holds in memory are re-keyed on its side: the
decayed usage it persists each tick is stamped with the org version its state was built
from, and a stamp older than the stored one is never written over the re-keyed memory
(``service.loop.live.save_memory``); the usage sums not yet written are mapped through the
moves of the versions since their state's (``service.loop.accounting``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from allotment.domain.cluster import GpuType
from allotment.domain.jobstate import ACTIVE, JobState
from allotment.domain.org import OrgNode, OrgTree, Quota
from allotment.domain.orgspec import idle_windows, org_from_data
from allotment.errors import AllotmentError, InputError, OrgFileError
from allotment.scheduler.config import DEFAULTS
from allotment.scheduler.state import SchedulerMemory
from allotment.storage import audit, repo
from allotment.storage import reorg as rows
from allotment.storage import reservations as reservation_rows
from allotment.storage.reorg import Moves
from allotment.storage.repo import Conflict

ANNOTATIONS = ("renamed_from", "merged_from", "split_from")
MAX_NODES = 100_000  # an org file with more nodes (aliases included) is refused


# -- 1. parse -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Annotation:
    """The reorganisation fields of one node of the new file, with the node's path."""

    path: str
    name: str
    renamed_from: str | None = None
    merged_from: tuple[str, ...] = ()
    split_from: str | None = None


def _name_field(value: Any, where: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 128:
        raise OrgFileError(where, f"must be an org node name (1-128 characters), got "
                           f"{json.dumps(value, default=str)[:40]}")
    return value


def take_annotations(data: Any) -> tuple[Any, list[Annotation]]:
    """The org file without the reorganisation fields (a copy), and those fields per node.
    A file that contains itself (YAML aliases) or has more than ``MAX_NODES`` nodes is
    refused, and so is a name given twice (naming both places); anything else malformed
    is left for the org file's own checks."""
    seen: set[int] = set()
    paths: dict[str, str] = {}  # node name -> where the file first names it
    out: list[Annotation] = []
    count = 0

    def nodes(items: Any, path: str) -> Any:
        nonlocal count
        if not isinstance(items, list):
            return items
        if id(items) in seen:
            raise OrgFileError(path, "the org file contains itself (a YAML alias loop)")
        seen.add(id(items))
        got = []
        for k, item in enumerate(items):
            where = f"{path}[{k}]"
            count += 1
            if count > MAX_NODES:
                raise OrgFileError(path, f"more than {MAX_NODES} org nodes")
            if not isinstance(item, dict):
                got.append(item)
                continue
            if id(item) in seen:
                raise OrgFileError(where, "the org file contains itself (a YAML alias loop)")
            seen.add(id(item))
            name = item.get("name")
            if isinstance(name, str):
                if name in paths:
                    raise OrgFileError(f"{where}.name", f"{name!r} is already the name of "
                                       f"{paths[name]}")
                paths[name] = where
            node = {k2: v for k2, v in item.items() if k2 not in ANNOTATIONS}
            if "children" in item:
                node["children"] = nodes(item["children"], f"{where}.children")
            ann = {k2: item[k2] for k2 in ANNOTATIONS if k2 in item and item[k2] is not None}
            if ann:
                if len(ann) > 1:
                    raise OrgFileError(f"{where}.{sorted(ann)[1]}", "give one of renamed_from, "
                                       "merged_from or split_from per node")
                merged: tuple[str, ...] = ()
                if "merged_from" in ann:
                    raw = ann["merged_from"]
                    if not isinstance(raw, list) or not 1 <= len(raw) <= 1000:
                        raise OrgFileError(f"{where}.merged_from",
                                           "must be a list of 1-1000 org node names")
                    merged = tuple(_name_field(v, f"{where}.merged_from[{i}]")
                                   for i, v in enumerate(raw))
                    if len(set(merged)) != len(merged):
                        raise OrgFileError(f"{where}.merged_from", "names a node twice")
                out.append(Annotation(
                    where, name if isinstance(name, str) else "",
                    _name_field(ann["renamed_from"], f"{where}.renamed_from")
                    if "renamed_from" in ann else None, merged,
                    _name_field(ann["split_from"], f"{where}.split_from")
                    if "split_from" in ann else None))
            got.append(node)
        return got

    if not isinstance(data, dict):
        return data, []
    stripped = dict(data)
    if "org" in data:
        stripped["org"] = nodes(data["org"], "org")
    return stripped, out


def parse_force(force: Sequence[str]) -> dict[str, str]:
    """``["old=new", ...]`` -> {old: new}; errors name ``force[k]``."""
    out: dict[str, str] = {}
    for k, item in enumerate(force):
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            raise InputError(f"force[{k}]", f"{item[:60]!r}: write OLD=NEW (where the work of "
                             "removed team OLD goes)")
        if old in out:
            raise InputError(f"force[{k}]", f"names {old!r} twice")
        out[old] = new
    return out


# -- 2. plan --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class OldNode:
    name: str
    parent: str | None
    is_team: bool
    guaranteed: Mapping[str, int] = field(default_factory=dict)
    limits: Mapping[str, Any] = field(default_factory=dict)  # ``_limits``


def _limits(weight: float, quotas: Mapping[Any, Quota], idle_window_s: float | None
            ) -> dict[str, Any]:
    """What a node sets beside its guarantee, for the diff: its weight (when not 1), its
    borrow and lend limits per GPU type, its idle window."""
    out: dict[str, Any] = {}
    if weight != 1.0:
        out["weight"] = weight
    for t, q in sorted(quotas.items()):
        if q.borrow_limit is not None:
            out[f"borrow_limit.{t}"] = q.borrow_limit
        if q.lend_limit is not None:
            out[f"lend_limit.{t}"] = q.lend_limit
    if idle_window_s is not None:
        out["idle_window_s"] = idle_window_s
    return out


@dataclass(frozen=True, slots=True)
class Plan:
    changes: list[dict[str, Any]]
    moves: Moves


def _change(kind: str, node: str, text: str, **detail: Any) -> dict[str, Any]:
    return {"kind": kind, "node": node, "text": text, **detail}


def _fmt(g: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {t}" for t, n in sorted(g.items())) or "none"


def plan(old: Sequence[OldNode], new: OrgTree, annotations: Sequence[Annotation],
         force: Mapping[str, str], work: Mapping[str, tuple[int, int]],
         users: Mapping[str, int] | None = None,
         windows: Mapping[str, float] | None = None) -> Plan:
    """The diff of ``new`` against ``old`` and where history goes (pure; raises
    ``OrgFileError``/``InputError`` naming the field, ``Conflict`` for a refused removal).
    ``work``: old team -> (running or pending jobs, GPUs); ``users``: node -> users;
    ``windows``: the new file's idle windows by node."""
    users = users or {}
    windows = windows or {}
    by_old = {n.name: n for n in old}
    new_names = [n for n in new.names[1:]]
    new_set = set(new_names)
    claimed: dict[str, str] = {}  # old source -> field that claimed it
    to: dict[str, str] = {}
    quota_dropped: set[str] = set()
    changes: list[dict[str, Any]] = []
    splits: dict[str, list[tuple[str, str]]] = {}  # source -> [(part, path)]

    def claim(src: str, where: str) -> None:
        if src not in by_old:
            raise OrgFileError(where, f"no node {src!r} in the current org")
        taken = claimed.get(src) or (splits[src][0][1] if src in splits else None)
        if taken is not None:
            raise OrgFileError(where, f"{src!r} is already taken by {taken}")
        claimed[src] = where

    for a in annotations:
        if a.renamed_from is not None:
            where = f"{a.path}.renamed_from"
            if a.renamed_from == a.name:
                continue
            claim(a.renamed_from, where)
            if a.name in by_old:
                raise OrgFileError(where, f"{a.name!r} is already a node of the org: renaming "
                                   f"{a.renamed_from!r} to it would merge the two; write "
                                   f"merged_from: [{a.name}, {a.renamed_from}]")
            if a.renamed_from in new_set:
                raise OrgFileError(where, f"{a.renamed_from!r} is still a node of the new org; "
                                   "a rename takes the old name away (use split_from to "
                                   "split it)")
            to[a.renamed_from] = a.name
            changes.append(_change("renamed", a.name, f"renamed {a.renamed_from} to {a.name}",
                                   **{"from": a.renamed_from}))
        elif a.merged_from:
            sources = []
            for i, src in enumerate(a.merged_from):
                where = f"{a.path}.merged_from[{i}]"
                claim(src, where)
                if src == a.name:
                    continue
                if src in new_set:
                    raise OrgFileError(where, f"{src!r} is still a node of the new org; a "
                                       "merged node is gone after the merge")
                to[src] = a.name
                sources.append(src)
            stays = " (which stays)" if a.name in by_old else ""
            if sources:
                changes.append(_change("merged", a.name, f"merged {', '.join(sources)} "
                                       f"into {a.name}{stays}",
                                       **{"from": list(a.merged_from)}))
        elif a.split_from is not None:
            where = f"{a.path}.split_from"
            if a.split_from not in by_old:
                raise OrgFileError(where, f"no node {a.split_from!r} in the current org")
            if a.split_from in claimed:
                raise OrgFileError(where, f"{a.split_from!r} is already taken by "
                                   f"{claimed[a.split_from]}")
            splits.setdefault(a.split_from, []).append((a.name, where))
    for src, parts in splits.items():
        claimed[src] = parts[0][1]
        names = [p for p, _ in parts]
        if src in new_set:
            changes.append(_change("split", src, f"split {', '.join(names)} off {src} "
                                   f"({src} stays and keeps its history)",
                                   **{"from": src, "parts": names}))
            continue
        heir = force.get(src, names[0])
        if heir not in names:
            raise InputError(f"force[{src}]", f"{heir!r} is not a part of the split of {src} "
                             f"(parts: {', '.join(names)})")
        to[src] = heir
        quota_dropped.add(src)
        changes.append(_change("split", src, f"split {src} into {', '.join(names)}; its jobs "
                               f"and history go to {heir}", **{"from": src, "parts": names,
                                                              "heir": heir}))
    # every new name that the old org has must be that node itself, staying where it is
    for name in new_names:
        if name in to:
            raise OrgFileError("org", f"{name!r} is both moved away and a node of the new org")
    removed = [n.name for n in old if n.name not in new_set and n.name not in claimed]
    new_is_team = {n: new.is_team[new.index[n]] for n in new_names}
    for src, dst in sorted(force.items()):
        if src in splits and src not in new_set:
            continue  # the split's heir, checked above
        if src not in removed:
            raise InputError(f"force[{src}]", f"{src!r} is not removed by this org file "
                             "(--force says where a removed team's work goes)")
        if not new_is_team.get(dst, False):
            raise InputError(f"force[{src}]", f"{dst!r} is not a team of the new org")
        to[src] = dst
        quota_dropped.add(src)
    for name in removed:
        n = by_old[name]
        jobs, gpus = work.get(name, (0, 0))
        if name in to:
            changes.append(_change("removed", name, f"removed {name}; its {jobs} running or "
                                   f"pending jobs ({gpus} GPUs) and history go to {to[name]}",
                                   into=to[name]))
            continue
        if n.is_team and jobs:
            raise Conflict(f"team {name!r} has {jobs} running or pending jobs ({gpus} GPUs); "
                           f"say where its work goes with --force {name}=TEAM (API: force="
                           f"{name}=TEAM), or rename or merge it instead")
        note = f"; its {users[name]} user(s) keep no team" if users.get(name) else ""
        changes.append(_change("removed", name, f"removed {'team' if n.is_team else 'group'} "
                               f"{name}{note}"))
    # work must land on teams
    for team, (jobs, _) in sorted(work.items()):
        if not jobs or (team in removed and team not in to):
            continue
        dst = to.get(team, team)
        if dst in new_is_team and not new_is_team[dst]:
            raise Conflict(f"team {team!r} has {jobs} running or pending jobs and would become "
                           f"{'' if dst == team else dst + ', '}a group of the new org; its "
                           "work must stay on a team")
    came = set(to.values())
    split_parts = {part for ps in splits.values() for part, _ in ps}
    continues = {n: n for n in new_names if n in by_old}  # new name -> the old node it is
    continues.update({c["node"]: c["from"] for c in changes if c["kind"] == "renamed"})
    for name in new_names:
        i = new.index[name]
        node = new.nodes[i]
        assert node is not None
        parent = node.parent
        if name not in by_old and name not in came and name not in split_parts:
            kind = "team" if new.is_team[i] else "group"
            changes.append(_change("added", name, f"added {kind} {name} under "
                                   f"{parent or 'the root'}", parent=parent))
        before = continues.get(name)
        if before is None:
            continue
        op = by_old[before].parent
        was = to.get(op, op) if op is not None else None
        if was != parent:
            changes.append(_change("moved", name, f"moved {name} from {was or 'the root'} to "
                                   f"{parent or 'the root'}", **{"from": was, "to": parent}))
        g_new = {str(t): q.guaranteed for t, q in node.quotas.items()
                 if q.guaranteed and node.explicit_guarantee}
        g_old = {t: v for t, v in by_old[before].guaranteed.items() if v}
        if g_new != g_old:
            changes.append(_change("guarantee", name, f"{name}: guaranteed {_fmt(g_old)} -> "
                                   f"{_fmt(g_new)}", **{"from": g_old, "to": g_new}))
        was_limits = by_old[before].limits
        limits = _limits(node.weight, node.quotas, windows.get(name))
        if limits != was_limits:
            said = ", ".join(f"{k} {was_limits.get(k, '-')} -> {limits.get(k, '-')}"
                             for k in sorted(set(limits) | set(was_limits))
                             if limits.get(k) != was_limits.get(k))
            changes.append(_change("changed", name, f"{name}: {said}"))
    return Plan(changes, Moves(dict(to), frozenset(n for n in removed if n not in to),
                               frozenset(quota_dropped)))


# -- 3. the periods' quotas must still fit --------------------------------------------
def check_periods(new: OrgTree, period_rows: list[Any], m: Moves) -> None:
    """Each published period's quotas, once re-keyed, over the new defaults, must make a
    valid tree (a group's guarantee at least its children's, the top within capacity)."""
    after = rows.period_quotas_after(period_rows, m)
    by_period: dict[str, dict[tuple[str, str], Quota]] = {}
    for (period, node, gpu_type), (g, b, lend, _) in after.items():
        by_period.setdefault(period, {})[(node, gpu_type)] = Quota(g, b, lend)
    for period, quotas in sorted(by_period.items()):
        nodes = []
        for i in range(1, len(new.names)):
            n = new.nodes[i]
            assert n is not None
            qs: dict[GpuType, Quota] = dict(n.quotas)
            for t in new.gpu_types:
                q = quotas.get((n.name, str(t)))
                if q is not None:
                    qs[t] = q
            nodes.append(OrgNode(n.name, n.parent, qs, n.weight,
                                 explicit_guarantee=bool(qs)))
        try:
            OrgTree(nodes, new.capacity)
        except AllotmentError as exc:
            raise Conflict(f"the quotas of period {period} would not fit the new org: {exc}; "
                           "publish a plan for the new org first, or change the file") from None


# -- 5. the re-keying steps -----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Step:
    """One table (or setting) that keys rows by org node name, and how its rows move."""

    name: str
    run: Callable[[Session, Moves], int]


REKEY: tuple[Step, ...] = (
    Step("jobs", rows.rekey_jobs),
    Step("usage", rows.rekey_usage),
    Step("period_quotas", rows.rekey_period_quotas),
    Step("requests", rows.rekey_requests),
    Step("disputes", rows.rekey_disputes),
    Step("users", rows.rekey_users),
    Step("budgets", rows.rekey_budgets),
    Step("reservations", reservation_rows.rekey),
)


def carried_decayed(decayed: Mapping[str, tuple[float, float]], old_teams: set[str],
                    m: Moves, held: Mapping[str, int], new: OrgTree, now: float,
                    half_life_s: float) -> dict[str, tuple[float, float]]:
    """Fair share's decayed usage after a reorganisation, every value valid at ``now``.

        D_x(now) = D_x·2^(-(now-t_x)/H) + A_x·(H/ln 2)·(1 - 2^(-(now-t_x)/H))
        D_T = sum of D_x(now) over the old teams x with move(x) = T
        D_G = sum of D_T over the teams T under group G in the new tree

    x: an old team with saved (D_x, t_x) (GPU-seconds valid at t_x), A_x the GPUs its jobs
    hold now (they held them since t_x: the state refreshes t_x at every start and end);
    H the half-life; the first line is ``ClusterState.decayed_usage``. A group's decayed
    usage is the sum of its teams' (one half-life, so the sum is linear), so groups are
    recomputed in the new tree: a team moved to another group takes its usage there. A
    removed team's value is dropped; a new team starts at 0. t_x > now counts as now.
    """
    teams: dict[str, float] = {}
    for x, (d, t) in decayed.items():
        if x not in old_teams:
            continue
        target = m.of(x)
        i = new.index.get(target)
        if i is None or not new.is_team[i]:
            continue
        f = math.exp2(-max(0.0, now - t) / half_life_s)
        dx = d * f + held.get(x, 0) * (half_life_s / math.log(2)) * (1.0 - f)
        teams[target] = teams.get(target, 0.0) + dx
    out: dict[str, float] = {}
    for team, d in teams.items():
        i = new.index[team]
        while i > 0:
            out[new.names[i]] = out.get(new.names[i], 0.0) + d
            i = new.parent[i]
    return {k: (v, now) for k, v in sorted(out.items())}


def _rekey_memory(s: Session, m: Moves, old_teams: set[str], held: Mapping[str, int],
                  new: OrgTree, now: float, version: int) -> int:
    raw = repo.get_setting(s, rows.MEMORY_KEY)
    memory = SchedulerMemory()
    if raw:
        try:
            memory = SchedulerMemory.from_json(json.loads(raw))
        except (ValueError, TypeError, KeyError, AssertionError):
            memory = SchedulerMemory()
    carried = carried_decayed(memory.decayed, old_teams, m, held, new, now,
                              DEFAULTS.usage_half_life_s)
    memory = dataclasses.replace(memory, decayed=carried,
                                 ledger=rows.rekey_ledger(dict(memory.ledger), m))
    repo.set_setting(s, rows.MEMORY_KEY, json.dumps(memory.to_json(), separators=(",", ":")))
    repo.set_setting(s, rows.MEMORY_VERSION_KEY, str(version))
    return len(memory.decayed)


# -- the workflow ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Result:
    changes: list[dict[str, Any]]
    version: int | None  # the new version (None: a dry run)
    dry_run: bool
    moved: dict[str, int] = field(default_factory=dict)  # step -> rows moved


def _old_nodes(s: Session) -> list[OldNode]:
    org = repo.org_rows(s)
    parents = {r.parent for r in org}
    guaranteed: dict[str, dict[str, int]] = {}
    quotas: dict[str, dict[str, Quota]] = {}
    for q in repo.quota_rows(s, "default"):
        guaranteed.setdefault(q.org_node, {})[q.gpu_type] = q.guaranteed
        quotas.setdefault(q.org_node, {})[q.gpu_type] = Quota(q.guaranteed, q.borrow_limit,
                                                              q.lend_limit)
    return [OldNode(r.name, r.parent, r.name not in parents, guaranteed.get(r.name, {}),
                    _limits(r.weight, quotas.get(r.name, {}), r.idle_window_s)) for r in org]


def apply(s: Session, data: Any, force: Sequence[str], actor: str, now: float,
          dry_run: bool = False) -> Result:
    """Diff the org file ``data`` against the stored tree and, unless ``dry_run``, apply it
    (steps in the module's docstring)."""
    if not dry_run:
        rows.lock(s)  # one reorganisation at a time: the second plans on the first's result
    cap = repo.capacity(s)
    if not cap:
        raise InputError("inventory", "set the inventory before the org tree")
    stripped, annotations = take_annotations(data)  # 1
    new = org_from_data(stripped, cap)
    forced = parse_force(force)
    old = _old_nodes(s)
    work = rows.work_by_team(s, (JobState.PENDING, *ACTIVE))
    p = plan(old, new, annotations, forced, work, rows.users_by_node(s),
             idle_windows(stripped))  # 2
    period_rows = rows.period_quota_rows(s)
    check_periods(new, period_rows, p.moves)  # 3
    if dry_run:  # 4
        return Result(p.changes, None, True)
    if not p.changes and old:  # the same org again: nothing to write, no new version
        return Result([], None, False)
    held = {t: g for t, (_, g) in rows.work_by_team(s, ACTIVE).items()}
    old_teams = {n.name for n in old if n.is_team}
    version = rows.record_version(s, stripped, len(new.team_ids), p.changes,
                                  p.moves.to, actor, now)
    moved = {step.name: step.run(s, p.moves) for step in REKEY}  # 5
    moved["scheduler_memory"] = _rekey_memory(s, p.moves, old_teams, held, new, now,
                                              version.id)
    repo.set_org(s, stripped, actor, now, version=False)
    for c in p.changes:
        audit.append(s, now, actor, f"org.{c['kind']}", "org", c["text"],
                     {**c, "version": version.id, "moved": moved})
    return Result(p.changes, version.id, False, moved)
