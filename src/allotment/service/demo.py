"""The scripted demo behind ``allot up --demo``: two teams share 8 GPUs; one borrows the
other's idle half, and gives it back by preemption when the owner's job arrives."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console

from allotment.domain.jobstate import JobState as S
from allotment.service.client import Client


def _wait(c: Client, job_id: int, states: set[str], timeout: float = 60.0) -> dict[str, Any]:
    end = time.time() + timeout
    while True:
        j: dict[str, Any] = c.call("GET", f"/v1/jobs/{job_id}")
        if j["state"] in states or time.time() > end:
            return j
        time.sleep(0.3)


def run_demo(url: str, data_dir: Path, out: Console) -> bool:
    admin = Client(url)
    inv = admin.call("GET", "/v1/inventory")
    gpu_type, total = next(iter(inv["gpus_by_type"].items()))
    half = max(1, total // 2)
    step = 0

    def say(text: str) -> None:
        nonlocal step
        step += 1
        out.print(f"[bold cyan]{step}.[/] {text}", highlight=False)

    say(f"org: group research with teams llama and vision, {half} {gpu_type} GPUs "
        f"guaranteed each (of {total})")
    admin.call("PUT", "/v1/org", json={"org": [{"name": "research", "children": [
        {"name": "llama", "guaranteed": {gpu_type: half}},
        {"name": "vision", "guaranteed": {gpu_type: total - half}}]}]})
    ann = Client(url, admin.call("POST", "/v1/users", json={
        "name": "ann", "role": "member", "team": "llama"})["token"])
    bob = Client(url, admin.call("POST", "/v1/users", json={
        "name": "bob", "role": "lead", "team": "vision"})["token"])
    say(f"ann (llama) submits a {total}-GPU job; vision is idle, so llama may borrow its half")
    j1 = ann.call("POST", "/v1/jobs", json={"team": "llama", "gpu_type": gpu_type,
                                            "gpus": total, "command": "sleep 300",
                                            "name": "pretrain"})["id"]
    j = _wait(ann, j1, {S.RUNNING})
    out.print(f"   job {j1}: {j['state']}, {j['borrowed_gpus']} GPUs borrowed, "
              f"CUDA_VISIBLE_DEVICES={','.join(str(i) for v in j['gpu_ids'].values() for i in v)}")
    say(f"bob (vision) submits a {total - half}-GPU job: vision's guarantee is on loan")
    j2 = bob.call("POST", "/v1/jobs", json={"team": "vision", "gpu_type": gpu_type,
                                            "gpus": total - half, "command": "sleep 5",
                                            "name": "eval"})["id"]
    time.sleep(1.5)
    w = bob.call("GET", f"/v1/jobs/{j2}")
    out.print(f"   job {j2}: {w['state']}; why: {w['reason']}", highlight=False)
    try:
        bob.call("GET", f"/v1/jobs/{j1}")
    except Exception as exc:
        out.print(f"   bob may not read llama's job: {exc}", highlight=False)
    say("the scheduler reclaims the borrowed GPUs: SIGTERM, grace period, requeue")
    j = _wait(ann, j1, {S.PENDING})
    out.print(f"   job {j1}: {j['state']}; {j['reason']}", highlight=False)
    w = _wait(bob, j2, {S.RUNNING, S.SUCCEEDED})
    out.print(f"   job {j2}: {w['state']} on GPUs {w['gpu_ids']}")
    w = _wait(bob, j2, {S.SUCCEEDED, S.FAILED})
    out.print(f"   job {j2}: {w['state']} (exit code {w['exit_code']})")
    j = _wait(ann, j1, {S.RUNNING})
    out.print(f"   job {j1} runs again (attempt {j['attempts']}): {j['reason']}")
    ann.call("POST", f"/v1/jobs/{j1}/cancel")
    _wait(ann, j1, {S.CANCELLED})
    say("the audit log: every decision with its reason, hash-chained")
    for a in reversed(admin.call("GET", "/v1/audit", params={"limit": 8})["items"]):
        out.print(f"   #{a['seq']} {a['action']:<16} {a['subject']:<10} {a['reason']}",
                  highlight=False)
    v = admin.call("GET", "/v1/audit/verify")
    out.print(f"   chain verified: {v['ok']} ({v['entries']} entries)")
    out.print(f"demo done; logs of the runs are under {data_dir / 'runs'}")
    return bool(v["ok"])
