"""The live scheduler loop: the core ``decide()`` cycle on the wall clock, against the
database, acting through a backend.

Each tick, in order:
1. lease: only the holder of the ``scheduler`` lease acts (a second process waits);
2. accounting: integrate GPU-seconds used, borrowed, lent and idle since the last tick,
   with the jobs as they were over that interval (before this tick changes them);
3. reconcile: launch admitted runs, adopt live ones, record exits, signal terminating runs
   (SIGTERM, then SIGKILL after the grace period), requeue preempted ones;
4. idle: feed utilisation samples to the idle rule; warn, then reclaim;
5. disputes: escalate unanswered ones one level up the org tree;
6. schedule: build a ``ClusterState`` from the database, ``decide()``, commit admissions,
   preemptions, rejections and every waiting job's reason, position and estimated start;
7. reconcile again, so a decision is acted on in the tick that made it.
A decision is committed before it is acted on, and every action is idempotent for a run
``(job, attempt)``; so a crash anywhere never launches a job twice and never loses one.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from allotment.backends.base import Backend, LaunchSpec
from allotment.domain.cluster import GpuType
from allotment.domain.workload import JobId, Workload
from allotment.errors import BackendUnavailable
from allotment.policies import make_policy
from allotment.policies.idle import IdleTracker, _JobIdle
from allotment.scheduler.cycle import decide
from allotment.scheduler.estimate import Holding, Queued, estimate_starts
from allotment.scheduler.policy import SchedulerConfig
from allotment.scheduler.snapshot import Snapshot
from allotment.scheduler.state import ClusterState
from allotment.service.holdings import guarantees, holdings
from allotment.service.holdings import lent as lent_pro_rata
from allotment.storage import audit, governance, repo
from allotment.storage import jobs as jobrepo
from allotment.storage.db import Database
from allotment.storage.models import JobRow, Lease, OrgNodeRow, SampleRow

log = logging.getLogger("allotment.scheduler")


@dataclass(frozen=True, slots=True)
class LoopConfig:
    policy: str = "fairshare"
    tick_s: float = 2.0
    grace_s: float = 30.0
    min_runtime_s: float = 0.0
    idle_threshold_pct: float = 5.0
    idle_window_s: float = 1800.0
    idle_reclaim_after_s: float = 600.0
    idle_reclaim: bool = True
    idle_hold_s: float | None = None  # a reclaimed job may restart after this (default window)
    escalation_s: float = 2 * 86400.0
    lease_ttl_s: float = 10.0
    webhook_url: str | None = None


@dataclass(slots=True)
class TickReport:
    acted: bool = True
    admitted: list[int] = field(default_factory=list)
    preempted: list[int] = field(default_factory=list)
    finished: list[int] = field(default_factory=list)
    requeued: list[int] = field(default_factory=list)
    warned: list[int] = field(default_factory=list)
    reclaimed: list[int] = field(default_factory=list)
    escalated: list[int] = field(default_factory=list)
    backend_error: str | None = None


class SchedulerLoop:
    def __init__(self, db: Database, backend: Backend, config: LoopConfig | None = None,
                 clock: Callable[[], float] = time.time, holder: str | None = None) -> None:
        self.db = db
        self.backend = backend
        self.config = config or LoopConfig()
        self.clock = clock
        self._usage_at = float("-inf")
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.policy = make_policy(self.config.policy, SchedulerConfig(
            grace_s=self.config.grace_s, min_runtime_s=self.config.min_runtime_s))

    # -- the tick -----------------------------------------------------------------------
    def tick(self) -> TickReport:
        now = self.clock()
        report = TickReport()
        if not self._lease(now):
            report.acted = False
            return report
        self.account(now)
        try:
            self.reconcile(now, report)
            self.idle(now, report)
            self.escalate(now, report)
            self.schedule(now, report)
            self.reconcile(now, report)
            self._import_usage(now)
        except BackendUnavailable as exc:
            # decide nothing on a state we cannot see; every step is retried next tick
            report.backend_error = str(exc)
        self._health(now, report.backend_error)
        return report

    def _import_usage(self, now: float) -> None:
        """Backends with their own accounting (Slurm's sacct) are the truth for usage."""
        imp = getattr(self.backend, "import_usage", None)
        every = float(getattr(self.backend, "usage_every_s", 60.0))
        if imp is None or now - self._usage_at < every:
            return
        imp(self.db, now - 3 * 3600, now + 1, now)
        self._usage_at = now

    def _health(self, now: float, error: str | None) -> None:
        with self.db.session() as s:
            old = json.loads(repo.get_setting(s, "backend_health") or "{}")
            if old.get("error") == error and old.get("backend") == self.backend.name:
                return
            if error:
                log.error("backend %s unavailable: %s", self.backend.name, error)
                audit.append(s, now, "scheduler", "backend.unavailable", self.backend.name,
                             error, {})
            elif old.get("error"):
                audit.append(s, now, "scheduler", "backend.available", self.backend.name,
                             "reachable again", {})
            repo.set_setting(s, "backend_health", json.dumps(
                {"backend": self.backend.name, "state": "unavailable" if error else "ok",
                 "error": error, "since": now}))

    def run(self, stop: threading.Event) -> None:
        """Tick every ``tick_s`` until ``stop`` is set; an error in one tick is logged and
        the next tick retries (every step is idempotent)."""
        while not stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("scheduler tick failed; retrying next tick")
            stop.wait(self.config.tick_s)

    def _lease(self, now: float) -> bool:
        try:
            with self.db.session() as s:
                row = s.execute(select(Lease).where(Lease.role == "scheduler")
                                .with_for_update()).scalar()
                if row is None:
                    s.add(Lease(role="scheduler", holder=self.holder,
                                expires_at=now + self.config.lease_ttl_s))
                    return True
                if row.holder != self.holder and row.expires_at > now:
                    return False
                row.holder, row.expires_at = self.holder, now + self.config.lease_ttl_s
                return True
        except IntegrityError:
            return False

    def release(self) -> None:
        with self.db.session() as s:
            s.execute(delete(Lease).where(Lease.role == "scheduler", Lease.holder == self.holder))

    # -- 2. reconcile --------------------------------------------------------------------
    def reconcile(self, now: float, report: TickReport) -> None:
        with self.db.session() as s:
            rows = jobrepo.active(s)
        for job in rows:
            st = self.backend.status(job.id, job.attempts)
            if job.state == "starting" and st.state == "never":
                self.backend.launch(LaunchSpec(job.id, job.attempts, job.team, job.user,
                                               job.command, job.gpus, job.gpu_ids,
                                               job.gpu_type, job.borrowed_gpus))
                st = self.backend.status(job.id, job.attempts)
            if st.state in ("alive", "queued"):
                if job.state == "terminating":
                    self._signal(job, now)
                    continue
                run_id = job.external_id or self.backend.run_id(job.id, job.attempts)
                if st.state == "alive":
                    new = ("running", "running")
                else:  # handed over but waiting in the workload manager (or requeued by it)
                    new = ("starting", f"queued in {self.backend.name}: {st.detail}")
                if job.state == "starting" or job.external_id != run_id or (
                        st.state == "queued" and job.reason != new[1]):
                    with self.db.session() as s:
                        jobrepo.move(s, job.id, ("starting", "running"), state=new[0],
                                     reason=new[1], external_id=run_id)
                continue
            # the run has ended (exit code), vanished (gone) or never started after all
            with self.db.session() as s:
                self._ended(s, job, st.state, st.exit_code, now, report)

    def _signal(self, job: JobRow, now: float) -> None:
        since = job.terminating_since or now
        if job.term_sent_at is None:
            self.backend.terminate(job.id, job.attempts)
            with self.db.session() as s:
                jobrepo.move(s, job.id, "terminating", term_sent_at=now)
        elif not job.kill_sent and now - since >= self.config.grace_s:
            self.backend.kill(job.id, job.attempts)
            with self.db.session() as s:
                jobrepo.move(s, job.id, "terminating", kill_sent=True)

    def _ended(self, s: Session, job: JobRow, how: str, code: int | None, now: float,
               report: TickReport) -> None:
        held_s = max(0.0, now - (job.start_time or now))
        attained = job.attained_gpu_s + held_s * job.gpus
        if job.state == "terminating" and not job.requeue:
            jobrepo.move(s, job.id, "terminating", state="cancelled", end_time=now,
                         exit_code=code, attained_gpu_s=attained, reason=job.stop_reason)
            report.finished.append(job.id)
            return
        if job.state == "terminating" or how in ("gone", "never"):
            why = (job.stop_reason if job.state == "terminating" else
                   "its process vanished (killed outside Allotment or lost with its host)")
            moved = jobrepo.move(
                s, job.id, job.state, state="pending", attempts=job.attempts + 1,
                preemptions=job.preemptions + (job.state == "terminating"),
                attained_gpu_s=attained, placement=[], gpu_ids={}, borrowed_gpus=0,
                start_time=None, terminating_since=None, term_sent_at=None, kill_sent=False,
                idle_below_since=None, idle_last_time=None, idle_last_below=False,
                idle_warned_at=None, exit_code=code, external_id=None,
                reason=f"requeued: {why}")
            if moved:
                audit.append(s, now, "scheduler", "job.requeued", f"job:{job.id}", why,
                             {"team": job.team, "attempt": job.attempts + 1, "exit_code": code})
                report.requeued.append(job.id)
                if job.state == "terminating" and job.stop_reason.startswith("preempted"):
                    _count_preemption(s, job, now)
            return
        state = "succeeded" if code == 0 else "failed"
        jobrepo.move(s, job.id, job.state, state=state, end_time=now, exit_code=code,
                     attained_gpu_s=attained, reason=f"exited with code {code}")
        report.finished.append(job.id)

    # -- 3. idle ----------------------------------------------------------------------------
    def idle(self, now: float, report: TickReport) -> None:
        cfg = self.config
        with self.db.session() as s:
            running = [j for j in jobrepo.active(s) if j.state == "running"]
            windows = _idle_windows(list(s.execute(select(OrgNodeRow)).scalars()))
            pushed: dict[int, list[tuple[float, int, float]]] = {}
            for smp in s.execute(select(SampleRow)).scalars():
                pushed.setdefault(smp.job_id, []).append((smp.time, smp.gpu, smp.util_pct))
            s.execute(delete(SampleRow))
        for job in running:
            since = job.idle_last_time
            samples = [(x.time, x.gpu, x.util_pct) for x in
                       self.backend.samples(job.id, job.attempts, job.gpu_ids, since)]
            samples += [x for x in pushed.get(job.id, []) if since is None or x[0] > since]
            if not samples:
                continue
            by_time: dict[float, float] = {}
            for t, _, u in samples:
                by_time[t] = max(by_time.get(t, 0.0), u)
            window = windows.get(job.team) or cfg.idle_window_s
            tracker = IdleTracker(cfg.idle_threshold_pct, window, cfg.idle_reclaim_after_s,
                                  cfg.idle_reclaim)
            key = str(job.id)
            tracker.jobs[key] = _JobIdle(job.gpus, job.idle_below_since, job.idle_last_time,
                                         job.idle_last_below, job.idle_warned_at, False,
                                         job.idle_gpu_s)
            actions = []
            for t in sorted(by_time):
                actions += tracker.observe(key, job.gpus, t, by_time[t])
            st = tracker.jobs[key]
            with self.db.session() as s:
                jobrepo.move(s, job.id, "running", idle_below_since=st.below_since,
                             idle_last_time=st.last_time, idle_last_below=st.last_below,
                             idle_warned_at=st.warned_at, idle_gpu_s=st.idle_gpu_s,
                             last_util_pct=by_time[max(by_time)])
                for a in actions:
                    if a.kind == "warn":
                        audit.append(s, now, "scheduler", "job.idle_warned", f"job:{job.id}",
                                     a.reason, {"team": job.team, "gpus": job.gpus})
                        self._notify("idle_warning", job, a.reason)
                        report.warned.append(job.id)
                    elif a.kind == "reclaim":
                        hold = cfg.idle_hold_s if cfg.idle_hold_s is not None else (
                            windows.get(job.team) or cfg.idle_window_s)
                        if jobrepo.move(s, job.id, "running", state="terminating",
                                        terminating_since=now, requeue=True,
                                        hold_until=now + hold,
                                        stop_reason=f"reclaimed for idling: {a.reason}"):
                            audit.append(s, now, "scheduler", "job.reclaimed", f"job:{job.id}",
                                         a.reason, {"team": job.team, "gpus": job.gpus,
                                                    "hold_until": now + hold})
                            self._notify("idle_reclaim", job, a.reason)
                            report.reclaimed.append(job.id)

    def _notify(self, kind: str, job: JobRow, reason: str) -> None:
        msg = {"event": kind, "job_id": job.id, "team": job.team, "user": job.user,
               "reason": reason}
        log.warning("%s job %s of team %s: %s", kind, job.id, job.team, reason)
        url = self.config.webhook_url
        if url:
            try:
                req = urllib.request.Request(url, json.dumps(msg).encode(),
                                             {"Content-Type": "application/json"})
                urllib.request.urlopen(req, timeout=2).close()
            except Exception as exc:  # a webhook that is down must not stop scheduling
                log.warning("webhook %s failed: %s", url, exc)

    # -- 4. disputes ------------------------------------------------------------------------
    def escalate(self, now: float, report: TickReport) -> None:
        from allotment.storage.governance import escalate_due

        with self.db.session() as s:
            report.escalated += escalate_due(s, now, self.config.escalation_s)

    # -- 5. accounting ----------------------------------------------------------------------
    def account(self, now: float) -> None:
        with self.db.session() as s:
            last_raw = repo.get_setting(s, "accounted_until")
            repo.set_setting(s, "accounted_until", repr(now))
            if last_raw is None:
                return
            dt = now - float(last_raw)
            if dt <= 0:
                return
            org = load_org_safe(s, now)
            h = holdings([(j.team, j.gpu_type, j.state, j.gpus, j.borrowed_gpus,
                           j.idle_last_below) for j in jobrepo.active(s)])
            used, borrowed, idle = h.used, h.borrowed, h.idle
            guaranteed = guarantees(org)
            lent = lent_pro_rata(guaranteed, used, borrowed)
            hour = int(now // 3600 * 3600)
            for k in {*used, *guaranteed}:
                row = governance.usage_row(s, k[0], k[1], hour)
                row.used_gpu_s += used.get(k, 0) * dt
                row.borrowed_gpu_s += borrowed.get(k, 0) * dt
                row.lent_gpu_s += lent.get(k, 0) * dt
                row.idle_gpu_s += idle.get(k, 0) * dt
                row.guaranteed_gpu_s += guaranteed.get(k, 0) * dt

    # -- 6. schedule ------------------------------------------------------------------------
    def schedule(self, now: float, report: TickReport) -> None:
        with self.db.session() as s:
            self._schedule(s, now, report)

    def _schedule(self, s: Session, now: float, report: TickReport) -> None:
        cluster, names = repo.load_cluster(s)
        pend = jobrepo.pending(s)
        if not cluster.nodes:
            _set_reasons(s, pend, {j.id: "no inventory: an admin must set the nodes"
                                  for j in pend})
            return
        cap = {t: cluster.capacity(t) for t in cluster.gpu_types}
        org = load_org_safe(s, now)
        if org is None:
            _set_reasons(s, pend, {j.id: "no org tree: an admin must set it" for j in pend})
            return
        index = {n: k for k, n in enumerate(names)}
        policy = self.policy
        state = ClusterState(cluster, org, pending_key=policy.pending_key)
        used_ids: dict[str, set[int]] = {}
        for j in jobrepo.active(s):
            gone = sorted({node for node, _ in j.placement if node not in index})
            if gone:
                # its node is marked down or was removed: stop it and requeue it, as Slurm
                # requeues the jobs of a node that goes DOWN
                why = f"node {', '.join(gone)} is down or no longer in the inventory"
                if jobrepo.move(s, j.id, ("starting", "running"), state="terminating",
                                terminating_since=now, requeue=True,
                                stop_reason=f"requeued: {why}"):
                    audit.append(s, now, "scheduler", "job.requeued", f"job:{j.id}", why,
                                 {"team": j.team, "nodes": gone})
                    report.preempted.append(j.id)
                continue
            w = _workload(j)
            state.submit(w, j.attained_gpu_s)
            state.start(w.id, tuple((index[n], g) for n, g in j.placement),
                        j.start_time or now, None, j.borrowed_gpus)
            if j.state == "terminating":
                state.mark_terminating(w.id, j.terminating_since or now)
            for node, ids in j.gpu_ids.items():
                used_ids.setdefault(node, set()).update(ids)
        reasons: dict[int, str] = {}
        by_id = {j.id: j for j in pend}
        for j in pend:
            if j.hold_until is not None and j.hold_until > now:
                reasons[j.id] = (f"held until {_iso(j.hold_until)} after its GPUs were "
                                 "reclaimed for idling")
            elif j.team not in org.index or not org.is_team[org.index[j.team]]:
                reasons[j.id] = f"team {j.team!r} is not a team of the org tree now"
            elif j.gpu_type not in cap or j.gpus > cap[GpuType(j.gpu_type)]:
                reasons[j.id] = f"no {j.gpu_type} node group can hold {j.gpus} GPUs now"
            else:
                state.submit(_workload(j), j.attained_gpu_s)
        d = decide(state, policy, now)
        for a in d.admits:
            j = by_id[int(a.job_id)]
            placement: list[list[str | int]] = [[names[n], g] for n, g in a.placement]
            gpu_ids: dict[str, list[int]] = {}
            for n, g in a.placement:
                taken = used_ids.setdefault(names[n], set())
                ids = [i for i in range(cluster.nodes[n].gpus) if i not in taken][:g]
                taken.update(ids)
                gpu_ids[names[n]] = ids
            if jobrepo.move(s, j.id, "pending", state="starting", placement=placement,
                            gpu_ids=gpu_ids, borrowed_gpus=a.borrowed_gpus, start_time=now,
                            first_start=j.first_start or now, hold_until=None,
                            queue_position=None, estimated_start=None,
                            reason="admitted" + (f", {a.borrowed_gpus} GPUs borrowed"
                                                 if a.borrowed_gpus else "")):
                audit.append(s, now, "scheduler", "job.admitted", f"job:{j.id}",
                             f"placed on {placement}" + (
                                 f"; {a.borrowed_gpus} GPUs borrowed beyond the guarantee"
                                 if a.borrowed_gpus else ""),
                             {"team": j.team, "gpus": j.gpus, "placement": placement,
                              "borrowed_gpus": a.borrowed_gpus})
                report.admitted.append(j.id)
                state.start(a.job_id, a.placement, now, None, a.borrowed_gpus)
            else:  # it was cancelled meanwhile: its GPUs stay free for this cycle too
                for node_name, ids in gpu_ids.items():
                    used_ids[node_name].difference_update(ids)
        for p in d.preempts:
            if jobrepo.move(s, int(p.job_id), ("starting", "running"), state="terminating",
                            terminating_since=now, requeue=True,
                            stop_reason=f"preempted: {p.reason}"):
                audit.append(s, now, "scheduler", "job.preempted", f"job:{p.job_id}", p.reason,
                             {"for_job": int(p.for_job), "grace_s": self.config.grace_s})
                report.preempted.append(int(p.job_id))
        for r in d.rejects:
            if jobrepo.move(s, int(r.job_id), "pending", state="rejected", end_time=now,
                            reason=f"rejected: {r.reason}"):
                audit.append(s, now, "scheduler", "job.rejected", f"job:{r.job_id}", r.reason,
                             {"team": by_id[int(r.job_id)].team})
        self._explain(s, state, d.waiting, reasons, by_id, now)

    def _explain(self, s: Session, state: ClusterState, waiting: dict[JobId, str],
                 reasons: dict[int, str], by_id: dict[int, JobRow], now: float) -> None:
        """Reason, queue position and estimated start of every job still pending."""
        org = state.org
        sc = Snapshot(state, now)
        keyed = []
        for bucket in state.buckets.values():
            head = bucket.jobs[0]
            for w in bucket.jobs:
                jid = int(w.id)
                ok = self.policy.order_key(sc, w, state.pending_attained[w.id])
                keyed.append((w.gpu_type, ok, w.submit_time, w.seq, jid))
                t = w.gpu_type
                i = org.index[w.team]
                ctx = (f"team {w.team} at {state.usage[t][i]}/{org.guaranteed[t][i]} "
                       f"guaranteed {t} GPUs")
                if w.id in waiting:
                    reasons[jid] = f"{ctx}; {waiting[w.id]}"
                elif w.id != head.id and head.id in waiting:
                    reasons[jid] = (f"{ctx}; behind job {head.id} of the same team, GPU type "
                                    f"and size, which waits: {waiting[head.id]}")
                else:
                    reasons[jid] = f"{ctx}; waiting for the next scheduling cycle"
        keyed.sort(key=lambda x: (x[0], x[1], x[2], x[3]))
        positions: dict[int, int] = {}
        count: dict[str, int] = {}
        queue = []
        for t, _, _, _, jid in keyed:
            count[t] = count.get(t, 0) + 1
            positions[jid] = count[t]
            j = by_id[jid]
            queue.append(Queued(jid, t, j.gpus, j.time_limit_s))
        holdings = [Holding(rj.workload.gpu_type, rj.workload.gpus,
                            None if rj.workload.estimate_s is None
                            else rj.segment_start + rj.workload.estimate_s)
                    for rj in state.running.values()]
        cap = {str(t): state.cluster.capacity(t) for t in state.cluster.gpu_types}
        est = estimate_starts(now, cap, holdings, queue)
        for jid, j in by_id.items():
            reason = reasons.get(jid)
            if reason is None:
                continue  # admitted or rejected in this cycle
            pos, e = positions.get(jid), est.get(jid)
            if (j.reason, j.queue_position, j.estimated_start) != (reason, pos, e):
                jobrepo.move(s, jid, "pending", reason=reason, queue_position=pos,
                             estimated_start=e)


def _workload(j: JobRow) -> Workload:
    from allotment.domain.org import TeamId

    return Workload(JobId(str(j.id)), TeamId(j.team), GpuType(j.gpu_type), j.gpus,
                    j.submit_time, j.id, jobrepo.PRIORITY.get(j.priority_class, 0),
                    j.preemptible, None, j.time_limit_s, j.user)


def _set_reasons(s: Session, pend: list[JobRow], reasons: dict[int, str]) -> None:
    for j in pend:
        r = reasons.get(j.id)
        if r is not None and r != j.reason:
            jobrepo.move(s, j.id, "pending", reason=r, queue_position=None, estimated_start=None)


def _count_preemption(s: Session, job: JobRow, now: float) -> None:
    row = governance.usage_row(s, job.team, job.gpu_type, int(now // 3600 * 3600))
    row.preemptions = (row.preemptions or 0) + 1


def _idle_windows(rows: list[OrgNodeRow]) -> dict[str, float]:
    """Each node's idle window: its own, else its nearest ancestor's (absent: the default)."""
    own = {r.name: r.idle_window_s for r in rows}
    parent = {r.name: r.parent for r in rows}
    out: dict[str, float] = {}
    for name in own:
        node: str | None = name
        while node is not None and own.get(node) is None:
            node = parent.get(node)
        if node is not None and own[node] is not None:
            out[name] = float(own[node])  # type: ignore[arg-type]
    return out


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def load_org_safe(s: Session, now: float, cap: dict[GpuType, int] | None = None) -> Any:
    """The org in force, or None when none is set or it no longer fits the inventory."""
    try:
        return repo.load_org(s, now, cap)
    except Exception as exc:
        log.error("org tree does not fit the inventory: %s", exc)
        return None
