"""Holding free GPUs for a blocked gang so that backfill cannot starve it, and filling
them meanwhile so that they do not idle while work waits.

Where: no duration estimates are needed, so a reservation is a place, not a time: the
chosen domain's GPUs are held (up to the gang size) and grow as jobs there end; later jobs
backfill only elsewhere. The domain is sticky: a job keeps the domain of its last
reservation while that domain can still hold it. A node's GPUs available to gang g are
    avail(i) = free(i) + fill_g(i)     (fill_g(i): GPUs of g's own fill jobs on node i)
  - gang <= one node: the node with the largest avail (ties: lowest index);
  - larger: the smallest topology level (rack, pod, all nodes of the type) with a domain
    big enough, in it the domain with the largest avail (ties: lowest id), and there the
    nodes by avail (largest first) until they sum to the gang.

Fill: a later job that quota admits but that finds no unheld room may start on the free
GPUs held for a gang g (``fill_job``) when
  - backfill: it declares a time limit (``estimate_s``) and now + limit <= g's expected
    start (``expected_start``), or
  - preemptible fill, under a policy that preempts (``fairshare``; ``las`` holds no GPUs):
    it is preemptible and belongs to g's team or would run on borrowed GPUs (beyond its
    team's guarantee; any preemptible job under a preempting policy without guarantees);
and only while g could not start without its fill (sum of avail over g's nodes < gang).
Once it could (``reclaim_fill``), g's fill jobs there are preempted with the grace period,
least lost work first (``(now - last checkpoint) x gang``, then the shortest run so far,
then the sequence), ignoring the minimum run time, until free GPUs plus those already on
their way cover the gang. From then until it starts the gang's nodes are held from the
start of each cycle (``hold_filled``), so jobs earlier in the order (the requeued fill
among them) cannot take the free GPUs there. Another team's job entitled to reclaim GPUs
by preemption (``Policy.may_preempt_for``: fairshare's jobs within their guarantee) comes
first, as it did before the fill: it may claim GPUs being released there
(``scheduler.preemption``), and the gang then waits for, or makes room for, that many more.
Because of its fill alone, the gang's start slips by at most the grace period. A
non-preemptible backfill job is never preempted; it ends by its time limit. Nor is any
fill under a policy that never preempts (``fifo``, ``static``), which therefore gets
classic backfill only.

Fill jobs are also victims of an ordinary reclaim before their minimum run time
(``scheduler.preemption``): they hold the GPUs only until these are wanted.

GPUs already on their way out of other runs on the gang's nodes (``coming_for``:
terminating, or victims chosen in this cycle) count as the gang's: fill stops, and the
fill is preempted, once free plus fill plus outgoing GPUs cover the gang. A gang beyond its
team's guarantee may make them so by preemption (``scheduler.preemption.make_room``); its
victims' nodes are then held like the nodes of a gang whose fill is being preempted.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator

from allotment.domain.cluster import GpuType
from allotment.domain.workload import JobId, RunningJob, Workload
from allotment.scheduler.decisions import Decisions, Preempt, Reservation
from allotment.scheduler.placement import Placement, domain_of
from allotment.scheduler.policy import Policy
from allotment.scheduler.snapshot import Snapshot


def reserve(sc: Snapshot, w: Workload) -> Reservation | None:
    """Hold GPUs for ``w``; None when every node it could use is already held."""
    cluster = sc.state.cluster
    nodes = cluster.nodes
    t = w.gpu_type
    previous = sc.state.last_reservations.get(w.id)
    fill = sc.fill_on.get(w.id, {})
    if sc.single_node(w):
        node = None
        if previous is not None and previous[0] == "node":
            p = previous[1]
            if p not in sc.held and nodes[p].gpu_type == t and nodes[p].gpus >= w.gpus:
                node = p
        if node is None:
            best: tuple[int, int] | None = None  # (-avail, node)
            levels = sc.levels[t]  # unheld nodes by free GPUs, most free first
            for f in range(len(levels) - 1, 0, -1):
                if not levels[f]:
                    continue
                if f >= w.gpus:  # every node with f free GPUs has at least f GPUs
                    best = (-f, min(levels[f]))
                    break
                fitting = [i for i in levels[f] if nodes[i].gpus >= w.gpus]
                if fitting:
                    best = (-f, min(fitting))
                    break
            if best is None:  # an unheld node with no free GPU (in no level: a scan)
                no_free = [i for i in cluster.nodes_by_type[t] if sc.free[i] == 0
                           and i not in sc.held and nodes[i].gpus >= w.gpus]
                if no_free:
                    best = (0, min(no_free))
            for i, g in fill.items():
                if i not in sc.held and nodes[i].gpus >= w.gpus:
                    cand = (-(sc.free[i] + g), i)
                    if best is None or cand < best:
                        best = cand
            node = None if best is None else best[1]
        if node is None:
            return None
        sc.hold([node])
        return Reservation(t, w.id, ("node", node), (node,))
    # per domain, from the snapshot's totals (no scan of every node): the GPUs of its
    # unheld nodes (capacity) and what is available there (free GPUs plus this gang's fill)
    held_cap = sc.held_capacity(t)
    state = sc.state
    for level in ("rack", "pod", "type"):
        if level == "type":
            full = {0: state.type_capacity[t]}
            free = {0: sc.type_free[t]}
        else:
            if state.largest_domain[t][level] < w.gpus:
                continue  # no domain of this level holds the gang, held nodes or not
            full, free = state.domain_capacity[t][level], sc.domain_free[t][level]
        taken = held_cap[level]
        big = [d for d, c in full.items() if c - taken.get(d, 0) >= w.gpus]
        if not big:
            continue
        extra: dict[int, int] = {}  # this gang's fill GPUs on unheld nodes, per domain
        for i, g in fill.items():
            if i not in sc.held:
                d = domain_of(nodes[i], level)
                extra[d] = extra.get(d, 0) + g
        if previous is not None and previous[0] == level and previous[1] in big:
            domain = previous[1]
        else:
            domain = min(big, key=lambda d: (-(free[d] + extra.get(d, 0)), d))
        if level == "type":
            if free[0] + extra.get(0, 0) <= w.gpus:
                # the gang takes every node with GPUs available (their order is moot)
                return Reservation(t, w.id, (level, domain),
                                   tuple(sorted(sc.hold_available(t, fill))))
            members: Iterable[int] = _most_available(sc, t, fill)
        else:
            members = sorted(
                (i for i in state.domains[t][level][domain]
                 if i not in sc.held and sc.free[i] + fill.get(i, 0)),
                key=lambda i: (-(sc.free[i] + fill.get(i, 0)), i),
            )
        held, total = [], 0
        for i in members:
            if total >= w.gpus:
                break
            held.append(i)
            total += sc.free[i] + fill.get(i, 0)
        sc.hold(held)
        return Reservation(t, w.id, (level, domain), tuple(sorted(held)))
    return None


def _most_available(sc: Snapshot, t: GpuType, fill: dict[int, int]) -> Iterator[int]:
    """The unheld nodes of type ``t`` with GPUs available to the gang (free, plus its own
    fill's), most available first (ties: lowest index), read from the snapshot's nodes by
    free GPUs one level at a time, so that only as many nodes are looked at as are taken."""
    levels = sc.levels[t]
    by_avail: dict[int, list[int]] = {}
    for i, g in fill.items():
        if i not in sc.held and sc.state.cluster.nodes[i].gpu_type == t:
            by_avail.setdefault(sc.free[i] + g, []).append(i)
    for f in range(len(levels) - 1, 0, -1):
        here = [i for i in levels[f] if i not in fill] if fill else list(levels[f])
        here.extend(by_avail.get(f, ()))
        here.sort()
        yield from here


def _gang_workload(sc: Snapshot, gang: JobId) -> Workload | None:
    state = sc.state
    key = state.pending_index.get(gang)
    if key is None:
        return None
    return next((w for w in state.buckets[key].jobs if w.id == gang), None)


def _avail(sc: Snapshot, gang: JobId, nodes: tuple[int, ...]) -> int:
    """Free GPUs on ``nodes`` plus those of ``gang``'s own fill there."""
    fill = sc.fill_on.get(gang)
    free = sum(map(sc.free.__getitem__, nodes))
    if not fill:
        return free
    return free + sum(map(fill.get, nodes, itertools.repeat(0)))


def hold_filled(sc: Snapshot) -> None:
    """Cycle step 1b: hold the nodes of every waiting gang whose fill is being preempted,
    before any job is considered (the gang takes them back when its turn comes)."""
    for gang, nodes in sc.state.fill_nodes.items():
        w = _gang_workload(sc, gang)
        if w is None:
            continue
        mine = tuple(i for i in nodes if i not in sc.held)
        sc.hold(mine)
        sc.preheld.update(mine)
        _track(sc, w, mine, sc.state.last_reservations.get(gang, ("node", mine[0]) if mine
                                                              else ("type", 0)))


def coming_for(sc: Snapshot, gang: JobId, nodes: Iterable[int]) -> int:
    """GPUs on ``nodes`` on their way out of jobs other than ``gang``'s own fill
    (terminating, or chosen as victims in this cycle): the gang's once they are free."""
    incoming = sc.incoming
    if not incoming:
        return 0
    here = set(nodes)
    total = sum(g for i, g in incoming.items() if i in here)
    if total and gang in sc.fill_on:
        running = sc.state.running
        for j, g in sc.state.fill.items():
            if g == gang and (j in sc.doomed or running[j].terminating_since is not None):
                total -= sum(gpus for n, gpus in running[j].placement if n in here)
    return total


def _track(sc: Snapshot, w: Workload, nodes: tuple[int, ...], domain: tuple[str, int]) -> None:
    sc.held_for[w.id] = nodes
    sc.fill_room.pop(w.id, None)
    sc.gangs[w.id] = w
    sc.gang_domain[w.id] = domain
    sc.fill_open[w.id] = _avail(sc, w.id, nodes) + coming_for(sc, w.id, nodes) < w.gpus


def take_back(sc: Snapshot, w: Workload) -> tuple[int, ...] | None:
    """The nodes held for ``w`` since the start of this cycle, released for its own turn."""
    nodes = sc.held_for.pop(w.id, None)
    if nodes is not None and nodes and next(iter(nodes)) in sc.preheld:
        sc.preheld.difference_update(nodes)
        sc.unhold(tuple(i for i in nodes if i not in sc.claimed))
        sc.fill_open.pop(w.id, None)
    elif nodes is not None:  # reserved earlier in this cycle (a second head of its queue)
        sc.held_for[w.id] = nodes
        return None
    return nodes


def place_within(sc: Snapshot, w: Workload, nodes: tuple[int, ...]) -> Placement | None:
    """``w`` on the free GPUs of ``nodes`` only: one node, the fullest that fits (ties:
    lowest index); across nodes, most free first. None if they do not hold it."""
    free = sc.free
    if sc.single_node(w):
        fits = [(free[i], i) for i in nodes if free[i] >= w.gpus]
        return None if not fits else ((min(fits)[1], w.gpus),)
    if sum(free[i] for i in nodes) < w.gpus:
        return None
    out, need = [], w.gpus
    for i in sorted(nodes, key=lambda i: (-free[i], i)):
        if need <= 0:
            break
        take = min(free[i], need)
        if take:
            out.append((i, take))
            need -= take
    return tuple(sorted(out))


def track_reservation(sc: Snapshot, r: Reservation, w: Workload) -> None:
    """Record a reservation made in this cycle, so that later jobs may fill it."""
    _track(sc, w, r.nodes, r.domain)


def domain_nodes(sc: Snapshot, t: GpuType, domain: tuple[str, int]) -> set[int] | frozenset[int]:
    """The nodes of GPU type ``t`` in a reservation's domain ``(level, id)``."""
    level, d = domain
    if level == "node":
        return {d}
    if level == "type":  # (its one domain is 0)
        return sc.state.cluster.type_node_set(t) if d == 0 else frozenset()
    return set(sc.state.domains[t][level].get(d, ()))


def expected_start(sc: Snapshot, gang: JobId) -> float:
    """When ``gang`` is expected to be able to start, from declared time limits: the first
    time at which the free GPUs of its domain, its fill's and those of the runs there that
    end by then (start + time limit) cover the gang; inf when that needs a run without a
    time limit. Cached per cycle."""
    cached = sc.expected.get(gang)
    if cached is not None:
        return cached
    w = sc.gangs[gang]
    level, d = sc.gang_domain[gang]
    members = domain_nodes(sc, w.gpu_type, (level, d))
    fill = sc.fill_on.get(gang, {})
    avail = sum(map(sc.free.__getitem__, members)) + sum(
        g for i, g in fill.items() if i in members)
    ends: list[tuple[float, int]] = []
    mine = {j for j, g in sc.state.fill.items() if g == gang}
    whole = level == "type" and d == 0  # a run of the type is wholly on its nodes
    for job in sc.state.running.values():
        # (a run without a time limit ends at inf: it only makes the start inf when the
        # runs with one fall short, which the end of the loop below tells anyway)
        limit = job.workload.estimate_s
        if limit is None or job.workload.gpu_type != w.gpu_type or job.workload.id in mine:
            continue
        gpus = job.workload.gpus if whole else sum(
            g for n, g in job.placement if n in members)
        if gpus:
            ends.append((job.segment_start + limit, gpus))
    ends.sort()
    start = sc.now if avail >= w.gpus else math.inf
    for end, gpus in ends:
        if avail >= w.gpus:
            break
        avail += gpus
        start = max(end, sc.now)
    if avail < w.gpus:
        start = math.inf
    sc.expected[gang] = start
    return start


def fill_job(sc: Snapshot, policy: Policy, w: Workload) -> tuple[Placement, JobId] | None:
    """Where blocked ``w`` may run as fill of a gang's held GPUs (module docstring), and
    for which gang; None if nowhere."""
    for gang, nodes in sc.held_for.items():
        g = sc.gangs[gang]
        if not sc.fill_open.get(gang) or g.gpu_type != w.gpu_type:
            continue
        room = sc.fill_room.get(gang)
        if room is None:  # (free GPUs, largest free block) there, until fill changes it
            here = list(map(sc.free.__getitem__, nodes))
            room = sc.fill_room[gang] = (sum(here), max(here, default=0))
        if room[0] < w.gpus or (sc.single_node(w) and room[1] < w.gpus):
            continue
        preemptible = policy.preempts and w.preemptible and (
            not policy.has_guarantees or w.team == g.team or sc.borrowed_after(w) > 0)
        if not preemptible and (w.estimate_s is None
                                or sc.now + w.estimate_s > expected_start(sc, gang)):
            continue
        placement = place_within(sc, w, nodes)
        if placement is not None:
            sc.fill_room.pop(gang, None)
            per = sc.fill_on.setdefault(gang, {})
            for node, gpus in placement:
                per[node] = per.get(node, 0) + gpus
            return placement, gang
    return None


def fill_cost(job: RunningJob, now: float) -> tuple[float, float, int]:
    """Order of fill preemption, lowest first: lost GPU-seconds, run so far, sequence."""
    lost = (now - job.last_checkpoint(now)) * job.workload.gpus
    return (lost, now - job.segment_start, job.workload.seq)


def reclaim_fill(sc: Snapshot, policy: Policy, w: Workload, nodes: tuple[int, ...],
                 d: Decisions) -> None:
    """If ``w`` could start on ``nodes`` but for its fill, preempt that fill (module
    docstring) and close the nodes to more fill."""
    if sc.fill_open.get(w.id, True) or w.id not in sc.fill_on or not policy.preempts:
        return
    running = sc.state.running
    here = set(nodes)
    fill = [running[j] for j, g in sc.state.fill.items() if g == w.id]
    covered = sum(sc.free[i] for i in nodes) + coming_for(sc, w.id, nodes) + sum(
        gpus for job in fill if job.terminating_since is not None or job.workload.id in sc.doomed
        for n, gpus in job.placement if n in here)
    victims = sorted(
        (job for job in fill if job.terminating_since is None and job.workload.preemptible
         and job.workload.id not in sc.doomed and any(n in here for n, _ in job.placement)),
        key=lambda job: fill_cost(job, sc.now))
    for job in victims:
        if covered >= w.gpus:
            break
        covered += sum(gpus for n, gpus in job.placement if n in here)
        sc.doom(job)
        d.preempts.append(Preempt(job.workload.id, w.id,
                                  f"fill of GPUs held for {w.id}, which can start now "
                                  f"({policy.name})"))
