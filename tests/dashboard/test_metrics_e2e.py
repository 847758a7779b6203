"""`curl /metrics` during the dashboard's end-to-end scenario (a live service with its loop,
vision borrowing all 16 GPUs, llama's job reclaiming its half): the named series carry the
values the API reports at each step."""

from __future__ import annotations

import time
from typing import Any

from allotment.service.metrics import registry_for, serve_metrics
from tests.dashboard.test_e2e import site  # noqa: F401 (the live service)
from tests.service.conftest import free_port
from tests.service.test_metrics import scrape, val


def _until(cond: Any, timeout: float = 40) -> None:
    end = time.time() + timeout
    while not cond():
        assert time.time() < end
        time.sleep(0.2)


def test_metrics_follow_the_scenario(site: dict[str, Any]) -> None:  # noqa: F811
    """Borrowing, waiting and the reclaim, each as /metrics shows it next to /v1/queue."""
    api, tok = site["client"], site["tokens"]
    port = free_port()
    stop = serve_metrics(registry_for(site["db"]), "127.0.0.1", port)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        big = api(tok["vic"], "POST", "/v1/jobs", json={
            "team": "vision", "gpu_type": "a100", "gpus": 16, "command": "train"}).json()["id"]
        _until(lambda: api(tok["vic"], "GET", f"/v1/jobs/{big}").json()["state"] == "running")
        small = api(tok["ann"], "POST", "/v1/jobs", json={
            "team": "llama", "gpu_type": "a100", "gpus": 8, "command": "eval"}).json()["id"]
        m = scrape(url)
        queue = {q["team"]: q for q in api(tok["admin"], "GET", "/v1/queue").json()}
        assert val(m, "allotment_team_in_use_gpus", team="vision", gpu_type="a100") \
            == queue["vision"]["running_gpus"] == 16
        assert val(m, "allotment_team_borrowed_gpus", team="vision", gpu_type="a100") \
            == queue["vision"]["borrowed_gpus"] == 8
        assert val(m, "allotment_pending_jobs", team="llama", gpu_type="a100") \
            == queue["llama"]["pending_jobs"] == 1
        assert val(m, "allotment_team_guaranteed_gpus", team="llama", gpu_type="a100") == 8
        _until(lambda: api(tok["ann"], "GET", f"/v1/jobs/{small}").json()["state"]
               == "running")
        m = scrape(url)
        preempted = api(tok["admin"], "GET", "/v1/audit",
                        params={"action": "job.preempted"}).json()["total"]
        assert sum(v for (name, _), v in m.items()
                   if name == "allotment_preempted_jobs_total") == preempted >= 1
        assert val(m, "allotment_preempted_jobs_total", team="vision", reason="reclaim") >= 1
        assert m[("allotment_audit_chain_length", ())] == api(
            tok["admin"], "GET", "/v1/audit/verify").json()["entries"]
        for j in (big, small):
            api(tok["admin"], "POST", f"/v1/jobs/{j}/cancel")
    finally:
        stop()
