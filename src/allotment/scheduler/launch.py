"""Launch reservations in a cycle (``domain.reservation``): the reserved GPUs are free *by*
the start, not earlier than needed, and lent meanwhile so that they do not idle.

For a reservation R of N GPUs over [S, E), grace period g and lead l
(``SchedulerConfig.grace_s``, ``reservation_lead_s``):
  - before S - g - l: nothing; R's GPUs are ordinary capacity.
  - from S - g - l (prepare): nodes are chosen for R once (sticky: kept in the scheduler's
    memory) among the nodes of its type that no other open reservation has: the smallest
    topology level (one node, a rack, a pod, all nodes of the type) with a domain holding N
    GPUs; at that level the domain whose N GPUs are cheapest to free (ties: lowest id), and
    in it its nodes, cheapest first, until they hold N GPUs (at the type level: whole pods,
    cheapest first, so as to span as few as it can). Cost of a node or a set of nodes:
        (GPUs of jobs there that do not borrow or are not preemptible, GPUs in use)
    From then until E the nodes are held: other jobs start there only as
      - backfill (before S): a declared time limit that ends by S, or
      - preemptible fill (before S - g, or in the window while no job of R waits): any
        preemptible job, under every policy (it is preempted by R, not by the policy).
  - from S - g (free): every other job on R's nodes that would still run at S (no time
    limit ending by S, or past it) is preempted, least lost work first (``fill_cost``),
    until the free GPUs there plus those on their way out cover N: their grace ends at S.
  - from S to E (window): jobs naming R start on R's nodes only, up to N GPUs at a time,
    without a quota check (R was approved), and are never victims of other jobs; when one
    does not fit, the fill on R's nodes is preempted, least lost work first, until it does
    (not within g of E: the window would be over first).
  - from E: R's nodes are ordinary capacity again; its jobs still running go on as
    ordinary jobs; jobs naming R that still wait are rejected.
R's preemptions happen under every policy (an approved booking, not a policy's choice) and
ignore the minimum run time, like those of fill.
"""

from __future__ import annotations

import time

from allotment.domain.reservation import LaunchReservation
from allotment.domain.workload import JobId, RunningJob, Workload
from allotment.scheduler.decisions import Decisions, Preempt
from allotment.scheduler.placement import Placement
from allotment.scheduler.policy import Policy
from allotment.scheduler.reservation import fill_cost, place_within
from allotment.scheduler.snapshot import Snapshot


def when(t: float) -> str:
    """A time in words: epoch seconds (the service's clock) as UTC, a simulation's trace
    seconds as they are."""
    if t >= 1e9:
        return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))
    return f"t={t:g} s"


def launch_job_id(name: str) -> JobId:
    """The ``for_job`` of a preemption made for reservation ``name``."""
    return JobId(f"reservation:{name}")


def prepare(sc: Snapshot, policy: Policy, d: Decisions) -> None:
    """Cycle step 1a: choose and hold the nodes of every reservation being prepared or in
    its window, free them by the start, and ask for the next cycle a reservation needs."""
    state = sc.state
    now = sc.now
    grace = policy.config.grace_s
    lead = policy.config.reservation_lead_s
    taken = {i for nodes in state.launch_nodes.values() for i in nodes}
    for r in sorted(state.launches.values(), key=lambda r: (r.start, r.name)):
        if now >= r.end:
            continue
        prepare_at = r.start - grace - lead
        if now < prepare_at:
            d.wake(prepare_at)
            continue
        nodes = state.launch_nodes.get(r.name)
        if nodes is None:
            nodes = choose_nodes(sc, r, taken)
            taken.update(nodes)
            d.launch_nodes[r.name] = nodes
        sc.hold(nodes)
        sc.launch_held[r.name] = nodes
        if now < r.start - grace:
            d.wake(r.start - grace)
        elif now < r.start:
            _free_by_start(sc, r, nodes, d)
            d.wake(r.start)
        d.wake(r.end)
    for key, bucket in state.buckets.items():
        if key[3]:
            sc.launch_waiting[key[3]] = sc.launch_waiting.get(key[3], 0) + len(bucket.jobs)


def _node_costs(sc: Snapshot, r: LaunchReservation) -> dict[int, tuple[int, int]]:
    nodes = sc.state.cluster.nodes
    hard: dict[int, int] = {}
    for job in sc.state.running.values():
        w = job.workload
        if w.gpu_type != r.gpu_type or (w.preemptible and job.borrowed_gpus):
            continue
        for i, g in job.placement:
            hard[i] = hard.get(i, 0) + g
    return {i: (hard.get(i, 0), nodes[i].gpus - sc.free[i])
            for i in sc.state.cluster.nodes_by_type[r.gpu_type]}


def choose_nodes(sc: Snapshot, r: LaunchReservation, taken: set[int]) -> tuple[int, ...]:
    """R's nodes (module docstring); as many as there are when the type has too few."""
    state = sc.state
    nodes = state.cluster.nodes
    costs = {i: c for i, c in _node_costs(sc, r).items() if i not in taken}
    if not costs:
        return ()

    def pick(members: list[int]) -> tuple[tuple[int, int], list[int]] | None:
        out, total, hard, used = [], 0, 0, 0
        for i in sorted(members, key=lambda i: (costs[i], i)):
            if total >= r.gpus:
                break
            out.append(i)
            total += nodes[i].gpus
            hard += costs[i][0]
            used += costs[i][1]
        return ((hard, used), out) if total >= r.gpus else None

    single = [i for i in costs if nodes[i].gpus >= r.gpus]
    if single:
        best = min(single, key=lambda i: (costs[i], i))
        return (best,)
    index = state.domains[r.gpu_type]
    for level in ("rack", "pod"):
        found: list[tuple[tuple[int, int], int, list[int]]] = []
        for dom, members in sorted(index[level].items()):
            chosen = pick([i for i in members if i in costs])
            if chosen is not None:
                found.append((chosen[0], dom, chosen[1]))
        if found:
            return tuple(sorted(min(found, key=lambda f: (f[0], f[1]))[2]))
    # the whole type: whole pods, cheapest first (so that R spans as few pods as it can),
    # the cheapest nodes of the last one
    pods = []
    for dom, members in index["pod"].items():
        mine = sorted((i for i in members if i in costs), key=lambda i: (costs[i], i))
        if mine:
            cost = (sum(costs[i][0] for i in mine), sum(costs[i][1] for i in mine))
            pods.append((cost, dom, mine))
    out, total = [], 0
    for _, _, mine in sorted(pods):
        for i in mine:
            if total >= r.gpus:
                break
            out.append(i)
            total += nodes[i].gpus
    return tuple(sorted(out))


def _gpus_on(job: RunningJob, here: set[int]) -> int:
    return sum(g for n, g in job.placement if n in here)


def _preempt(sc: Snapshot, job: RunningJob, r: LaunchReservation, d: Decisions,
             why: str) -> None:
    sc.doom(job)
    d.preempts.append(Preempt(job.workload.id, launch_job_id(r.name), why))


def _others(sc: Snapshot, r: LaunchReservation, here: set[int]) -> list[RunningJob]:
    """Jobs on ``here`` that are not R's, still running, not yet chosen as victims."""
    return [job for job in sc.state.running.values()
            if job.workload.reservation != r.name and job.terminating_since is None
            and job.workload.id not in sc.doomed and _gpus_on(job, here)]


def _free_by_start(sc: Snapshot, r: LaunchReservation, nodes: tuple[int, ...],
                   d: Decisions) -> None:
    """From S - g: preempt what would still run on R's nodes at S, until N are covered."""
    here = set(nodes)
    now = sc.now
    covered = sum(sc.free[i] for i in nodes)
    victims = []
    for job in sc.state.running.values():
        gpus = _gpus_on(job, here)
        if not gpus:
            continue
        w = job.workload
        limit = w.estimate_s
        ends_by_start = limit is not None and now < job.segment_start + limit <= r.start
        if (w.reservation == r.name or job.terminating_since is not None
                or w.id in sc.doomed or ends_by_start):
            covered += gpus
        else:
            victims.append(job)
    victims.sort(key=lambda job: fill_cost(job, now))
    for job in victims:
        if covered >= r.gpus:
            break
        covered += _gpus_on(job, here)
        _preempt(sc, job, r, d, f"reservation {r.name} of {r.team} starts at "
                                f"{when(r.start)}; its GPUs must be free by then")


def is_protected(sc: Snapshot, job: RunningJob) -> bool:
    """A job running in its reservation's window is never another job's victim."""
    name = job.workload.reservation
    if name is None:
        return False
    r = sc.state.launches.get(name)
    return r is not None and sc.now < r.end


def admit_reserved(sc: Snapshot, w: Workload, d: Decisions, grace_s: float
                   ) -> tuple[Placement | None, str]:
    """A job naming a reservation: where it starts now, else why not (and the fill
    preempted for it, unless the window ends before that fill's grace would). Rejections
    are the caller's: ``ended`` below."""
    assert w.reservation is not None
    r = sc.state.launches[w.reservation]
    if sc.now < r.start:
        return None, f"waits for reservation {r.name}, which starts at {when(r.start)}"
    nodes = sc.launch_held.get(r.name, ())
    used = sc.state.launch_used.get(r.name, 0) + sc.launch_admitted.get(r.name, 0)
    if used + w.gpus > r.gpus:
        return None, (f"reservation {r.name} has {r.gpus - used} of its {r.gpus} GPUs left "
                      f"(the rest run its other jobs)")
    placement = place_within(sc, w, nodes)
    if placement is not None:
        sc.launch_admitted[r.name] = sc.launch_admitted.get(r.name, 0) + w.gpus
        return placement, ""
    if sc.now + grace_s >= r.end:
        return None, (f"reservation {r.name} ends at {when(r.end)}, before GPUs lent as fill "
                      f"could be freed for it")
    here = set(nodes)
    incoming = sum(sc.incoming.get(i, 0) for i in nodes)
    have = sum(sc.free[i] for i in nodes) + incoming
    victims = sorted(_others(sc, r, here), key=lambda job: fill_cost(job, sc.now))
    if sc.single_node(w):
        best: tuple[tuple[float, int], int, list[RunningJob]] | None = None
        for i in sorted(nodes):
            room = sc.free[i] + sc.incoming.get(i, 0)
            picked, lost = [], 0.0
            for job in victims:
                if room >= w.gpus:
                    break
                g = _gpus_on(job, {i})
                if g:
                    picked.append(job)
                    room += g
                    lost += fill_cost(job, sc.now)[0]
            if room >= w.gpus and (best is None or (lost, len(picked)) < best[0]):
                best = ((lost, len(picked)), i, picked)
        chosen = [] if best is None else best[2]
    else:
        chosen = []
        for job in victims:
            if have >= w.gpus:
                break
            chosen.append(job)
            have += _gpus_on(job, here)
        if have < w.gpus:
            chosen = []
    for job in chosen:
        _preempt(sc, job, r, d, f"fill of GPUs reserved for {r.name}, which job {w.id} "
                                f"of {r.team} needs now")
    if chosen or incoming:
        return None, f"reservation {r.name}: its GPUs lent as fill are being freed for it"
    return None, f"reservation {r.name}: waiting for {w.gpus} free GPUs on its nodes"


def ended(sc: Snapshot, w: Workload) -> str | None:
    """Why a job naming a reservation can never run in it now (it ended), else None."""
    assert w.reservation is not None
    r = sc.state.launches.get(w.reservation)
    if r is None:
        return f"reservation {w.reservation} is no longer known"
    if sc.now >= r.end:
        return f"reservation {r.name} ended at {when(r.end)}"
    return None


def fill(sc: Snapshot, policy: Policy, w: Workload) -> Placement | None:
    """Where ``w`` (naming no reservation) may run on reserved GPUs (module docstring)."""
    now = sc.now
    grace = policy.config.grace_s
    for name, nodes in sc.launch_held.items():
        r = sc.state.launches[name]
        if r.gpu_type != w.gpu_type:
            continue
        backfill = (now < r.start and w.estimate_s is not None
                    and now + w.estimate_s <= r.start)
        preemptible = w.preemptible and (
            now < r.start - grace or (now >= r.start and not sc.launch_waiting.get(name)))
        if not (backfill or preemptible):
            continue
        placement = place_within(sc, w, nodes)
        if placement is not None:
            return placement
    return None
