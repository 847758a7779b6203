"""Prometheus metrics: the named series, with the values the API reports, served only on
the address the operator chose; the shipped alert rules and Grafana dashboard are valid."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from allotment.backends.fake import FakeBackend
from allotment.scheduler.config import DEFAULTS
from allotment.service.metrics import registry_for, serve_metrics
from tests.service.conftest import LiveServer, World, free_port
from tests.service.test_loop import loop_for

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "allotment.json"


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``url`` as (name, sorted labels) -> value."""
    text = httpx.get(url, timeout=10).text
    out = {}
    for fam in text_string_to_metric_families(text):
        for smp in fam.samples:
            out[(smp.name, tuple(sorted(smp.labels.items())))] = smp.value
    return out


def val(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def busy_world(world: World) -> tuple[Any, FakeBackend]:
    """llama borrows vision's half; vision's job reclaims it (one preemption); a llama job
    and an infra job wait."""
    fb = FakeBackend(exit_on_term=False)
    loop = loop_for(world, fb)
    big = world.submit("member_own", gpus=16)["id"]
    loop.tick()
    world.clock.advance(600)
    world.submit("member_other", team="vision", gpus=8)
    loop.tick()  # preempts big
    world.clock.advance(31)
    loop.tick()  # SIGKILL, requeue
    world.clock.advance(1)
    loop.tick()  # vision runs
    world.submit("admin", team="infra", gpus=2)
    world.clock.advance(5)
    loop.tick()
    del big
    return loop, fb


def test_metrics_equal_what_the_api_reports(world: World) -> None:
    """Per team and GPU type the gauges equal /v1/queue and the dashboard's teams page;
    the preemption counter, the audit chain length and the admission waits equal the
    audit log and the jobs the API shows."""
    loop, _ = busy_world(world)
    registry = registry_for(world.db, loop)
    port = free_port()
    stop = serve_metrics(registry, "127.0.0.1", port)
    try:
        m = scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        stop()
    queue = {q["team"]: q for q in world.call("admin", "GET", "/v1/queue").json()}
    assert queue, "the scenario left nothing running or waiting"
    for team, q in queue.items():
        assert val(m, "allotment_team_in_use_gpus", team=team, gpu_type="a100") \
            == q["running_gpus"], team
        assert val(m, "allotment_team_borrowed_gpus", team=team, gpu_type="a100") \
            == q["borrowed_gpus"], team
        assert val(m, "allotment_team_pending_gpus", team=team, gpu_type="a100") \
            == q["pending_gpus"], team
        assert val(m, "allotment_pending_jobs", team=team, gpu_type="a100") \
            == q["pending_jobs"], team
    assert queue["vision"]["running_gpus"] == 8 and queue["llama"]["pending_jobs"] == 1
    for team in ("llama", "vision"):
        assert val(m, "allotment_team_guaranteed_gpus", team=team, gpu_type="a100") == 8
    # infra (no guarantee) runs 2 GPUs borrowed from llama's unused guarantee
    assert queue["infra"]["running_gpus"] == queue["infra"]["borrowed_gpus"] == 2
    assert val(m, "allotment_team_lent_gpus", team="llama", gpu_type="a100") == 2
    audit = world.call("admin", "GET", "/v1/audit").json()
    verify = world.call("admin", "GET", "/v1/audit/verify").json()
    assert m[("allotment_audit_chain_length", ())] == verify["entries"] == audit["total"]
    preempted = world.call("admin", "GET", "/v1/audit",
                           params={"action": "job.preempted"}).json()["total"]
    assert preempted == 1
    assert val(m, "allotment_preempted_jobs_total", team="llama", reason="reclaim") == 1
    jobs = world.call("admin", "GET", "/v1/jobs", params={"limit": 100}).json()["items"]
    started = [j for j in jobs if j.get("first_start") is not None or j["state"] == "running"]
    by_team: dict[str, int] = {}
    for j in started:
        by_team[j["team"]] = by_team.get(j["team"], 0) + 1
    for team, n in by_team.items():
        assert val(m, "allotment_admission_wait_time_seconds_count", team=team) == n, team
    # 16 GPUs: vision holds 8, infra 2; 6 idle while llama's 16-GPU job waits, as the
    # dashboard's cluster page says
    from allotment.service.ui.views import cluster_view

    with world.db.session() as s:
        shown = cluster_view(s).idle_while_waiting
    assert val(m, "allotment_idle_gpus_while_jobs_wait", gpu_type="a100") == shown == 6
    # this process's loop: ticks observed only by ``run``; here none, but the series exist
    assert ("allotment_scheduler_tick_interval_seconds", ()) in m


def test_metrics_only_on_the_chosen_address_never_on_the_api(world: World) -> None:
    """/metrics answers on the address given (loopback here), is refused from another
    address of this machine, and the API's own port has no /metrics."""
    port = free_port()
    stop = serve_metrics(registry_for(world.db), "127.0.0.1", port)
    try:
        assert "allotment_audit_chain_length" in httpx.get(
            f"http://127.0.0.1:{port}/metrics", timeout=5).text
        other = _other_address()
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://{other}:{port}/metrics", timeout=5)
    finally:
        stop()
    with LiveServer(world.client.app) as server:
        r = httpx.get(f"{server.url}/metrics", timeout=5)
        assert r.status_code == 404 and "allotment_" not in r.text


def _other_address() -> str:
    """An address of this machine other than 127.0.0.1: its own IP, else 127.0.0.2."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sk:
        try:
            sk.connect(("10.255.255.255", 1))
            ip = str(sk.getsockname()[0])
        except OSError:
            ip = "127.0.0.2"
    return ip if ip != "127.0.0.1" else "127.0.0.2"


def test_the_loop_reports_its_ticks_and_whether_it_holds_the_lease(world: World) -> None:
    """Run the loop for a few ticks: the tick histogram counts them, and the active gauge
    is 1 for the lease holder and 0 for a second loop on the same database."""
    import threading

    fb = FakeBackend()
    first, second = loop_for(world, fb, tick_s=0.05), loop_for(world, fb, tick_s=0.05)
    r1, r2 = registry_for(None, first), registry_for(None, second)
    stop = threading.Event()
    threads = [threading.Thread(target=lp.run, args=(stop,)) for lp in (first, second)]
    for t in threads:
        t.start()
    world.clock.advance(0)
    threading.Event().wait(1.0)
    stop.set()
    for t in threads:
        t.join(timeout=10)
    a = {(s.name): s.value for f in r1.collect() for s in f.samples}
    b = {(s.name): s.value for f in r2.collect() for s in f.samples}
    assert sorted((a["allotment_scheduler_active"], b["allotment_scheduler_active"])) \
        == [0.0, 1.0]
    holder = a if a["allotment_scheduler_active"] == 1.0 else b
    assert holder["allotment_scheduler_tick_duration_seconds_count"] >= 3
    assert holder["allotment_scheduler_tick_interval_seconds"] == 0.05


# -- the shipped alert rules and dashboard ---------------------------------------------

def _rules() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return {r["alert"]: r for g in doc["groups"] for r in g["rules"]}


SERIES = ("allotment_team_guaranteed_gpus", "allotment_team_in_use_gpus",
          "allotment_team_pending_gpus", "allotment_idle_gpus_while_jobs_wait",
          "allotment_scheduler_tick_duration_seconds", "allotment_backend_up",
          "allotment_idle_warned_jobs_total", "allotment_scheduler_tick_interval_seconds")


def test_alert_rules_cover_the_operators_cases_with_real_series() -> None:
    """One alert per case the issue names, each on series the service exports, with the
    hold times it states (the guarantee one: the default grace period plus 5 min)."""
    rules = _rules()
    assert set(rules) == {"AllotmentIdleGpusWhileJobsWait", "AllotmentTeamBelowGuarantee",
                          "AllotmentSchedulerTickSlow", "AllotmentBackendDown",
                          "AllotmentJobIdleWarned"}
    assert rules["AllotmentIdleGpusWhileJobsWait"]["for"] == "15m"
    assert rules["AllotmentTeamBelowGuarantee"]["for"] == f"{int(DEFAULTS.grace_s + 300)}s"
    exprs = " ".join(r["expr"] for r in rules.values())
    for name in SERIES:
        assert name in exprs or name.removesuffix("_total") in exprs, name
    for r in rules.values():
        assert r["labels"]["severity"] in ("warning", "critical")
        assert r["annotations"]["summary"] and r["annotations"]["description"]


def test_promtool_accepts_the_alert_rules() -> None:
    """`promtool check rules` (Debian's prometheus package; .ci/run installs it)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus; "
                    ".ci/run installs it as root or in CI)")
    r = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 5 rules found" in r.stdout + r.stderr


def test_grafana_dashboard_is_a_valid_dashboard_on_exported_series() -> None:
    """The dashboard JSON against Grafana's dashboard model (the fields Grafana needs to
    import it), every panel with a Prometheus target on a series the service exports."""
    import jsonschema_rs

    doc = json.loads(DASHBOARD.read_text())
    jsonschema_rs.validate(DASHBOARD_SCHEMA, doc)
    exported = {"allotment_" + n for n in (
        "team_guaranteed_gpus", "team_in_use_gpus", "team_borrowed_gpus", "team_lent_gpus",
        "team_idle_allocated_gpus", "team_pending_gpus", "pending_jobs",
        "idle_gpus_while_jobs_wait", "admission_wait_time_seconds_bucket",
        "preempted_jobs_total", "idle_warned_jobs_total", "idle_reclaimed_jobs_total",
        "backend_up", "audit_chain_length", "scheduler_tick_duration_seconds_bucket",
        "scheduler_tick_duration_seconds_sum", "scheduler_tick_duration_seconds_count",
        "scheduler_active", "scheduler_tick_interval_seconds")}
    import re

    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for p in doc["panels"]:
        for t in p["targets"]:
            used = set(re.findall(r"allotment_[a-z_]+", t["expr"]))
            assert used and used <= exported, (p["title"], used - exported)


DASHBOARD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["title", "uid", "schemaVersion", "panels", "time", "templating"],
    "properties": {
        "title": {"type": "string", "minLength": 1},
        "uid": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,40}$"},
        "schemaVersion": {"type": "integer", "minimum": 30},
        "time": {"type": "object", "required": ["from", "to"]},
        "refresh": {"type": "string"},
        "templating": {"type": "object", "required": ["list"], "properties": {"list": {
            "type": "array", "items": {"type": "object", "required": ["name", "type"]}}}},
        "panels": {"type": "array", "minItems": 6, "items": {
            "type": "object",
            "required": ["id", "type", "title", "gridPos", "targets", "datasource"],
            "properties": {
                "id": {"type": "integer"},
                "type": {"enum": ["timeseries", "stat", "gauge", "bargauge", "table",
                                  "heatmap"]},
                "title": {"type": "string", "minLength": 1},
                "gridPos": {"type": "object", "required": ["h", "w", "x", "y"],
                            "properties": {k: {"type": "integer", "minimum": 0}
                                           for k in ("h", "w", "x", "y")}},
                "datasource": {"type": "object", "required": ["type", "uid"],
                               "properties": {"type": {"const": "prometheus"}}},
                "targets": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["expr", "refId"],
                    "properties": {"expr": {"type": "string", "minLength": 1}}}},
                "fieldConfig": {"type": "object"},
            }}},
    },
}
