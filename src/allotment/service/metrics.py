"""Prometheus metrics (``--metrics-port``), named in Kueue's style with an ``allotment_``
prefix. Served unauthenticated, so only on the address the operator chooses
(``--metrics-host``, default 127.0.0.1), never on the API's port.

Two sources:
- the database, read at each scrape by ``DatabaseCollector`` with the same functions the
  API and the dashboard answer from (``ui.views.team_rows``, ``ui.views.cluster_view``,
  the audit log), so the numbers are the ones they show, whichever process acts;
- the scheduler loop of this process (``LoopMetrics``): tick durations, whether it holds
  the lease.

Series (labels in braces):
    allotment_team_guaranteed_gpus{team,gpu_type}       the guarantee in force now
    allotment_team_in_use_gpus{team,gpu_type}           GPUs of its active jobs
    allotment_team_borrowed_gpus{team,gpu_type}         of those, beyond its guarantee
    allotment_team_lent_gpus{team,gpu_type}             its unused guarantee others hold
    allotment_team_idle_allocated_gpus{team,gpu_type}   GPUs of its running jobs now idle
    allotment_team_pending_gpus{team,gpu_type}          GPUs its pending jobs ask for
    allotment_pending_jobs{team,gpu_type}               jobs waiting
    allotment_idle_gpus_while_jobs_wait{gpu_type}       idle GPUs of a type jobs wait for
    allotment_admission_wait_time_seconds{team}         histogram: submit to first start
    allotment_preempted_jobs_total{team,reason}         counter; reason: reclaim (for
                                                        another team), in_team, unknown
    allotment_idle_warned_jobs_total{team}              counter
    allotment_idle_reclaimed_jobs_total{team}           counter
    allotment_backend_up{backend}                       1 reachable, 0 not (the loop's word)
    allotment_audit_chain_length                        entries in the hash chain
    allotment_scheduler_tick_duration_seconds           histogram (this process's loop)
    allotment_scheduler_tick_interval_seconds           its configured interval
    allotment_scheduler_active                          1 while this process holds the lease
The counters are counted from the audit log, so they survive restarts and failovers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from allotment.domain.jobstate import JobState
from allotment.storage import repo
from allotment.storage.db import Database
from allotment.storage.models import AuditHead, AuditRow, JobRow

PREFIX = "allotment_"
# admission wait buckets: seconds to days (a job may wait for next month's quota)
WAIT_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 3 * 3600.0,
                6 * 3600.0, 12 * 3600.0, 86400.0, 3 * 86400.0, 7 * 86400.0)
TICK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
TEAM_GAUGES = (("guaranteed", "guaranteed_gpus", "GPUs guaranteed to the team now"),
               ("in_use", "in_use_gpus", "GPUs held by the team's active jobs"),
               ("borrowed", "borrowed_gpus", "GPUs the team holds beyond its guarantee"),
               ("lent", "lent_gpus", "the team's unused guarantee held by others"),
               ("idle_allocated", "idle_allocated_gpus",
                "GPUs of the team's running jobs that are idle now"),
               ("pending_gpus", "pending_gpus", "GPUs the team's pending jobs ask for"))


def preemption_reason(victim_team: str, for_team: str | None) -> str:
    """The bounded reason label of a preemption: ``reclaim`` (GPUs taken back for another
    team), ``in_team`` (for a job of the victim's own team), ``unknown`` (not recorded)."""
    if not for_team:
        return "unknown"
    return "in_team" if for_team == victim_team else "reclaim"


def _histogram(name: str, doc: str, label: str, values: dict[str, list[float]],
               buckets: tuple[float, ...]) -> HistogramMetricFamily:
    h = HistogramMetricFamily(name, doc, labels=[label])
    for key in sorted(values):
        vs = values[key]
        cum = [(str(b), float(sum(1 for v in vs if v <= b))) for b in buckets]
        cum.append(("+Inf", float(len(vs))))
        h.add_metric([key], cum, sum_value=float(sum(vs)))
    return h


class DatabaseCollector(Collector):
    """The series read from the database at each scrape (see the module's docstring)."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        from allotment.service.ui import views

        now = self.clock()
        with self.db.readers() as s:
            rows = views.team_rows(s, now, 1)
            cluster = views.cluster_view(s)
            pending = list(s.execute(
                select(JobRow.team, JobRow.gpu_type, func.count())
                .where(JobRow.state == JobState.PENDING).group_by(JobRow.team, JobRow.gpu_type)))
            waits: dict[str, list[float]] = {}
            for team, submit, first in s.execute(
                    select(JobRow.team, JobRow.submit_time, JobRow.first_start)
                    .where(JobRow.first_start.is_not(None))):
                waits.setdefault(team, []).append(max(0.0, (first or submit) - submit))
            counted = list(s.execute(
                select(AuditRow.action, AuditRow.scope, func.count())
                .where(AuditRow.action.in_(("job.idle_warned", "job.reclaimed")))
                .group_by(AuditRow.action, AuditRow.scope)))
            preempted = list(s.execute(select(AuditRow.scope, AuditRow.data)
                                       .where(AuditRow.action == "job.preempted")))
            head = s.execute(select(AuditHead.seq).where(AuditHead.id == 1)).scalar()
            health = json.loads(repo.get_setting(s, "backend_health") or "null")
        for attr, suffix, doc in TEAM_GAUGES:
            g = GaugeMetricFamily(f"{PREFIX}team_{suffix}", doc, labels=["team", "gpu_type"])
            for r in rows:
                g.add_metric([r.team, r.gpu_type], float(getattr(r, attr)))
            yield g
        g = GaugeMetricFamily(f"{PREFIX}pending_jobs", "jobs waiting",
                              labels=["team", "gpu_type"])
        for team, gpu_type, n in pending:
            g.add_metric([team, gpu_type], float(n))
        yield g
        g = GaugeMetricFamily(f"{PREFIX}idle_gpus_while_jobs_wait",
                              "idle GPUs of a type that pending jobs wait for",
                              labels=["gpu_type"])
        waiting_types = {t for _, t, _ in pending}
        for gpu_type, states in sorted(cluster.by_type.items()):
            g.add_metric([gpu_type], float(states.get("idle", 0)
                                           if gpu_type in waiting_types else 0))
        yield g
        yield _histogram(f"{PREFIX}admission_wait_time_seconds",
                         "seconds from submission to a job's first start", "team", waits,
                         WAIT_BUCKETS)
        by_reason: dict[tuple[str, str], int] = {}
        for scope, data in preempted:
            team = scope.removeprefix("team:")
            key = (team, preemption_reason(team, (data or {}).get("for_team")))
            by_reason[key] = by_reason.get(key, 0) + 1
        c = CounterMetricFamily(f"{PREFIX}preempted_jobs", "jobs preempted, by reason",
                                labels=["team", "reason"])
        for (team, reason), n in sorted(by_reason.items()):
            c.add_metric([team, reason], float(n))
        yield c
        for action, name, doc in (("job.idle_warned", "idle_warned_jobs", "idle warnings"),
                                  ("job.reclaimed", "idle_reclaimed_jobs",
                                   "jobs reclaimed for being idle")):
            c = CounterMetricFamily(f"{PREFIX}{name}", doc, labels=["team"])
            per: dict[str, int] = {}
            for act, scope, n in counted:
                if act == action:
                    team = scope.removeprefix("team:")
                    per[team] = per.get(team, 0) + n
            for team, n in sorted(per.items()):
                c.add_metric([team], float(n))
            yield c
        g = GaugeMetricFamily(f"{PREFIX}backend_up", "1 while the scheduler reaches its "
                              "backend, 0 while it cannot", labels=["backend"])
        if health:
            g.add_metric([str(health.get("backend"))],
                         0.0 if health.get("state") == "unavailable" else 1.0)
        yield g
        yield GaugeMetricFamily(f"{PREFIX}audit_chain_length", "entries in the audit chain",
                                value=float(head or 0))


class LoopMetrics:
    """What this process's scheduler loop reports: ``observe`` is its tick hook."""

    def __init__(self, registry: CollectorRegistry, interval_s: float) -> None:
        self.tick = Histogram(f"{PREFIX}scheduler_tick_duration_seconds",
                              "seconds one scheduler tick took", buckets=TICK_BUCKETS,
                              registry=registry)
        Gauge(f"{PREFIX}scheduler_tick_interval_seconds", "seconds between ticks",
              registry=registry).set(interval_s)
        self.active = Gauge(f"{PREFIX}scheduler_active",
                            "1 while this process holds the scheduler lease",
                            registry=registry)

    def observe(self, seconds: float, acted: bool) -> None:
        self.active.set(1.0 if acted else 0.0)
        if acted:
            self.tick.observe(seconds)


def registry_for(db: Database | None, loop: Any = None) -> CollectorRegistry:
    """A registry with the database's series (if ``db``) and ``loop``'s (if any)."""
    registry = CollectorRegistry(auto_describe=False)
    if db is not None:
        registry.register(DatabaseCollector(db))
    if loop is not None:
        metrics = LoopMetrics(registry, loop.config.tick_s)
        loop.on_tick = metrics.observe
    return registry


def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> Callable[[], None]:
    """Serve ``registry`` at ``http://host:port/metrics`` in a thread; returns ``stop``."""
    from prometheus_client import start_http_server

    server, thread = start_http_server(port, addr=host, registry=registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop


__all__ = ["DatabaseCollector", "LoopMetrics", "preemption_reason", "registry_for",
           "serve_metrics"]
