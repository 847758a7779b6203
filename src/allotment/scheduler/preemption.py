"""Which running jobs to preempt so that a waiting gang can start, losing the least work.

Victim cost, lowest preempted first:
    (priority class, not admitted on borrowed GPUs?, lost GPU-seconds, run time so far,
     sequence)
where lost GPU-seconds = (now - last checkpoint) x gang size: the work thrown away if the
job is killed now. Among a team's jobs, those admitted beyond its guarantee go first.
A job that has run less than ``min_runtime_s`` is never a victim (except a job running as
fill of GPUs held for a gang, ``scheduler.reservation``: it got them only until they are
wanted); the cycle is woken when the first such job becomes eligible.

A gang's guaranteed part (``Policy.guaranteed_part``, cycle step 6b): a gang only partly
within its team's guarantee (its team keeps H < E GPUs, H + gang > E) reclaims that part
from the policy's victims, with two limits on the victim set, so that preempting pays for
itself and cannot bounce back:
    victims' GPUs <= min(E - H, room)    (room: free or freeing GPUs where they free room)
    each victim team keeps >= its guarantee without its victims
The first limit means the gang borrows only free GPUs (room >= gang - victims), and each
preempted GPU puts at least one free GPU to work with it; the second means a victim,
requeued, borrows and so reclaims nothing back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

from allotment.domain.workload import RunningJob, Workload
from allotment.scheduler.decisions import Decisions, Preempt, Reservation
from allotment.scheduler.launch import is_protected
from allotment.scheduler.policy import GuaranteedPart, Policy
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
    sc: Snapshot, policy: Policy, w: Workload, d: Decisions, rule: GuaranteedPart | None = None
) -> list[tuple[VictimCost, RunningJob]]:
    if rule is not None:
        return _part_candidates(sc, policy, w, d, rule)
    teams = policy.victim_teams(sc, w)
    running = sc.state.running
    by_team = sc.state.running_by_team
    pool = (
        running.values() if teams is None
        else [j for t in teams for j in by_team.get(t, {}).values()]
    )
    return _eligible(sc, policy, w, d, pool, policy.victim_test(sc, w))


def _eligible(sc: Snapshot, policy: Policy, w: Workload, d: Decisions,
              pool: Iterable[RunningJob], candidate: Callable[[RunningJob], bool]
              ) -> list[tuple[VictimCost, RunningJob]]:
    """The jobs of ``pool`` that may be preempted now and pass ``candidate``, cheapest
    first (the cycle is woken when one that is too young becomes a victim)."""
    now = sc.now
    min_run = policy.config.min_runtime_s
    fill = sc.state.fill  # fill of reserved GPUs runs there only until wanted: no minimum
    out = []
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
    out.sort(key=lambda c: c[0])
    return out


def _part_candidates(sc: Snapshot, policy: Policy, w: Workload, d: Decisions,
                     rule: GuaranteedPart) -> list[tuple[VictimCost, RunningJob]]:
    """A guaranteed part's candidates: the jobs of the victim teams (other than ``w``'s)
    that pass ``rule.test`` (which reads nothing of ``w`` but its GPU type), found once per
    cycle and set of teams, less those chosen since; for a gang of one node, only those on
    a node with room for the gang's free part."""
    teams = tuple(x for x in rule.teams() if x != w.team)
    key = (w.gpu_type, teams)
    found = sc.part_pool.get(key)
    if found is None:
        by_team = sc.state.running_by_team
        found = sc.part_pool[key] = _eligible(
            sc, policy, w, d, [j for x in teams for j in by_team.get(x, {}).values()],
            rule.test)
    out = [c for c in found if c[1].workload.id not in sc.doomed]
    if sc.single_node(w):
        need = max(w.gpus - rule.cap, (w.gpus + 1) // 2)
        out = [c for c in out if any(sc.room(n) >= need for n, _ in c[1].placement)]
    return out


def _claim_incoming(sc: Snapshot, w: Workload) -> list[int] | None:
    """Nodes where GPUs already being released (plus free ones) can hold ``w``."""
    t = w.gpu_type
    ids = sc.state.cluster.nodes_by_type[t]
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
    nodes = sorted(
        (i for i in ids if i not in sc.held and sc.room(i) > 0),
        key=lambda i: (-sc.room(i), i),
    )
    total, chosen = 0, []
    for i in nodes:
        chosen.append(i)
        total += sc.room(i)
        if total >= w.gpus:
            return chosen if any(sc.incoming.get(n, 0) for n in chosen) else None
    return None


def _choose_victims(
    sc: Snapshot, w: Workload, cands: list[tuple[VictimCost, RunningJob]],
    part: GuaranteedPart | None = None
) -> tuple[list[RunningJob], list[int]] | None:
    """Cheapest victim set (and nodes to hold) that frees room for ``w``, before checks.
    For a guaranteed ``part``: victims' GPUs at most ``min(part.cap, room they join)``,
    none that takes its team below its guarantee (``part.spare``)."""
    t = w.gpu_type
    if sc.single_node(w):
        per_node: dict[int, list[tuple[VictimCost, RunningJob, int]]] = {}
        for cost, job in cands:
            for node, gpus in job.placement:  # (a placement names each node once)
                per_node.setdefault(node, []).append((cost, job, gpus))
        best: tuple[NodeChoice, list[RunningJob]] | None = None
        for node, jobs in per_node.items():
            if not sc.usable_for_reclaim(node):
                continue
            avail = room = sc.room(node)
            spare = _Spare(part)
            picked: list[RunningJob] = []
            lost, top_prio, guaranteed = 0.0, -(10**9), 0
            for cost, job, gpus in jobs:
                if avail >= w.gpus:
                    break
                if not spare.take(job):
                    continue
                picked.append(job)
                avail += gpus
                lost += cost.lost_gpu_s
                top_prio = max(top_prio, cost.priority)
                guaranteed = max(guaranteed, cost.within_guarantee)
            if avail >= w.gpus and (part is None or avail - room <= min(part.cap, room)):
                score = NodeChoice(top_prio, guaranteed, lost, len(picked), node)
                if best is None or score < best[0]:
                    best = (score, picked)
        if best is None:
            return None
        return best[1], [best[0].node]
    total = room = sc.unheld_room(t)
    spare = _Spare(part)
    picked = []
    for _, job in cands:
        if total >= w.gpus:
            break
        if any(n in sc.held for n, _ in job.placement) or not spare.take(job):
            continue
        picked.append(job)
        total += job.workload.gpus
    if total < w.gpus or (part is not None and total - room > min(part.cap, room)):
        return None
    nodes = {n for job in picked for n, _ in job.placement}
    nodes.update(i for i in sc.unheld_with_room(t) if sc.room(i) > 0)
    return picked, sorted(nodes)


class _Spare:
    """GPUs each victim team may still lose for a guaranteed part (no limit without one)."""

    def __init__(self, part: GuaranteedPart | None) -> None:
        self.part = part
        self.left: dict[str, int] = {}

    def take(self, job: RunningJob) -> bool:
        if self.part is None:
            return True
        team, gpus = job.workload.team, job.workload.gpus
        left = self.left.get(team)
        if left is None:
            left = self.part.spare(team)
        if gpus > left:
            return False
        self.left[team] = left - gpus
        return True


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


def _part_may_fit(sc: Snapshot, w: Workload, cap: int) -> bool:
    """Whether a guaranteed part's victims (at most ``min(cap, room)`` GPUs where they free
    room) could make room for ``w`` at all: a bound from the room there is, without
    looking at running jobs."""
    t = w.gpu_type
    if sc.single_node(w):
        nodes = sc.state.cluster.nodes
        room = max([sc.max_fit(t), *(sc.free[i] for i in (*sc.claimed, *sc.preheld)
                                     if nodes[i].gpu_type == t)])
        room += max(sc.incoming.values(), default=0)
    else:
        room = sc.unheld_room(t)
    return room + min(cap, room) >= w.gpus


def plan_reclaim(sc: Snapshot, policy: Policy, w: Workload, d: Decisions,
                 rule: GuaranteedPart | None = None) -> bool:
    """Make room for blocked ``w``: claim GPUs already being released, or preempt victims.

    Simulates removing the victims (undone before returning), checks that ``w`` then
    passes the policy's quota and fits and that each victim, requeued, would sort after
    ``w`` (else the two would preempt each other forever), and holds the target nodes. Returns True
    when ``w`` has GPUs on the way.
    """
    claimed = _claim_incoming(sc, w) if rule is None else None
    if claimed is not None:
        _promise(sc, w, claimed)
        d.reservations.append(Reservation(w.gpu_type, w.id, ("node", claimed[0]),
                                          tuple(claimed), reclaim=True))
        return True
    cls = policy.preempt_class(sc, w)
    if rule is not None:
        if not _part_may_fit(sc, w, rule.cap):
            return False
        cls = ("part", cls)
    if sc.reclaim_failed.get(cls, w.gpus + 1) <= w.gpus:
        return False
    found = _find_victims(sc, policy, w, d, rule)
    if not found:
        sc.reclaim_failed[cls] = min(w.gpus, sc.reclaim_failed.get(cls, w.gpus))
    return found


def _find_victims(sc: Snapshot, policy: Policy, w: Workload, d: Decisions,
                  rule: GuaranteedPart | None) -> bool:
    cands = _candidates(sc, policy, w, d, rule)
    if not cands:
        return False
    choice = _choose_victims(sc, w, cands, rule)
    if choice is None:
        return False
    victims, nodes = choice
    ok = True
    with sc.without() as gone:  # what if the victims were gone? (undone on leaving)
        for job in victims:
            if rule is None and not policy.is_victim_candidate(sc, w, job):
                ok = False
                break
            gone.remove(job)
        if ok:
            ok = policy.quota_block(sc, w) is None and _fits_after_removal(sc, w, nodes)
        if ok and rule is None:
            # no thrashing: once requeued, every victim must sort after the job it made
            # room for (a guaranteed part's victims leave their teams at or above their
            # guarantees: requeued, they borrow and reclaim nothing)
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
