"""Which running jobs to preempt so that a waiting gang can start, losing the least work.

Victim cost, lowest preempted first:
    (priority class, not admitted on borrowed GPUs?, lost GPU-seconds, run time so far,
     sequence)
where lost GPU-seconds = (now - last checkpoint) x gang size: the work thrown away if the
job is killed now. Among a team's jobs, those admitted beyond its guarantee go first.
A job that has run less than ``min_runtime_s`` is never a victim (except a job running as
fill of GPUs held for a gang, ``scheduler.reservation``: it got them only until they are
wanted); the cycle is woken when the first such job becomes eligible.

Across nodes, victims are taken cheapest first, each only if it is still a victim with
the cheaper ones gone (fair share: its team still keeps more than its guarantee), so that
one team's cheap victims cannot spoil the whole set. ``make_room`` (cycle step 7a) is the
other way GPUs are preempted: for a gang beyond its team's guarantee that holds GPUs (its
docstring).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from operator import itemgetter
from typing import Any, Final, NamedTuple

from allotment.domain.workload import RunningJob, Workload
from allotment.scheduler.decisions import Decisions, Preempt, Reservation
from allotment.scheduler.launch import is_protected
from allotment.scheduler.policy import Policy
from allotment.scheduler.reservation import coming_for, domain_nodes
from allotment.scheduler.snapshot import Snapshot

# How much preempting one running job costs; lower is preempted first. A plain tuple (one
# is made for every candidate of every reclaim):
#   (priority class (low first),
#    0 if admitted on borrowed GPUs else 1 (within its team's guarantee),
#    lost GPU-seconds: work thrown away if killed now, (now - last checkpoint) x gang,
#    run time so far (shorter first),
#    submission sequence (tie-break))
VictimCost = tuple[int, int, float, float, int]
_NEVER: Final = -(1 << 40)  # a node's tally in ``_node_completes`` that no GPUs bring up


class NodeChoice(NamedTuple):
    """A node where preempting ``victims`` frees room for a one-node gang; lower is better."""

    top_priority: int  # highest priority class among the victims
    within_guarantee: int  # 1 if any victim runs within its team's guarantee
    lost_gpu_s: float
    victims: int
    node: int


def _candidates(
    sc: Snapshot, policy: Policy, w: Workload, d: Decisions
) -> list[RunningJob]:
    """The running jobs that may be preempted for ``w``, in no order."""
    teams = policy.victim_teams(sc, w)
    by_team = sc.state.running_by_team
    pool: Iterable[RunningJob] = (
        sc.state.running.values() if teams is None
        else [j for t in teams for j in by_team.get(t, {}).values()]
    )
    return _eligible(sc, policy, w, pool, policy.victim_test(sc, w), d)


def _eligible(
    sc: Snapshot, policy: Policy, w: Workload, pool: Iterable[RunningJob],
    candidate: Callable[[RunningJob], bool], d: Decisions | None
) -> list[RunningJob]:
    """The jobs of ``pool`` that may be preempted now and pass ``candidate``, in no order:
    running on through no grace period already, preemptible, of ``w``'s
    GPU type, not chosen in this cycle, not protected by a launch reservation, and past the
    minimum run time (``d``, if given, is asked for a cycle when a candidate reaches it).
    Fill of reserved GPUs runs there only until it is wanted: it has no minimum."""
    now = sc.now
    min_run = policy.config.min_runtime_s
    fill = sc.state.fill
    out: list[RunningJob] = []
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
            if d is not None:
                d.wake(job.segment_start + min_run)
            continue
        out.append(job)
    return out


def _with_costs(sc: Snapshot, jobs: list[RunningJob]) -> list[tuple[VictimCost, RunningJob]]:
    """Each of ``jobs`` with its ``VictimCost`` now."""
    now = sc.now
    out = []
    for job in jobs:
        v = job.workload
        lost = (now - job.last_checkpoint(now)) * v.gpus
        out.append(((v.priority, 0 if job.borrowed_gpus else 1, lost, now - job.segment_start,
                     v.seq), job))
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
    room = {i: r for i in sc.unheld_with_room(t) if (r := sc.room(i)) > 0}
    nodes = sorted(room, key=lambda i: (-room[i], i))
    total, chosen = 0, []
    for i in nodes:
        chosen.append(i)
        total += room[i]
        if total >= w.gpus:
            return chosen if any(sc.incoming.get(n, 0) for n in chosen) else None
    return None


def _choose_victims(
    sc: Snapshot, policy: Policy, w: Workload, jobs: list[RunningJob]
) -> tuple[list[RunningJob], list[int]] | None:
    """Cheapest victim set (and nodes to hold) that frees room for ``w``, before checks.
    The candidates ``jobs`` are taken cheapest first (``VictimCost``: costs are unique, by
    ``seq``), costed only once a set can be found among them (for a one-node gang). Across
    nodes, a candidate is taken only if it is still one with the victims before it gone
    (fair share: its team still keeps more than its guarantee), so that one team's cheap
    victims cannot spoil the whole set."""
    t = w.gpu_type
    if sc.single_node(w):
        return _choose_node(sc, w, jobs)
    cands = _with_costs(sc, jobs)
    total = sc.unheld_room(t)
    picked: list[RunningJob] = []
    held = sc.held
    recheck = policy.victims_read_snapshot  # else a candidate stays one: no what-if
    with sc.without() as gone:
        for _, job in _cheapest_first(cands):
            if total >= w.gpus:
                break
            if any(n in held for n, _ in job.placement):
                continue
            if recheck:
                if picked and not policy.is_victim_candidate(sc, w, job):
                    continue
                gone.remove(job)
            picked.append(job)
            total += job.workload.gpus
    if total < w.gpus:
        return None
    nodes = {n for job in picked for n, _ in job.placement}
    nodes.update(i for i in sc.unheld_with_room(t) if sc.room(i) > 0)
    return picked, sorted(nodes)


def _cheapest_first(
    cands: list[tuple[VictimCost, RunningJob]]
) -> Iterator[tuple[VictimCost, RunningJob]]:
    """``cands`` cheapest first, ordered as they are taken (a heap: a search that stops
    early does not sort them all)."""
    heapq.heapify(cands)
    while cands:
        yield heapq.heappop(cands)


def _free_node(sc: Snapshot, w: Workload, jobs: list[RunningJob]) -> int:
    """For a one-node gang: the lowest node where ``w`` fits with no victim at all and a
    candidate runs (the lowest score: a choice names only such nodes), or -1. Such a node
    holds ``w.gpus`` free GPUs, or GPUs on the way, claimed or held (rare: w is blocked)."""
    need = w.gpus
    levels = sc.levels[w.gpu_type]
    maybe = {i for f in range(need, len(levels)) for i in levels[f]}
    maybe.update(sc.incoming, sc.claimed, sc.preheld)
    free_now = {i for i in maybe if sc.usable_for_reclaim(i) and sc.room(i) >= need}
    best = -1
    if free_now:
        for job in jobs:
            for node, _ in job.placement:
                if node in free_now and (best < 0 or node < best):
                    best = node
    return best


def _node_completes(sc: Snapshot, w: Workload, jobs: list[RunningJob]) -> bool:
    """For a one-node gang: whether any node's victim set can be completed at all (it holds
    ``w`` with all the candidates there gone); if none can, ``_one_pass`` would look at
    every candidate and complete none. Per node seen: its room plus the candidates' GPUs
    so far (far below zero for a node not usable for a reclaim); the first node to reach
    ``w.gpus`` ends the search."""
    need = w.gpus
    reach: dict[int, int] = {}
    for job in jobs:
        for node, gpus in job.placement:
            r = reach.get(node)
            if r is None:
                r = sc.room(node) if sc.usable_for_reclaim(node) else _NEVER
            r += gpus
            if r >= need:
                return True
            reach[node] = r
    return False


def _choose_node(
    sc: Snapshot, w: Workload, jobs: list[RunningJob]
) -> tuple[list[RunningJob], list[int]] | None:
    """The node (and its victims) for a one-node gang: on each node that could hold
    ``w``, its cheapest victims until ``w`` fits there; the node whose set scores lowest
    (``NodeChoice``) wins. The candidates are costed only if no node is free for ``w``
    and some node's set can be completed."""
    free = _free_node(sc, w, jobs)
    if free >= 0:
        return [], [free]
    if not _node_completes(sc, w, jobs):
        return None
    return _one_pass(sc, w, _with_costs(sc, jobs))


def _one_pass(
    sc: Snapshot, w: Workload, cands: list[tuple[VictimCost, RunningJob]]
) -> tuple[list[RunningJob], list[int]] | None:
    """``_choose_node``'s choice among costed candidates.

    The victims are taken in one pass over every candidate, cheapest first, each added to
    its nodes' running sets; a node's set is complete when ``w`` fits there. A set
    completed at candidate ``c`` scores at least ``c``'s first three cost fields
    (priority, guarantee flag, lost work: the set holds ``c``, and costs are ordered by
    those first), so the pass stops once they exceed the best set's: no later set can win.
    """
    need = w.gpus
    # (lost work is never negative, but for rounding)
    bounded = True
    for cost, _ in cands:
        if cost[2] < 0:
            bounded = False
            break
    # per node taken so far: [room plus its victims' GPUs, lost work, top priority,
    # guarantee flag, victims]
    acc: dict[int, list[Any]] = {}
    skip: set[int] = set()  # nodes not usable for a reclaim, or whose set is complete
    best: NodeChoice | None = None
    cands.sort(key=itemgetter(0))  # (the pass looks at most candidates: sorted at once)
    for cost, job in cands:
        if bounded and best is not None and cost[:3] > best[:3]:
            break
        prio, guar, lost = cost[0], cost[1], cost[2]
        for node, gpus in job.placement:
            if node in skip:
                continue
            a = acc.get(node)
            if a is None:
                if not sc.usable_for_reclaim(node):
                    skip.add(node)
                    continue
                a = acc[node] = [sc.room(node), 0.0, prio, guar, []]
            a[4].append(job)
            a[0] += gpus
            a[1] += lost
            if prio > a[2]:
                a[2] = prio
            if guar > a[3]:
                a[3] = guar
            if a[0] >= need:
                skip.add(node)
                score = NodeChoice(a[2], a[3], a[1], len(a[4]), node)
                if best is None or score < best:
                    best = score
    if best is None:
        return None
    return acc[best.node][4], [best.node]


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
    jobs = _candidates(sc, policy, w, d)
    if not jobs:
        return False
    choice = _choose_victims(sc, policy, w, jobs)
    if choice is None:
        return False
    victims, nodes = choice
    ok = True
    recheck = policy.victims_read_snapshot
    with sc.without() as gone:  # what if the victims were gone? (undone on leaving)
        for job in victims:
            if recheck and not policy.is_victim_candidate(sc, w, job):
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
        sc.doom(job)
        d.preempts.append(Preempt(job.workload.id, w.id,
                                  f"reclaimed for {w.id} of team {w.team} ({policy.name})"))
    others = sorted({n for job in victims for n, _ in job.placement} - set(nodes))
    hold = [*nodes, *others]
    _promise(sc, w, hold)
    d.reservations.append(Reservation(w.gpu_type, w.id, ("node", hold[0]), tuple(hold),
                                      reclaim=True))
    return True


def make_room(sc: Snapshot, policy: Policy, w: Workload, r: Reservation,
              d: Decisions) -> Reservation:
    """Cycle step 7a: blocked gang ``w`` beyond its team's guarantee, holding GPUs (``r``),
    completes them by preemption where the policy allows it (``Policy.gang_reclaim``):

        missing = gang - (free GPUs held + its preemptible fill's + GPUs on their way out
                          there)
    When 0 < missing <= min(rule.cap, free GPUs held), the cheapest runs (victim cost
    above) in the reservation's domain, on no node held for another job, past their
    minimum run time, that pass the rule's test, are preempted with the grace period until
    they free ``missing`` GPUs: their GPUs at most ``rule.cap``, each victim team keeping
    its guarantee (``rule.spare``), and only if the gang's quota admits it with them, its
    preemptible fill and the runs leaving its nodes gone; else nothing is. Preempting only
    when as many held GPUs idle as are missing means each GPU that preemption frees puts
    about one idle GPU to work. Its fill is then preempted as usual
    (``reservation.reclaim_fill``), and the victims' nodes join the reservation, held for
    it from the start of each cycle until it starts. Returns the reservation, grown by
    those nodes."""
    if not policy.preempts:
        return r
    state = sc.state
    free = sum(map(sc.free.__getitem__, r.nodes))
    mine = set(r.nodes)
    running = state.running
    # its preemptible fill and that fill's GPUs there (a backfill job without preemption
    # ends by its limit)
    own_fill = [j for j, gang in state.fill.items()
                if gang == w.id and running[j].workload.preemptible]
    fill_gpus = sum(g for j in own_fill for n, g in running[j].placement if n in mine)
    missing = w.gpus - free - fill_gpus - coming_for(sc, w.id, r.nodes)
    if missing <= 0 or missing > free:
        return r
    rule = policy.gang_reclaim(sc, w)  # (after the cheap test: it may compute order keys)
    if rule is None or missing > rule.cap:
        return r
    allowed = domain_nodes(sc, w.gpu_type, r.domain)
    held, fill = sc.held, state.fill

    def victim(job: RunningJob) -> bool:  # not its own fill, wholly in its domain
        return (fill.get(job.workload.id) != w.id
                and all(n in allowed and (n in mine or n not in held) for n, _ in job.placement)
                and rule.test(job))

    pool = [job for team, jobs in state.running_by_team.items()
            if team != w.team and rule.spare(team) > 0 for job in jobs.values()]
    cands = _with_costs(sc, _eligible(sc, policy, w, pool, victim, d))
    cands.sort(key=itemgetter(0))
    picked: list[RunningJob] = []
    total = 0
    left: dict[str, int] = {}  # GPUs each victim team may still lose
    for _, job in cands:
        if total >= missing:
            break
        v = job.workload
        spare = left[v.team] if v.team in left else rule.spare(v.team)
        if total + v.gpus > rule.cap or v.gpus > spare:
            continue
        left[v.team] = spare - v.gpus
        picked.append(job)
        total += v.gpus
    if total < missing:
        return r
    # what if they were gone, and with them the gang's preemptible fill and the runs
    # leaving its nodes? (undone on leaving the block)
    out = {j.workload.id: j for j in picked}
    for jid in sorted({*state.terminating, *sc.doomed, *own_fill}):
        run = running.get(jid)
        if run is not None and jid not in out and any(n in mine for n, _ in run.placement):
            out[jid] = run
    with sc.without() as gone:
        for job in out.values():
            gone.remove(job)
        ok = policy.quota_block(sc, w) is None  # the gang's quota must admit it then
    if not ok:
        return r
    for job in picked:
        sc.doom(job)
        d.preempts.append(Preempt(job.workload.id, w.id,
                                  f"preempted so that gang {w.id} of team {w.team}, whose "
                                  f"GPUs are held, can start ({policy.name})"))
    extra = sorted({n for job in picked for n, _ in job.placement} - mine)
    sc.hold(extra)
    return Reservation(r.gpu_type, r.job_id, r.domain, tuple(sorted(mine.union(extra))))
