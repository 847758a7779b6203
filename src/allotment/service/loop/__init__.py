"""The live scheduler loop: the core ``decide()`` cycle on a clock (the wall clock, or the
replay engine's virtual one), against the database, acting through a backend.

It keeps one ``ClusterState`` in memory between ticks (``live.Live``), changed by deltas
as the simulator changes its own, and persists what ``decide`` carries between cycles
(decayed usage, reservations), so that a restart or a failover continues with the same
memory. A decision is committed before it is acted on, and every action is idempotent for
a run ``(job, attempt)``: a crash anywhere never launches a job twice and never loses one.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from allotment.backends.base import Backend
from allotment.errors import BackendUnavailable
from allotment.governance import disputes
from allotment.policies import make_policy
from allotment.scheduler import apply as path
from allotment.scheduler.config import DEFAULTS, SchedulerConfig
from allotment.scheduler.decisions import Decisions
from allotment.service.loop import live as world
from allotment.service.loop.accounting import Accountant
from allotment.service.loop.idle import IdleRule, idle
from allotment.service.loop.reconcile import End, reconcile, stop_orphans
from allotment.service.loop.schedule import explain, schedule, take_inbox
from allotment.storage import audit, repo
from allotment.storage.db import Database
from allotment.storage.models import Lease

log = logging.getLogger("allotment.scheduler")


@dataclass(frozen=True, slots=True)
class LoopConfig:
    """The service-only knobs; everything ``decide`` reads is in ``scheduler``."""

    scheduler: SchedulerConfig = DEFAULTS
    tick_s: float = 2.0
    idle_threshold_pct: float = 5.0
    idle_window_s: float = 1800.0
    idle_reclaim_after_s: float = 600.0
    idle_reclaim: bool = True
    idle_hold_s: float | None = None  # a reclaimed job may restart after this (default window)
    escalation_s: float = 2 * 86400.0
    lease_ttl_s: float = 10.0
    accounting_flush_s: float = 30.0  # usage rows are written this often
    webhook_url: str | None = None


@dataclass(slots=True)
class TickReport:
    acted: bool = True
    decided: bool = False
    admitted: list[int] = field(default_factory=list)
    preempted: list[int] = field(default_factory=list)
    finished: list[int] = field(default_factory=list)
    requeued: list[int] = field(default_factory=list)
    warned: list[int] = field(default_factory=list)
    reclaimed: list[int] = field(default_factory=list)
    escalated: list[int] = field(default_factory=list)
    backend_error: str | None = None
    phases: dict[str, float] = field(default_factory=dict)  # step -> seconds it took

    def timed(self, step: str, since: float) -> float:
        now = time.perf_counter()
        self.phases[step] = self.phases.get(step, 0.0) + now - since
        return now


class SchedulerLoop:
    def __init__(self, db: Database, backend: Backend, config: LoopConfig | None = None,
                 clock: Callable[[], float] = time.time, holder: str | None = None,
                 observer: path.Observer = path.NO_OBSERVER) -> None:
        self.db = db
        self.backend = backend
        self.config = config or LoopConfig()
        self.clock = clock
        self.observer = observer
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.policy = make_policy(self.config.scheduler.policy, self.config.scheduler)
        self.live: world.Live | None = None
        self.last_decisions: Decisions | None = None  # of the last cycle (its reservations)
        self._usage_at = float("-inf")
        self.accountant = Accountant(self.config.accounting_flush_s)
        self._health_said: tuple[str | None, str, str] | None = None
        c = self.config
        self.idle_rule = IdleRule(c.idle_threshold_pct, c.idle_window_s,
                                  c.idle_reclaim_after_s, c.idle_reclaim, c.idle_hold_s)

    # -- the tick -----------------------------------------------------------------------
    def tick(self) -> TickReport:
        """One pass, in order:
        1. lease: only the holder of the ``scheduler`` lease acts (another process waits);
        2. world: build the in-memory state from the database if there is none (start,
           failover, inventory/org/quota changed) and stop jobs on nodes that went away;
        3. accounting: GPU-seconds since the last tick, with the jobs as they were;
        4. reconcile: launch admitted runs, record runs that ended, signal runs being
           stopped (SIGTERM, then SIGKILL after the grace period);
        5. inbox: submissions and cancellations from the API, as deltas;
        6. idle: warn, then reclaim idle jobs;
        7. disputes: escalate unanswered ones one level up the org tree;
        8. schedule: if something changed or a wake-up is due, ``decide()`` and apply its
           decisions (one transaction), then explain every waiting job;
        9. reconcile again the runs this tick admitted, stopped or signalled, so a decision
           is acted on in the tick that made it;
        10. memory: persist decayed usage and reservations; backend health; usage import.
        """
        now = self.clock()
        report = TickReport()
        if not self._lease(now):  # 1
            report.acted = False
            self.live = None  # another process acts: our memory would go stale
            self.accountant.forget()
            return report
        try:
            self._tick(now, report)
        except BackendUnavailable as exc:
            # decide nothing on a state we cannot see; every step is retried next tick
            report.backend_error = str(exc)
        except Exception:
            self.live = None  # rebuilt from the database next tick
            raise
        self._health(now, report.backend_error)
        return report

    def _tick(self, now: float, report: TickReport) -> None:
        t = time.perf_counter()
        rebuilt = self._world(now, report)  # 2
        t = report.timed("world", t)
        live = self.live
        assert live is not None
        self.accountant.account(self.db, live, now)  # 3
        t = report.timed("accounting", t)
        grace = self.config.scheduler.grace_s
        obs = self.observer
        self._ended(reconcile(self.db, self.backend, live, now, grace, obs), report)  # 4
        t = report.timed("reconcile", t)
        if take_inbox(self.db, live, now, obs):  # 5: the shape changed
            rebuilt = self._world(now, report, force=True)
            live = self.live
            assert live is not None
        t = report.timed("inbox", t)
        warned, reclaimed = idle(self.db, self.backend, live, now, self.idle_rule)  # 6
        report.warned += warned
        report.reclaimed += reclaimed
        t = report.timed("idle", t)
        self.escalate(now, report)  # 7
        t = report.timed("disputes", t)
        d, sink = schedule(self.db, live, self.policy, now, obs)  # 8
        if sink is not None:
            self.last_decisions = d
            report.decided = True
            report.admitted += sink.admitted
            report.preempted += sink.preempted
        t = report.timed("schedule", t)
        explain(self.db, live, d, now, rebuilt)
        t = report.timed("explain", t)
        acted_on = {*report.admitted, *report.preempted, *report.reclaimed, *live.signalled}
        live.signalled.clear()
        if acted_on:  # 9: launch and signal what this tick decided
            self._ended(reconcile(self.db, self.backend, live, now, grace, obs, acted_on),
                        report)
        t = report.timed("reconcile", t)
        with self.db.session() as s:  # 10
            world.save_memory(s, live)
        self._import_usage(now)
        report.timed("memory", t)

    def _world(self, now: float, report: TickReport, force: bool = False) -> bool:
        """Build the in-memory state when there is none, the shape changed, or a new month
        began (its published quotas apply); stop the jobs on nodes that went away."""
        live = self.live
        if not force and live is not None and live.period == live.period_at(now):
            return False
        with self.db.session() as s:
            self.live = world.build(s, now, self.policy, self.observer, previous=live,
                                    refusal=getattr(self.backend, "refusal", None))
        report.preempted += stop_orphans(self.db, self.live, now)
        return True

    def _ended(self, ended: list, report: TickReport) -> None:  # type: ignore[type-arg]
        for e in ended:
            (report.requeued if e.how == End.REQUEUED else report.finished).append(e.run.id)

    def next_wake(self) -> float | None:
        """When the loop wants its next cycle if nothing else happens (replay engine)."""
        return None if self.live is None else self.live.next_wake()

    def escalate(self, now: float, report: TickReport) -> None:
        with self.db.session() as s:
            report.escalated += disputes.escalate_due(s, now, self.config.escalation_s)

    def _import_usage(self, now: float) -> None:
        """Backends with their own accounting (Slurm's sacct) are the truth for usage."""
        imp = getattr(self.backend, "import_usage", None)
        every = float(getattr(self.backend, "usage_every_s", 60.0))
        if imp is None or now - self._usage_at < every:
            return
        imp(self.db, now - 3 * 3600, now + 1, now)
        self._usage_at = now

    def _health(self, now: float, error: str | None) -> None:
        """The backend's health (and how it keeps jobs apart) in a setting that ``/health``
        shows; written, and audited, only when it changes."""
        isolation = getattr(self.backend, "isolation", lambda: None)()
        said = (error, self.backend.name, json.dumps(isolation, sort_keys=True))
        if said == self._health_said:
            return
        with self.db.session() as s:
            old = json.loads(repo.get_setting(s, "backend_health") or "{}")
            if (old.get("error") != error or old.get("backend") != self.backend.name
                    or old.get("isolation") != isolation):
                if error and error != old.get("error"):
                    log.error("backend %s unavailable: %s", self.backend.name, error)
                    audit.append(s, now, "scheduler", "backend.unavailable",
                                 self.backend.name, error, {})
                elif not error and old.get("error"):
                    audit.append(s, now, "scheduler", "backend.available",
                                 self.backend.name, "reachable again", {})
                repo.set_setting(s, "backend_health", json.dumps(
                    {"backend": self.backend.name, "state": "unavailable" if error else "ok",
                     "error": error, "since": now, "isolation": isolation}))
        self._health_said = said

    def run(self, stop: threading.Event) -> None:
        """Tick every ``tick_s`` until ``stop`` is set; an error in one tick is logged and
        the next tick retries (every step is idempotent). Notifications are sent by a
        worker thread of their own meanwhile (``service.notify``)."""
        from allotment.service.notify import Notifier

        Notifier(self.db, self.config.webhook_url, self.clock).start(stop)
        while not stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("scheduler tick failed; retrying next tick")
            stop.wait(self.config.tick_s)
        self.flush()

    def flush(self) -> None:
        """Write what is only in memory (the usage sums): before the process stops."""
        try:
            self.accountant.flush(self.db)
        except Exception:
            log.exception("could not write the last usage sums")

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
        """Flush, then give the lease up so another scheduler may act at once."""
        self.flush()
        with self.db.session() as s:
            s.execute(delete(Lease).where(Lease.role == "scheduler", Lease.holder == self.holder))


__all__ = ["LoopConfig", "SchedulerLoop", "TickReport"]
