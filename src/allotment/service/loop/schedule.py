"""Schedule: take the API's changes from the inbox, run ``decide()`` when something changed
or a wake-up is due (``scheduler.apply.should_decide``: the simulator's rule), carry out its
decisions through the one apply path with the database as the sink, and explain every job
that still waits: its reason in words, its queue position (the order ``decide`` used,
stored once per GPU type) and an estimated start from declared time limits.

All of one cycle's decisions are committed in one transaction before anything is acted on
(reconcile launches and signals afterwards), with a bulk update and a bulk audit append;
explanations are written afterwards in their own short transaction, only where they
changed.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.orm import Session

from allotment.domain.jobstate import JobState
from allotment.domain.workload import JobId, RunningJob
from allotment.scheduler import apply as path
from allotment.scheduler.cycle import decide
from allotment.scheduler.decisions import Admit, Decisions, Preempt
from allotment.scheduler.estimate import Holding, Queued, estimate_starts
from allotment.scheduler.policy import Policy
from allotment.scheduler.state import ClusterState
from allotment.service.loop.budgets import credit_note, over_note
from allotment.service.loop.live import Live, save_memory
from allotment.service.loop.notify import notice
from allotment.service.loop.rows import Run, job_id
from allotment.storage import audit, inbox
from allotment.storage import jobs as jobrepo
from allotment.storage import queue as queue_rows
from allotment.storage.db import Database
from allotment.storage.models import JobRow


def take_inbox(db: Database, live: Live, now: float, obs: path.Observer) -> bool:
    """Apply the API's submissions and cancellations to the in-memory state. Returns True
    when the inventory, the org tree or the quotas changed (the state must be rebuilt).

    The notes and their jobs are read in a read-only transaction (on SQLite: beside the
    submits, not holding the write lock while thousands of them are applied); only the
    deletion of the notes read is a write, a short one."""
    with db.readers() as s:
        notes = inbox.read(s)
        if not notes:
            return False
        if any(n.kind == inbox.Change.RESHAPE for n in notes):
            return True
        submits = sorted({n.job_id for n in notes if n.job_id is not None
                          and n.kind == inbox.Change.SUBMIT})
        cancels = sorted({n.job_id for n in notes if n.job_id is not None
                          and n.kind == inbox.Change.CANCEL})
        briefs = {j.id: j for j in jobrepo.brief(s, submits, jobrepo.PENDING_COLUMNS)}
        full = {j.id: j for j in jobrepo.rows(s, cancels)}  # rare: whole rows
    for n in notes:
        if n.kind == inbox.Change.SUBMIT and n.job_id in briefs:
            _submitted(live, briefs[n.job_id], now, obs)
        elif n.kind == inbox.Change.CANCEL and n.job_id in full:
            _cancelled(live, full[n.job_id], now, obs)
    live.changed = True
    with db.session() as s:
        inbox.consume(s, notes)
    return False


def _known(live: Live, jid: int) -> bool:
    st = live.state
    return (jid in live.runs or jid in live.held or jid in live.unschedulable
            or (st is not None and job_id(jid) in st.pending_index))


def _submitted(live: Live, j: Any, now: float, obs: path.Observer) -> None:
    if j.state == JobState.PENDING and not _known(live, j.id):
        live.add_pending(j, now, obs)


def _cancelled(live: Live, j: JobRow, now: float, obs: path.Observer) -> None:
    st = live.state
    if j.state == JobState.CANCELLED and j.id not in live.runs:
        if st is not None and job_id(j.id) in st.pending_index:
            path.cancel(st, job_id(j.id), now, obs)
        live.forget_pending(j.id)
        return
    run = live.runs.get(j.id)
    if run is not None:
        run.refresh(j)
        if (run.state == JobState.TERMINATING and st is not None
                and job_id(j.id) in st.running):
            st.mark_terminating(job_id(j.id), run.terminating_since or now)


class DbSink:
    """The service's sink: each decision becomes a conditional row update (in the cycle's
    one transaction) and an audit entry; the in-memory runs follow."""

    def __init__(self, s: Session, live: Live, d: Decisions, grace_s: float) -> None:
        self.s = s
        self.live = live
        self.grace_s = grace_s
        want = [int(a.job_id) for a in d.admits] + [int(r.job_id) for r in d.rejects]
        self.pending = jobrepo.still_pending(s, want) if want else {}
        self.admits: list[dict[str, Any]] = []
        self.entries: list[audit.Entry] = []
        self.admitted: list[int] = []
        self.preempted: list[int] = []
        assert live.state is not None
        self.state = live.state

    def reject(self, job: JobId, reason: str, now: float) -> bool:
        jid = int(job)
        if jid not in self.pending or not jobrepo.reject(self.s, jid, now,
                                                         f"rejected: {reason}"):
            return False
        team = self.state.buckets[self.state.pending_index[job]].key[0]
        self.entries.append(audit.Entry(now, "scheduler", "job.rejected", f"job:{jid}",
                                        reason, {"team": team}, f"team:{team}"))
        self.live.explained.pop(jid, None)
        return True

    def preempt(self, p: Preempt, now: float) -> bool:
        jid = int(p.job_id)
        run = self.live.runs.get(jid)
        why = f"preempted: {p.reason}"
        if run is None or not jobrepo.begin_termination(self.s, jid, now, True, why):
            return False
        run.state, run.terminating_since, run.requeue, run.stop_reason = (
            JobState.TERMINATING, now, True, why)
        st = self.state
        for_team = (st.buckets[st.pending_index[p.for_job]].key[0]
                    if p.for_job in st.pending_index else None)
        for_job: int | str = int(p.for_job) if p.for_job.isdigit() else str(p.for_job)
        self.entries.append(audit.Entry(now, "scheduler", "job.preempted", f"job:{jid}",
                                        p.reason, {"for_job": for_job,
                                                   "for_team": for_team,
                                                   "grace_s": self.grace_s},
                                        f"team:{run.team}"))
        notice(self.s, now, "preemption", jid, run.team, run.user,
               f"{p.reason}; it stops after a {self.grace_s:g} s grace period and is requeued")
        self.preempted.append(jid)
        return True

    def admit(self, a: Admit, now: float) -> bool:
        jid = int(a.job_id)
        if jid not in self.pending:
            return False
        st = self.state
        nodes = st.cluster.nodes
        w = st.buckets[st.pending_index[a.job_id]].jobs[0]  # any job of the bucket: same
        placement: list[Any] = [[self.live.names[n], g] for n, g in a.placement]
        gpu_ids = {self.live.names[n]: self.live.take_ids(self.live.names[n], g, nodes[n].gpus)
                   for n, g in a.placement}
        borrowed = a.borrowed_gpus
        reason = "admitted" + (f", {borrowed} GPUs borrowed" if borrowed else "")
        attained = st.pending_attained[a.job_id]
        self.admits.append({"id": jid, "placement": placement, "gpu_ids": gpu_ids,
                            "borrowed_gpus": borrowed, "start_time": now, "reason": reason})
        self.entries.append(audit.Entry(
            now, "scheduler", "job.admitted", f"job:{jid}",
            f"placed on {placement}" + (f"; {borrowed} GPUs borrowed beyond the guarantee"
                                        if borrowed else ""),
            {"team": w.team, "gpus": sum(g for _, g in a.placement), "placement": placement,
             "borrowed_gpus": borrowed}, f"team:{w.team}"))
        attempt, first_start = self.pending[jid]
        self.admits[-1]["first_start"] = first_start if first_start is not None else now
        self.live.runs[jid] = Run(jid, attempt, JobState.STARTING, w.team, w.user or "",
                                  w.gpu_type,
                                  sum(g for _, g in a.placement), borrowed, placement,
                                  gpu_ids, now, attained, reason)
        self.live.explained.pop(jid, None)
        self.admitted.append(jid)
        return True

    def wake(self, t: float, job: RunningJob | None = None) -> None:
        if job is None:
            self.live.wake(t)
        else:
            jid = int(job.workload.id)
            self.live.wake(t, jid, self.live.runs[jid].attempt)

    def commit(self) -> None:
        """Write the cycle's admissions in bulk, and its audit entries."""
        jobrepo.admit_many(self.s, self.admits)
        audit.append_many(self.s, self.entries)


def schedule(db: Database, live: Live, policy: Policy, now: float,
             obs: path.Observer) -> tuple[Decisions | None, DbSink | None]:
    """One cycle if ``should_decide``; returns its decisions and sink (None: no cycle).
    The decisions and the memory after them (decayed usage, reservations) commit in one
    transaction, so a scheduler taking over continues from the memory of the decisions
    it finds."""
    st = live.state
    wake_due = live.wake_due(now)
    if st is None or not path.should_decide(st, live.changed, wake_due, now):
        if st is not None and not st.num_pending:
            live.changed = False
        return None, None
    d = decide(st, policy, now, explain=True, hint=live.queue)
    live.queue = d.queue
    with db.session() as s:
        sink = DbSink(s, live, d, policy.config.grace_s)
        path.apply(d, st, policy, sink, now, obs)
        sink.commit()
        save_memory(s, live, now)
    live.changed = False
    return d, sink


def explain(db: Database, live: Live, d: Decisions | None, now: float,
            rebuilt: bool) -> None:
    """Reason and estimated start of every waiting job, written only where they changed;
    the queue order of each GPU type. After a cycle, or after the state was (re)built.

    A queue whose signature (its team's context, its head, its waiting reasons and the
    jobs it holds) is as before is not looked at; one whose context, head or reasons
    changed is explained again; otherwise only its new jobs are explained."""
    if d is None and not rebuilt:
        _explain_unschedulable(db, live)
        return
    if rebuilt:
        live.bucket_sig.clear()
    new: dict[int, str] = {}
    for jid, until in live.held.items():
        new[jid] = f"held until {_iso(until)} after its GPUs were reclaimed for idling"
    for jid, why in live.unschedulable.items():
        new[jid] = why
    estimates: dict[int, float | None] = {jid: None for jid in live.estimated}
    order: dict[str, list[int]] = {}
    st = live.state
    if st is not None:
        waiting = d.waiting if d is not None else {}
        by_bucket: dict[object, list[tuple[JobId, str]]] = {}
        for jid_, why in waiting.items():
            key_ = st.pending_index.get(jid_)
            if key_ is not None:
                by_bucket.setdefault(key_, []).append((jid_, why))
        org = st.org
        contexts: dict[tuple[str, str, bool], str] = {}  # (team, type, borrowing?) -> words
        for key, bucket in st.buckets.items():
            head = bucket.jobs[0]
            t = head.gpu_type
            i = org.index[head.team]
            borrowing = st.usage[t][i] + head.gpus > org.guaranteed[t][i]
            ctx = contexts.get((head.team, t, borrowing))
            if ctx is None:
                ctx = (f"team {head.team} at {st.usage[t][i]}/{org.guaranteed[t][i]} "
                       f"guaranteed {t} GPUs")
                over = over_note(st, head.team, t, now)
                if over is not None:
                    ctx = f"{over}; {ctx}"
                elif st.ledger.credit_half_life_s is not None and borrowing:
                    credit = credit_note(st, head.team, now)
                    ctx = ctx if credit is None else f"{ctx}; {credit}"
                contexts[(head.team, t, borrowing)] = ctx
            waits = by_bucket.get(key)
            sig = (ctx, head.id, tuple(sorted(waits)) if waits else (), bucket.version)
            before = live.bucket_sig.get(key)
            if before == sig:
                continue  # the same jobs, explained in the same words
            live.bucket_sig[key] = sig
            same = before is not None and before[:3] == sig[:3]  # only jobs came or went
            for w in bucket.jobs:
                jid = int(w.id)
                if same and jid in live.explained:
                    continue
                if w.id in waiting:
                    new[jid] = f"{ctx}; {waiting[w.id]}"
                elif w.id != head.id and head.id in waiting:
                    new[jid] = (f"{ctx}; behind job {head.id} of the same team, GPU type and "
                                f"size, which waits: {waiting[head.id]}")
                else:
                    new[jid] = f"{ctx}; waiting for the next scheduling cycle"
        queue = d.queue if d is not None else {}
        cap = {str(t): st.cluster.capacity(t) for t in st.cluster.gpu_types}
        held: dict[tuple[str, float | None], int] = {}  # GPUs held per (type, end)
        for r in st.running.values():
            w = r.workload
            end = None if w.estimate_s is None else r.segment_start + w.estimate_s
            held[(w.gpu_type, end)] = held.get((w.gpu_type, end), 0) + w.gpus
        holdings = [Holding(t, g, end) for (t, end), g in held.items()]
        queued = []
        for t, ids in queue.items():
            order[str(t)] = [int(j) for j in ids]
            for queued_id in ids[:200]:
                key = st.pending_index[queued_id]
                w = st.buckets[key].jobs[0]
                queued.append(Queued(int(queued_id), str(t), w.gpus,
                                     _limit(st, queued_id, key)))
        estimates.update(estimate_starts(now, cap, holdings, queued))
    if live.blocked is not None:
        new = {jid: live.blocked for jid in [*new, *live.explained]}
    changed = []
    for jid in sorted({*new, *estimates}):
        old = live.explained.get(jid)
        reason = new.get(jid, old[0] if old is not None else "")
        value = (reason, estimates.get(jid))
        if value != old:
            changed.append((jid, value))
    with db.session() as s:
        jobrepo.explain_many(s, [{"id": jid, "reason": r, "estimated_start": e}
                                 for jid, (r, e) in changed])
        queue_rows.write(s, order)
    live.explained.update(changed)
    live.estimated = {jid for jid, e in estimates.items() if e is not None}


def _explain_unschedulable(db: Database, live: Live) -> None:
    """Without a cycle: the reasons of jobs that arrived and cannot run here now (say, one
    naming a reservation not approved yet), where they changed; nothing else is touched."""
    changed = [(jid, (why, None)) for jid, why in live.unschedulable.items()
               if live.explained.get(jid, ("", None))[0] != why]
    if not changed:
        return
    with db.session() as s:
        jobrepo.explain_many(s, [{"id": jid, "reason": r, "estimated_start": e}
                                 for jid, (r, e) in changed])
    live.explained.update(changed)


def _limit(st: ClusterState, job: JobId, key: object) -> float | None:
    for w in st.buckets[key].jobs:  # type: ignore[index]
        if w.id == job:
            return w.estimate_s
    return None


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))
