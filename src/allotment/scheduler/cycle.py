"""One scheduling cycle: ``decide(state, policy, now) -> Decisions``. Pure: the state is
read, never changed; the same function runs in the simulator, the service and the tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from allotment.domain.cluster import GpuType
from allotment.domain.workload import JobId, Workload
from allotment.scheduler import launch
from allotment.scheduler.decisions import Admit, Decisions, Reject, Reservation
from allotment.scheduler.heads import heads
from allotment.scheduler.policy import OrderKey, Policy
from allotment.scheduler.preemption import make_room, plan_reclaim
from allotment.scheduler.reservation import (
    fill_job,
    hold_filled,
    place_within,
    reclaim_fill,
    reserve,
    take_back,
    track_reservation,
)
from allotment.scheduler.snapshot import Snapshot
from allotment.scheduler.state import ClusterState


def _physical_reason(sc: Snapshot, w: Workload) -> str:
    """Why ``w`` does not fit, with the free GPUs that launch reservations hold (which it
    may not use), so that free GPUs it cannot have are not a mystery."""
    t = w.gpu_type
    if sc.single_node(w):
        why = (f"waiting for {w.gpus} free {t} GPUs on one node "
               f"(largest free block now: {sc.max_fit(t)})")
    else:
        why = f"waiting for {w.gpus} free {t} GPUs (free now: {sc.unheld_free(t)})"
    held = {name: sum(sc.free[i] for i in nodes) for name, nodes in sc.launch_held.items()
            if sc.state.launches[name].gpu_type == t}
    if any(held.values()):
        why += "; " + ", ".join(f"{n} free {t} GPUs held for launch reservation {name}"
                                for name, n in sorted(held.items()) if n)
    return why


def _passed_over(sc: Snapshot, passive: Callable[[Workload], bool]) -> Callable[[Workload], bool]:
    """Whether the cycle would pass ``w`` over at once, were it a head now: it can only
    start where it fits, does not fit, names no launch reservation, no GPUs are held for a
    gang that it could fill, and it was not preempted at this instant (step 3a). (For a
    cycle with no GPUs held for a launch reservation: nothing else may place it.)"""
    requeued, now = sc.state.requeued_at, sc.now

    def test(w: Workload) -> bool:
        return (w.reservation is None and not sc.held_for and not sc.fits(w) and passive(w)
                and not (requeued and requeued.get(w.id) == now))

    return test


def decide(state: ClusterState, policy: Policy, now: float, explain: bool = False,
           reasons: bool = True, hint: dict[GpuType, list[JobId]] | None = None) -> Decisions:
    """Admit, preempt, reserve and reject for one cycle at time ``now``; with ``explain``,
    also the queue order (``Decisions.queue``) that reasons and positions are read from
    (``hint``, the last cycle's, makes it faster to sort, never different).
    Without ``reasons`` (a replay that nobody watches), ``Decisions.waiting`` stays empty:
    the decisions are the same, only the words are not written."""
    reasons = reasons or explain
    d = Decisions()
    # 1. snapshot: a working copy that records this cycle's own decisions
    sc = Snapshot(state, now)
    if state.launches:  # 1a. launch reservations: their nodes held, freed by their start
        launch.prepare(sc, policy, d)
    if state.fill_nodes:  # 1b. a gang whose fill is being preempted keeps its GPUs
        hold_filled(sc)
    # 2. heads: the first job of every (team, GPU type, gang size) queue; jobs behind a
    #    head of the same queue are blocked whenever the head is (same team, same size)
    # 3. order: lowest key first, each key as it is now that earlier admissions of the
    #    cycle changed fair-share values (``heads``)
    # heads that can only start where they fit (``Policy.passive_test``): one that does
    # not fit is passed over at once when no reason is written for it; one that does not
    # fit at the start never will in this cycle (free GPUs only shrink as it admits, where
    # no GPUs are held for a gang or a launch), and its queue is left out of the heads
    passive = None if reasons else policy.passive_test(sc)
    skip = None
    if passive is not None and not sc.held_for and not sc.launch_held:
        skip = _passed_over(sc, passive)  # (the same test for the heads and below)
    queue = heads(state, sc, policy, skip)
    reserved: set[object] = set()
    # the policy's answers asked of every head, looked up once (a policy is a plain class)
    never_fits, quota_block = policy.never_fits, policy.quota_block
    preempts, may_preempt_for = policy.preempts, policy.may_preempt_for
    reservation_scope, may_reserve = policy.reservation_scope, policy.may_reserve
    reserve_wakeup = policy.reserve_wakeup
    while (head := queue.pop()) is not None:
        bucket, pos = head
        w = bucket.jobs[pos]
        # 3a. a job preempted at this instant with no grace period waits for the next
        #     instant, its queue behind it: the job it made room for goes first
        if state.requeued_at and state.requeued_at.get(w.id) == now:
            d.wake(math.nextafter(now, math.inf))
            if reasons:
                d.waiting[w.id] = ("preempted at this instant with no grace period: it waits "
                                   "for the next cycle, so that the job it made room for "
                                   "goes first")
            continue
        if skip is not None and skip(w):
            continue  # (steps 4-7 would do nothing for it)
        # 4a. a job naming a launch reservation runs on its nodes only (``launch``)
        if w.reservation is not None:
            why = launch.ended(sc, w)
            if why is not None:
                d.rejects.extend(Reject(j.id, why) for j in bucket.jobs[pos:])
                continue
            placement, why = launch.admit_reserved(sc, w, d, policy.config.grace_s)
            if placement is not None:
                d.admits.append(Admit(w.id, placement))
                sc.admit(w, placement)
                queue.push_next(bucket, pos)
            elif reasons:
                d.waiting[w.id] = why
            continue
        # 4. reject what can never run under this policy (the whole queue shares the size)
        never = never_fits(sc, w)
        if never is not None:
            d.rejects.extend(Reject(j.id, never) for j in bucket.jobs[pos:])
            continue
        # 5. nominate: quota first, then a placement on unheld free GPUs (a gang first on
        #    the GPUs held for it since the start of the cycle); else, as fill of GPUs
        #    held for a gang (``reservation``)
        own = take_back(sc, w) if sc.held_for else None
        block = quota_block(sc, w)
        physical = False
        if block is None:
            placement = place_within(sc, w, own) if own else None
            placement = placement or sc.place(w)
            fill = None
            if placement is None and sc.launch_held:
                placement = launch.fill(sc, policy, w)
            if placement is None and sc.held_for:
                fill = fill_job(sc, policy, w)
            if placement is not None or fill is not None:
                borrowed = sc.borrowed_after(w) if policy.has_guarantees else 0
                if fill is not None:
                    placement = fill[0]
                assert placement is not None
                d.admits.append(Admit(w.id, placement, borrowed,
                                      None if fill is None else fill[1]))
                sc.admit(w, placement)
                queue.push_next(bucket, pos)
                continue
            physical = True
            block = _physical_reason(sc, w) if reasons else ""
        elif not sc.fits(w):
            physical = True  # no room either: holding GPUs for it is still the remedy
        # 6. preempt: reclaim lent GPUs (or lower-queue GPUs) for a job entitled to them
        #    (the next job of the same queue may need GPUs reclaimed too)
        #    (it does not take the free GPUs held for a gang whose fill or victims are
        #    leaving: it preempts, or claims GPUs being released, instead)
        if preempts and may_preempt_for(sc, w) and plan_reclaim(sc, policy, w, d):
            if reasons:
                d.waiting[w.id] = f"{block}; reclaiming GPUs by preemption"
            queue.push_next(bucket, pos)
            continue
        # 7. reserve: hold GPUs for the first physically blocked gang of each reservation
        #    scope (a GPU type; fairshare: also each team within its guarantee), so that
        #    backfill (every later job) cannot delay it
        scope = reservation_scope(sc, w) if physical else None
        if physical and scope not in reserved:
            reserving = may_reserve(sc, w)
            held = reserve(sc, w) if reserving else None
            if held is not None:
                if own and w.id in state.fill_nodes:
                    # a gang whose fill or victims are on their way out keeps their nodes
                    coming = tuple(i for i in own if i not in sc.held and sc.incoming.get(i))
                    if coming:
                        sc.hold(coming)
                        held = Reservation(held.gpu_type, held.job_id, held.domain,
                                           tuple(sorted({*held.nodes, *coming})))
                # 7a. a gang beyond its team's guarantee completes its GPUs by preemption
                #     where the policy allows it (``preemption.make_room``)
                held = make_room(sc, policy, w, held, d)
                reserved.add(scope)
                d.reservations.append(held)
                block = f"{block}; GPUs reserved for it"
                # 7b. fill: later jobs may use the held GPUs until the gang could start
                #     without them; then the fill is preempted (``reservation``)
                track_reservation(sc, held, w)
                reclaim_fill(sc, policy, w, held.nodes, d)
            elif not reserving:
                wake = reserve_wakeup(sc, w)
                if wake is not None and wake > now:
                    d.wake(wake)
        # 8. requeue: the head keeps its place and its reason; its queue waits (reasons
        #    are written out only when asked for: the simulator never reads them)
        if reasons:
            d.waiting[w.id] = block or ""
    if explain:
        d.queue = queue_order(sc, state, policy, d, hint)
    return d


def queue_order(sc: Snapshot, state: ClusterState, policy: Policy, d: Decisions,
                hint: dict[GpuType, list[JobId]] | None = None) -> dict[GpuType, list[JobId]]:
    """Every job still pending after ``d``, per GPU type, by the policy's order key in the
    cycle's final snapshot (what the next cycle starts from). The jobs are laid out in the
    ``hint``'s order before sorting (new ones last): from one cycle to the next few keys
    move, and a nearly sorted list sorts in close to linear time."""
    gone = {a.job_id for a in d.admits} | {r.job_id for r in d.rejects}
    touched = {state.pending_index[j] for j in gone}  # the queues they leave
    attained = state.pending_attained
    keyed: dict[GpuType, dict[JobId, tuple[OrderKey, JobId]]] = {}
    for key, bucket in state.buckets.items():
        jobs = bucket.jobs
        if key in touched:
            jobs = [w for w in jobs if w.id not in gone]
        if jobs:
            keys = policy.bucket_order_keys(sc, jobs, attained)
            rows = keyed.setdefault(jobs[0].gpu_type, {})
            for k, w in zip(keys, jobs, strict=True):
                rows[w.id] = (k, w.id)
    out: dict[GpuType, list[JobId]] = {}
    for t in sorted(keyed):
        rows = keyed[t]
        before = (hint or {}).get(t, ())
        laid = [rows.pop(j) for j in before if j in rows]
        laid.extend(rows.values())
        laid.sort()
        out[t] = [jid for _, jid in laid]
    return out
