"""The limits live in Slurm: users who submit with ``sbatch`` directly are governed too."""

from __future__ import annotations

import time

from allotment.backends.slurm.service import run_sync
from tests.slurm.conftest import Cluster, Service, wait_for


def test_over_guarantee_held_borrowing_runs_then_is_preempted(slurm: Cluster,
                                                              service: Service) -> None:
    run_sync(service.db, slurm.slurm, time.time(), dry_run=False, submit_users=["root"])
    # llama is guaranteed 4 GPUs: its default QOS is its own guaranteed one
    first = slurm.sbatch("-A", "llama", "--gres=gpu:4", "--wrap", "sleep 300")
    over = slurm.sbatch("-A", "llama", "--gres=gpu:2", "--wrap", "sleep 300")
    assert wait_for(lambda: slurm.job(first).get("state") == "RUNNING")
    assert wait_for(lambda: slurm.job(over).get("reason") == "QOSGrpGRES")
    assert slurm.job(over)["state"] == "PENDING" and slurm.job(first)["qos"] == "allot_g_llama"
    # beyond the guarantee, on idle GPUs, under the borrowing QOS
    borrow = slurm.sbatch("-A", "llama", "-q", "allot_borrow", "--gres=gpu:8",
                          "--wrap", "sleep 300")
    assert wait_for(lambda: slurm.job(borrow).get("state") == "RUNNING")
    # vision's guaranteed work needs 8 GPUs; only 4 are free: the borrower is requeued
    owner = slurm.sbatch("-A", "vision", "--gres=gpu:8", "--wrap", "sleep 300")
    assert wait_for(lambda: slurm.job(owner).get("state") == "RUNNING", 60)
    assert slurm.job(borrow)["state"] == "PENDING"  # requeued, not cancelled
    assert slurm.job(first)["state"] == "RUNNING"  # guaranteed work is never preempted

    def preempted() -> list[list[str]]:
        return [r for r in slurm.slurm.rows(["sacct", "-X", "-D", "-n", "-P", "-j", borrow,
                                             "-o", "jobidraw,state,qos"])
                if r[1] == "PREEMPTED"]

    assert wait_for(preempted, 20)
    assert preempted()[0][2] == "allot_borrow"


def test_team_without_guarantee_can_only_borrow(slurm: Cluster, service: Service) -> None:
    run_sync(service.db, slurm.slurm, time.time(), dry_run=False, submit_users=["root"])
    held = slurm.sbatch("-A", "infra", "--gres=gpu:1", "--wrap", "sleep 300")
    ran = slurm.sbatch("-A", "infra", "-q", "allot_borrow", "--gres=gpu:1", "--wrap", "sleep 300")
    assert wait_for(lambda: slurm.job(ran).get("state") == "RUNNING")
    assert wait_for(lambda: slurm.job(held).get("reason") == "QOSGrpGRES")
