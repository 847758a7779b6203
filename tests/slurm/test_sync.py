"""Quotas synced down to a real Slurm: accounts mirroring the org tree, one QOS per team
with its guarantee, the borrowing QOS; a dry run changes nothing; a second sync has nothing
to do; changes are diffs."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from allotment.backends.slurm.service import run_sync
from allotment.storage import repo
from tests.slurm.conftest import Cluster, Service

ALLOT = str(Path(sys.executable).parent / "allot")


def _data(service: Service) -> list[str]:
    """The service's data directory (its audit key and head file) for the CLI."""
    return ["--data-dir", str(service.db.audit.data_dir)]


def assocs(c: Cluster) -> dict[str, tuple[str, str]]:
    """account -> (parent, grptres) of the account associations."""
    return {r[0]: (r[1], r[3]) for r in c.slurm.rows(
        ["sacctmgr", "-n", "-P", "show", "assoc", "format=account,parentname,user,grptres"])
        if not r[2] and r[0] != "root"}


def qos_rows(c: Cluster) -> dict[str, list[str]]:
    """QOS name -> [priority, preempt, preemptmode, gracetime, grptres]."""
    return {r[0]: r[1:] for r in c.slurm.rows(
        ["sacctmgr", "-n", "-P", "show", "qos", "format=name,priority,preempt,preemptmode,"
         "gracetime,grptres"])}


def test_dry_run_then_sync_then_nothing_to_do(slurm: Cluster, service: Service) -> None:
    conf = str(slurm.base / "etc" / "slurm.conf")
    dry = subprocess.run([ALLOT, "slurm", "sync", "--db", service.db.url, *_data(service),
                          "--slurm-conf", conf, "--dry-run"], capture_output=True, text=True,
                         timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert "+ account llama: parent=research QOS=allot_borrow,allot_g_llama " \
        "DefaultQOS=allot_g_llama" in dry.stdout
    assert "+ qos allot_g_llama: Priority=1000 Preempt=allot_borrow PreemptMode=requeue " \
        "GraceTime=00:00:00 GrpTRES=gres/gpu=4" in dry.stdout
    assert "+ qos allot_borrow" in dry.stdout and "would change" in dry.stdout
    assert assocs(slurm) == {}  # the dry run changed nothing

    real = subprocess.run([ALLOT, "slurm", "sync", "--db", service.db.url, *_data(service),
                           "--slurm-conf", conf], capture_output=True, text=True, timeout=120)
    assert real.returncode == 0, real.stderr
    got = assocs(slurm)  # no association carries a limit: the team QOS do
    assert got == {"research": ("root", ""), "llama": ("research", ""),
                   "vision": ("research", ""), "platform": ("root", ""),
                   "infra": ("platform", "")}
    qos = qos_rows(slurm)
    assert qos["allot_g_llama"] == ["1000", "allot_borrow", "requeue", "00:00:00", "gres/gpu=4"]
    assert qos["allot_g_vision"] == ["1000", "allot_borrow", "requeue", "00:00:00",
                                     "gres/gpu=8"]
    assert qos["allot_g_infra"][-1] == "gres/gpu=0"
    assert qos["allot_borrow"] == ["0", "", "requeue", "00:00:30", "gres/gpu=16"]
    assert "allot_guaranteed" not in qos
    lists = {(r[0], r[1]): (r[2], r[3]) for r in slurm.slurm.rows(
        ["sacctmgr", "-n", "-P", "show", "assoc", "format=user,account,qos,defaultqos"])}
    assert lists[("ann", "llama")] == ("allot_borrow,allot_g_llama", "allot_g_llama")
    assert lists[("", "llama")] == ("allot_borrow,allot_g_llama", "allot_g_llama")
    assert lists[("root", "vision")] == ("allot_borrow,allot_g_vision", "allot_g_vision")
    assert lists[("", "research")] == ("allot_borrow", "allot_borrow")

    again = run_sync(service.db, slurm.slurm, time.time(), dry_run=False, submit_users=["root"])
    assert again.changes == []
    actions = [a["action"] for a in service.call("admin", "GET", "/v1/audit").json()["items"]]
    assert actions.count("slurm.synced") == 1


def test_a_new_plan_is_a_diff_and_removed_teams_go(slurm: Cluster, service: Service) -> None:
    run_sync(service.db, slurm.slurm, time.time(), dry_run=False, submit_users=["root"])
    org = [{"name": "research", "children": [
        {"name": "Llama", "guaranteed": 6}, {"name": "vision", "guaranteed": 8}]}]
    with service.db.session() as s:
        repo.set_org(s, {"org": org}, "test", time.time())
    res = run_sync(service.db, slurm.slurm, time.time(), dry_run=False, submit_users=["root"])
    lines = [c.line() for c in res.changes]
    assert "~ qos allot_g_llama: Priority=1000 Preempt=allot_borrow PreemptMode=requeue " \
        "GraceTime=00:00:00 GrpTRES=gres/gpu=6" in lines
    assert "- account infra: no longer in the org tree" in lines
    assert lines.index("- account infra: no longer in the org tree") < \
        lines.index("- account platform: no longer in the org tree")  # children first
    assert lines[-1] == "- qos allot_g_infra: its team is no longer in the org tree"
    assert set(assocs(slurm)) == {"research", "llama", "vision"}
    assert qos_rows(slurm)["allot_g_llama"][-1] == "gres/gpu=6"
    assert "allot_g_infra" not in qos_rows(slurm)
    assert run_sync(service.db, slurm.slurm, time.time(), dry_run=False,
                    submit_users=["root"]).changes == []


def test_accounts_differing_only_in_case_are_refused(slurm: Cluster, service: Service) -> None:
    org = [{"name": "llama", "guaranteed": 2}, {"name": "LLAMA", "guaranteed": 2}]
    with service.db.session() as s:
        repo.set_org(s, {"org": org}, "test", time.time())
    r = subprocess.run([ALLOT, "slurm", "sync", "--db", service.db.url, *_data(service),
                        "--slurm-conf", str(slurm.base / "etc" / "slurm.conf")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "'LLAMA' and 'llama' are one Slurm account 'llama'" in r.stderr
    assert assocs(slurm) == {}
