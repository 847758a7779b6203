"""Quotas synced down to a real Slurm: accounts mirroring the org tree, GrpTRES limits, QOS;
a dry run changes nothing; a second sync has nothing to do; changes are diffs."""

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


def test_dry_run_then_sync_then_nothing_to_do(slurm: Cluster, service: Service) -> None:
    conf = str(slurm.base / "etc" / "slurm.conf")
    dry = subprocess.run([ALLOT, "slurm", "sync", "--db", service.db.url, *_data(service),
                          "--slurm-conf", conf, "--dry-run"], capture_output=True, text=True,
                         timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert "+ account llama: parent=research" in dry.stdout
    assert "+ account llama: GrpTRES - -> gres/gpu=4" in dry.stdout
    assert "+ qos allot_borrow" in dry.stdout and "would change" in dry.stdout
    assert assocs(slurm) == {}  # the dry run changed nothing

    real = subprocess.run([ALLOT, "slurm", "sync", "--db", service.db.url, *_data(service),
                           "--slurm-conf", conf], capture_output=True, text=True, timeout=120)
    assert real.returncode == 0, real.stderr
    got = assocs(slurm)
    assert got == {"research": ("root", ""), "llama": ("research", "gres/gpu=4"),
                   "vision": ("research", "gres/gpu=8"), "platform": ("root", ""),
                   "infra": ("platform", "gres/gpu=0")}
    qos = {r[0]: r[1:] for r in slurm.slurm.rows(
        ["sacctmgr", "-n", "-P", "show", "qos", "format=name,priority,preempt,preemptmode,"
         "gracetime,grptres"])}
    assert qos["allot_guaranteed"] == ["1000", "allot_borrow", "requeue", "00:00:00", ""]
    assert qos["allot_borrow"] == ["0", "", "requeue", "00:00:30", "gres/gpu=16"]
    users = {(r[0], r[1]): (r[2], r[3]) for r in slurm.slurm.rows(
        ["sacctmgr", "-n", "-P", "show", "assoc", "format=user,account,qos,defaultqos"])
        if r[0]}
    assert users[("ann", "llama")] == ("allot_borrow,allot_guaranteed", "allot_guaranteed")
    assert users[("root", "vision")][1] == "allot_guaranteed"

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
    assert "~ account llama: GrpTRES gres/gpu=4 -> gres/gpu=6" in lines
    assert "- account infra: no longer in the org tree" in lines
    assert lines.index("- account infra: no longer in the org tree") < \
        lines.index("- account platform: no longer in the org tree")  # children first
    assert set(assocs(slurm)) == {"research", "llama", "vision"}
    assert assocs(slurm)["llama"] == ("research", "gres/gpu=6")
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
