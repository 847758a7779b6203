"""The service's scheduler loop on a real Slurm: jobs launched with sbatch under the team's
account and QOS, their Slurm ids and reasons followed, borrowing reclaimed; usage read back
from sacct; slurmctld stopped mid-run; a cluster imported; an sacct export simulated."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from allotment.backends.slurm.backend import SlurmBackend
from allotment.backends.slurm.service import import_usage, run_sync
from allotment.scheduler.config import SchedulerConfig
from allotment.service.loop import LoopConfig, SchedulerLoop
from allotment.storage import repo
from tests.slurm.conftest import Cluster, Service, wait_for

ALLOT = str(Path(sys.executable).parent / "allot")


def make_loop(c: Cluster, svc: Service, tmp_path: Path) -> SchedulerLoop:
    run_sync(svc.db, c.slurm, time.time(), dry_run=False, submit_users=["root"])
    with svc.db.session() as s:
        prefix = f"allot{repo.install_id(s)}"
    backend = SlurmBackend(c.slurm, tmp_path / "runs", prefix=prefix, usage_every_s=3600)
    return SchedulerLoop(svc.db, backend,
                         LoopConfig(scheduler=SchedulerConfig(grace_s=5, min_runtime_s=0)))


def ticking(loop: SchedulerLoop, cond: object, timeout: float = 60) -> object:
    def step() -> object:
        loop.tick()
        return cond() if callable(cond) else cond

    return wait_for(step, timeout, every=0.5)


def test_jobs_run_under_account_and_qos_and_borrowing_is_reclaimed(
        slurm: Cluster, service: Service, tmp_path: Path) -> None:
    loop = make_loop(slurm, service, tmp_path)
    # GPUs Allotment does not know about are busy: its job waits in Slurm, with Slurm's reason
    outside = [slurm.sbatch("-A", "infra", "-q", "allot_borrow", "-w", n, "--gres=gpu:4",
                            "--wrap", "sleep 300") for n in ("node1", "node2")]
    assert wait_for(lambda: all(slurm.job(s).get("state") == "RUNNING" for s in outside))
    big = service.submit("ann", "Llama", 8, "sleep 300")  # guarantee 4: 4 borrowed
    assert ticking(loop, lambda: "Reason=Resources" in service.job(big)["reason"])
    j = service.job(big)
    assert j["state"] == "starting" and j["reason"].startswith("queued in slurm: PENDING")
    sid = j["external_id"]
    assert slurm.job(sid)["account"] == "llama" and slurm.job(sid)["qos"] == "allot_borrow"
    assert slurm.job(sid)["name"] == loop.backend.job_name(big, 0)  # type: ignore[attr-defined]
    for s in outside:
        slurm.sh("scancel", s)
    assert ticking(loop, lambda: service.job(big)["state"] == "running")
    assert slurm.job(sid)["state"] == "RUNNING"
    extra = service.submit("ann", "Llama", 4, "sleep 300")  # all 4 borrowed: cluster full
    assert ticking(loop, lambda: service.job(extra)["state"] == "running")
    # vision's guaranteed job needs 8 of the 16: Allotment reclaims borrowed GPUs (TERM, grace)
    owner = service.submit("vic", "vision", 8, "sleep 300")
    assert ticking(loop, lambda: service.job(owner)["state"] == "running", 90)
    o = service.job(owner)
    assert slurm.job(o["external_id"])["qos"] == "allot_g_vision"
    assert slurm.job(o["external_id"])["account"] == "vision"
    victims = [service.job(j) for j in (big, extra) if service.job(j)["preemptions"]]
    assert len(victims) == 1 and victims[0]["attempts"] == 1
    assert victims[0]["state"] in ("pending", "starting")
    assert victims[0]["reason"].startswith("team Llama at 8/4 guaranteed gpu GPUs")
    # nothing was submitted twice: one Slurm job per (job, attempt)
    names = [r[0] for r in slurm.slurm.rows(["sacct", "-X", "-D", "-n", "-P", "-a", "-o",
                                             "jobname"]) if r[0].startswith("allot")]
    assert len(names) == len(set(names))


def test_usage_from_sacct_matches_to_the_second(slurm: Cluster, service: Service,
                                                tmp_path: Path) -> None:
    loop = make_loop(slurm, service, tmp_path)
    t0 = time.time()
    jobs = [service.submit("ann", "Llama", 2, "sleep 6"),
            service.submit("ann", "Llama", 6, "sleep 4"),  # 2 of them borrowed
            service.submit("vic", "vision", 3, "sleep 5")]
    direct = slurm.sbatch("-A", "vision", "--gres=gpu:1", "--wrap", "sleep 3")  # not Allotment's
    assert ticking(loop, lambda: all(service.job(j)["state"] == "succeeded" for j in jobs), 90), \
        [service.job(j) for j in jobs]
    assert wait_for(lambda: not slurm.job(direct) or slurm.job(direct)["state"] == "COMPLETED")
    time.sleep(2)  # sacct lags about a second
    end = time.time()
    # import_usage works in whole hours; from where the loop's own import (3 h back) may
    # have written rows, or an earlier test's jobs in the hour before t0 stay counted there
    start = (t0 - 3 * 3600) // 3600 * 3600
    n = import_usage(service.db, slurm.slurm, start, end, end)
    assert n >= 4
    # the truth, read independently from sacct: allocated GPUs x seconds inside the window
    truth: dict[str, float] = {}
    borrowed: dict[str, float] = {}
    for acct, qos, st, en, elapsed, tres in slurm.slurm.rows(
            ["sacct", "-a", "-X", "-D", "-n", "-P", "-S",
             time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(start)),
             "-o", "account,qos,start,end,elapsedraw,alloctres"]):
        gpus = sum(int(p.split("=")[1]) for p in tres.split(",") if p.startswith("gres/gpu="))
        if not gpus or not st.isdigit():
            continue
        stop = float(en) if en.isdigit() else end
        if float(st) >= t0:  # this test's jobs ran whole inside the window
            assert abs((stop - float(st)) - int(elapsed)) <= 1
        secs = max(0.0, min(stop, end) - max(float(st), start))
        truth[acct] = truth.get(acct, 0.0) + secs * gpus / 3600
        if qos == "allot_borrow":
            borrowed[acct] = borrowed.get(acct, 0.0) + secs * gpus / 3600
    usage = {r["team"]: r for r in service.call("admin", "GET", "/v1/usage").json()}
    assert truth["llama"] > 0 and truth["vision"] > 0
    for team, acct in (("Llama", "llama"), ("vision", "vision")):
        got = usage[team]["used_gpu_hours"]
        assert abs(got - truth[acct]) <= 0.01 * truth[acct], (team, got, truth[acct])
    assert abs(usage["Llama"]["borrowed_gpu_hours"] - borrowed["llama"]) <= \
        0.01 * borrowed["llama"]
    assert usage["vision"]["borrowed_gpu_hours"] == pytest.approx(borrowed.get("vision", 0.0),
                                                                  abs=1e-3)


def test_slurmctld_down_mid_run(slurm: Cluster, service: Service, tmp_path: Path) -> None:
    """The backend is reported unavailable, nothing is decided or queued twice, and the loop
    catches up when slurmctld is back."""
    loop = make_loop(slurm, service, tmp_path)
    first = service.submit("ann", "Llama", 2, "sleep 300")
    assert ticking(loop, lambda: service.job(first)["state"] == "running")
    slurm.script("stop-ctld")
    try:
        more = [service.submit("vic", "vision", 2, "sleep 300") for _ in range(3)]
        for _ in range(3):
            report = loop.tick()
            assert report.backend_error is not None and not report.admitted
        health = service.client.get("/health").json()
        assert health["backend"]["state"] == "unavailable" and health["backend"]["error"]
        assert all(service.job(j)["state"] == "pending" for j in more)
        assert service.job(first)["state"] == "running"
    finally:
        slurm.script("start-ctld")
    assert ticking(loop, lambda: all(service.job(j)["state"] == "running" for j in more), 90)
    assert service.client.get("/health").json()["backend"]["state"] == "ok"
    names = [r[0] for r in slurm.slurm.rows(["squeue", "-h", "-o", "%j"])]
    assert sorted(names) == sorted(loop.backend.job_name(j, 0)  # type: ignore[attr-defined]
                                   for j in [first, *more])
    actions = [a["action"] for a in service.call("admin", "GET", "/v1/audit").json()["items"]]
    assert "backend.unavailable" in actions and "backend.available" in actions


def test_import_cluster_and_simulate_its_sacct_export(slurm: Cluster, service: Service,
                                                      tmp_path: Path) -> None:
    run_sync(service.db, slurm.slurm, time.time(), dry_run=False, submit_users=["root"])
    conf = str(slurm.base / "etc" / "slurm.conf")
    db = f"sqlite:///{tmp_path / 'imported.db'}"
    r = subprocess.run([ALLOT, "slurm", "import", "--out", str(tmp_path / "imp"), "--db", db,
                        "--data-dir", str(tmp_path / "imported-data"), "--slurm-conf", conf],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    inv = json.loads((tmp_path / "imp" / "inventory.json").read_text())
    assert [(n["name"], n["gpus"], n["state"]) for n in inv["nodes"]] == \
        [("node1", 8, "up"), ("node2", 8, "up")]
    org = yaml.safe_load((tmp_path / "imp" / "org.yaml").read_text())["org"]
    research = next(n for n in org if n["name"] == "research")
    assert {c["name"]: c.get("guaranteed") for c in research["children"]} == \
        {"llama": {"gpu": 4}, "vision": {"gpu": 8}}
    # some history, exported with sacct, replayed by the simulator under each policy
    t0 = time.time()
    for acct, gpus, secs in (("llama", 4, 2), ("vision", 8, 3), ("llama", 2, 1)):
        slurm.sbatch("-A", acct, f"--gres=gpu:{gpus}", "--wrap", f"sleep {secs}")
    slurm.sbatch("-A", "vision", "--wrap", "sleep 1")  # no GPU: left out of the trace
    assert wait_for(lambda: not [j for j in slurm.squeue() if j["state"] != "COMPLETED"], 60)
    time.sleep(2)
    since = f"now-{int(time.time() - t0) + 1}seconds"
    export = slurm.sh("sacct", "-a", "-X", "-D", "-P", "-S", since, "-o",
                      "jobidraw,account,user,submit,start,elapsedraw,alloctres,reqtres,state")
    trace = tmp_path / "sacct.txt"
    trace.write_text(export)
    sim = subprocess.run([ALLOT, "simulate", "--trace", str(trace), "--gpus", "16",
                          "--out", str(tmp_path / "sim"), "--no-plots"],
                         capture_output=True, text=True, timeout=300)
    assert sim.returncode == 0, sim.stderr
    assert "3 jobs" in sim.stdout
