"""Which running jobs to preempt so that a waiting gang can start, losing the least work.

Victim cost, lowest preempted first:
    (priority class, not admitted on borrowed GPUs?, lost GPU-seconds, run time so far,
     sequence)
where lost GPU-seconds = (now - last checkpoint) x gang size: the work thrown away if the
job is killed now. Among a team's jobs, those admitted beyond its guarantee go first.
A job that has run less than ``min_runtime_s`` is never a victim (except a job running as
fill of GPUs held for a gang, ``scheduler.reservation``: it got them only until they are
wanted); the cycle is woken when the first such job becomes eligible.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import NamedTuple

from allotment.domain.workload import RunningJob, Workload
from allotment.scheduler.decisions import Decisions, Preempt, Reservation
from allotment.scheduler.launch import is_protected
from allotment.scheduler.policy import Policy
from allotment.scheduler.snapshot import Snapshot


class VictimCost(NamedTuple):
    """How much preempting one running job costs; lower is preempted first."""

    priority: int  # its priority class (low first)
    within_guarantee: int  # 0: admitted on borrowed GPUs, 1: within its team's guarantee
    lost_gpu_s: float  # work thrown away if killed now: (now - last checkpoint) x gang
    run_s: float  # time since this run started (shorter first)
    seq: int  # tie-break: submission sequence


class NodeChoice(NamedTuple):
    """A node where preempting ``victims`` frees room for a one-node gang; lower is better."""

    top_priority: int  # highest priority class among the victims
    within_guarantee: int  # 1 if any victim runs within its team's guarantee
    lost_gpu_s: float
    victims: int
    node: int


def victim_cost(job: RunningJob, now: float) -> VictimCost:
    w = job.workload
    lost = (now - job.last_checkpoint(now)) * w.gpus
    return VictimCost(w.priority, 0 if job.borrowed_gpus else 1, lost,
                      now - job.segment_start, w.seq)


def _candidates(
    sc: Snapshot, policy: Policy, w: Workload, d: Decisions
) -> list[tuple[VictimCost, RunningJob]]:
    """The running jobs that may be preempted for ``w``, each with its cost, in no order
    (``_cheapest_first`` takes them cheapest first)."""
    now = sc.now
    min_run = policy.config.min_runtime_s
    out = []
    teams = policy.victim_teams(sc, w)
    running = sc.state.running
    by_team = sc.state.running_by_team
    fill = sc.state.fill  # fill of reserved GPUs runs there only until wanted: no minimum
    pool = (
        running.values() if teams is None
        else [j for t in teams for j in by_team.get(t, {}).values()]
    )
    candidate = policy.victim_test(sc, w)
    for job in pool:
        v = job.workload
        if (
            job.terminating_since is not None
            or not v.preemptible
            or v.gpu_type != w.gpu_type
            or v.id in sc.doomed
            or (v.reservation is not None and is_protected(sc, job))
            or not candidate(job)
        ):
            continue
        if now - job.segment_start < min_run and v.id not in fill:
            d.wake(job.segment_start + min_run)
            continue
        out.append((victim_cost(job, now), job))
    return out


def _claim_incoming(sc: Snapshot, w: Workload) -> list[int] | None:
    """Nodes where GPUs already being released (plus free ones) can hold ``w``."""
    t = w.gpu_type
    if sc.single_node(w):
        best = None
        for i in sorted(sc.incoming):
            if sc.state.cluster.nodes[i].gpu_type != t:
                continue
            extra = sc.incoming[i]
            if extra and sc.usable_for_reclaim(i) and sc.room(i) >= w.gpus and (
                best is None or extra < best[0]
            ):
                best = (extra, i)
        return None if best is None else [best[1]]
    if not any(sc.state.cluster.nodes[i].gpu_type == t for i in sc.incoming):
        return None
    room = {i: r for i in sc.unheld_with_room(t)
            if i not in sc.held and (r := sc.room(i)) > 0}
    nodes = sorted(room, key=lambda i: (-room[i], i))
    total, chosen = 0, []
    for i in nodes:
        chosen.append(i)
        total += room[i]
        if total >= w.gpus:
            return chosen if any(sc.incoming.get(n, 0) for n in chosen) else None
    return None


def _cheapest_first(
    cands: list[tuple[VictimCost, RunningJob]]
) -> Iterator[tuple[VictimCost, RunningJob]]:
    """``cands`` by cost, lowest first, sorted lazily: a choice mostly reads only the first
    few (costs are unique, by ``seq``, so the order is the sorted one)."""
    heapq.heapify(cands)
    while cands:
        yield heapq.heappop(cands)


def _choose_victims(
    sc: Snapshot, w: Workload, cands: list[tuple[VictimCost, RunningJob]]
) -> tuple[list[RunningJob], list[int]] | None:
    """Cheapest victim set (and nodes to hold) that frees room for ``w``, before checks.
    ``cands`` is consumed (heap-ordered in place)."""
    t = w.gpu_type
    if sc.single_node(w):
        return _choose_node(sc, w, cands)
    total = sc.unheld_room(t)
    picked = []
    for _, job in _cheapest_first(cands):
        if total >= w.gpus:
            break
        if any(n in sc.held for n, _ in job.placement):
            continue
        picked.append(job)
        total += job.workload.gpus
    if total < w.gpus:
        return None
    nodes = {n for job in picked for n, _ in job.placement}
    nodes.update(i for i in sc.unheld_with_room(t) if sc.room(i) > 0)
    return picked, sorted(nodes)


def _choose_node(
    sc: Snapshot, w: Workload, cands: list[tuple[VictimCost, RunningJob]]
) -> tuple[list[RunningJob], list[int]] | None:
    """The node (and its victims) for a one-node gang: on each node that could hold
    ``w``, its cheapest victims until ``w`` fits there; the node whose set scores lowest
    (``NodeChoice``) wins.

    The victims are taken in one pass over every candidate, cheapest first, each added to
    its nodes' running sets; a node's set is complete when ``w`` fits there. A set
    completed at candidate ``c`` scores at least (``c``'s priority, ``c``'s guarantee
    flag, ``c``'s lost work) (it holds ``c``, and costs are ordered by those first), so
    the pass stops once that bound exceeds the best set so far: no later set can win.
    """
    need = w.gpus
    on_node: set[int] = set()  # nodes with a candidate (the only ones a choice may name)
    for _, job in cands:
        for node, _ in job.placement:
            on_node.add(node)
    # a node where w fits with no victim at all scores lowest (then the lowest node)
    levels = sc.levels[t := w.gpu_type]
    maybe = {i for f in range(need, len(levels)) for i in levels[f]}
    maybe.update(sc.incoming, sc.claimed, sc.preheld)
    free_now = [i for i in maybe if i in on_node and sc.usable_for_reclaim(i)
                and sc.room(i) >= need and sc.state.cluster.nodes[i].gpu_type == t]
    if free_now:
        return [], [min(free_now)]
    bounded = all(c.lost_gpu_s >= 0 for c, _ in cands)  # (lost work is never negative)
    avail: dict[int, int] = {}  # node -> room plus its victims so far
    skip: set[int] = set()  # nodes not usable for a reclaim, or whose set is complete
    sets: dict[int, list[RunningJob]] = {}
    lost: dict[int, float] = {}
    top: dict[int, int] = {}
    guaranteed: dict[int, int] = {}
    best: NodeChoice | None = None
    for cost, job in _cheapest_first(cands):
        if bounded and best is not None and (
            cost.priority, cost.within_guarantee, cost.lost_gpu_s
        ) > (best.top_priority, best.within_guarantee, best.lost_gpu_s):
            break
        for node, gpus in job.placement:
            if node in skip:
                continue
            have = avail.get(node)
            if have is None:
                if not sc.usable_for_reclaim(node):
                    skip.add(node)
                    continue
                have = sc.room(node)
                sets[node], lost[node], top[node], guaranteed[node] = [], 0.0, -(10**9), 0
            sets[node].append(job)
            avail[node] = have = have + gpus
            lost[node] += cost.lost_gpu_s
            top[node] = max(top[node], cost.priority)
            guaranteed[node] = max(guaranteed[node], cost.within_guarantee)
            if have >= need:
                skip.add(node)
                score = NodeChoice(top[node], guaranteed[node], lost[node],
                                   len(sets[node]), node)
                if best is None or score < best:
                    best = score
    if best is None:
        return None
    return sets[best.node], [best.node]


def _fits_after_removal(sc: Snapshot, w: Workload, nodes: list[int]) -> bool:
    if sc.single_node(w):
        return sc.room(nodes[0]) >= w.gpus
    t = w.gpu_type
    machines = sc.state.cluster.nodes
    claimed_held = sum(sc.room(i) for i in sc.claimed
                       if i in sc.held and machines[i].gpu_type == t)
    return sc.unheld_room(t) + claimed_held >= w.gpus  # over nodes usable for reclaim


def _promise(sc: Snapshot, w: Workload, nodes: list[int]) -> None:
    """Hold ``nodes`` for ``w`` and promise it its GPUs there (the first node for a small
    gang; spread in node order for a large one)."""
    need = w.gpus
    for node in nodes:
        take = need if sc.single_node(w) else min(need, max(sc.room(node), 0))
        sc.claimed[node] = sc.claimed.get(node, 0) + take
        need -= take
        if need <= 0:
            break
    sc.hold(nodes)


def plan_reclaim(sc: Snapshot, policy: Policy, w: Workload, d: Decisions) -> bool:
    """Make room for blocked ``w``: claim GPUs already being released, or preempt victims.

    Simulates removing the victims (undone before returning), checks that ``w`` then
    passes the policy's quota and fits and that each victim, requeued, would sort after
    ``w`` (else the two would preempt each other forever), and holds the target nodes. Returns True
    when ``w`` has GPUs on the way.
    """
    claimed = _claim_incoming(sc, w)
    if claimed is not None:
        _promise(sc, w, claimed)
        d.reservations.append(Reservation(w.gpu_type, w.id, ("node", claimed[0]),
                                          tuple(claimed), reclaim=True))
        return True
    cls = policy.preempt_class(sc, w)
    if sc.reclaim_failed.get(cls, w.gpus + 1) <= w.gpus:
        return False
    found = _find_victims(sc, policy, w, d)
    if not found:
        sc.reclaim_failed[cls] = min(w.gpus, sc.reclaim_failed.get(cls, w.gpus))
    return found


def _find_victims(sc: Snapshot, policy: Policy, w: Workload, d: Decisions) -> bool:
    cands = _candidates(sc, policy, w, d)
    if not cands:
        return False
    choice = _choose_victims(sc, w, cands)
    if choice is None:
        return False
    victims, nodes = choice
    ok = True
    with sc.without() as gone:  # what if the victims were gone? (undone on leaving)
        for job in victims:
            if not policy.is_victim_candidate(sc, w, job):
                ok = False
                break
            gone.remove(job)
        if ok:
            ok = policy.quota_block(sc, w) is None and _fits_after_removal(sc, w, nodes)
        if ok:
            # no thrashing: once requeued, every victim must sort after the job it made
            # room for
            mine = policy.order_key(sc, w, sc.state.pending_attained[w.id])
            ok = all(policy.order_key(sc, job.workload, job.attained_at(sc.now)) > mine
                     for job in victims)
    if not ok:
        return False
    for job in victims:
        sc.doomed.add(job.workload.id)
        sc.release(job)
        for node, gpus in job.placement:  # on their way once the grace period ends
            sc.incoming[node] = sc.incoming.get(node, 0) + gpus
        d.preempts.append(Preempt(job.workload.id, w.id,
                                  f"reclaimed for {w.id} of team {w.team} ({policy.name})"))
    others = sorted({n for job in victims for n, _ in job.placement} - set(nodes))
    hold = [*nodes, *others]
    _promise(sc, w, hold)
    d.reservations.append(Reservation(w.gpu_type, w.id, ("node", hold[0]), tuple(hold),
                                      reclaim=True))
    return True
