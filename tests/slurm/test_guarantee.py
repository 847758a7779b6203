"""A team's guarantee on a real Slurm, as users typing ``sbatch`` meet it: the team's own
borrowing never holds its guaranteed jobs, Slurm requeues the team's own borrower when the
nodes are full, users cannot pass the guarantee, preempted jobs hear SIGTERM when the grace
starts, and a cluster synced by the first layout migrates in place.

Jobs are submitted as real Unix users (``alice`` of Llama, ``vera`` of vision), made here if
missing and removed at the end. They are Allotment users made here too, after their Unix
accounts: slurmctld caches a Slurm user first seen without a Unix account with no uid and
no default account (seen on 22.05: ``sbatch`` without ``-A`` then fails with "Invalid
account" until ``scontrol reconfigure``, and the default account stays unset even then)."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from allotment.backends.base import LaunchSpec
from allotment.backends.slurm.backend import SlurmBackend
from allotment.backends.slurm.service import run_sync
from allotment.storage import repo
from tests.slurm.conftest import Cluster, Service, wait_for

ALLOT = str(Path(sys.executable).parent / "allot")
# the cluster: 16 GPUs, two teams guaranteed 8 each
ORG = [{"name": "research", "children": [
    {"name": "Llama", "guaranteed": 8}, {"name": "vision", "guaranteed": 8}]}]
GRACE_S = 10  # GraceTime of allot_borrow where a test waits for a preemption


@pytest.fixture(scope="module")
def unix_users(cluster: Cluster) -> Iterator[None]:
    made = []
    for name in ("alice", "vera"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            subprocess.run(["useradd", "-M", "-s", "/bin/sh", name], check=True)
            made.append(name)
    yield
    for name in made:
        subprocess.run(["userdel", name], check=False)


@pytest.fixture
def shared(unix_users: None) -> Iterator[Path]:
    """A folder the test users can read and write (pytest's own is root's only)."""
    with tempfile.TemporaryDirectory(prefix="allot-slurm-") as d:
        os.chmod(d, 0o777)
        yield Path(d)


@pytest.fixture
def teams(slurm: Cluster, service: Service, unix_users: None) -> Service:
    """The service with the issue's org (Llama 8, vision 8), alice in Llama, vera in vision."""
    now = time.time()
    with service.db.session() as s:
        repo.set_org(s, {"org": ORG}, "test", now)
        repo.create_user(s, "alice", "member", "Llama", now)
        repo.create_user(s, "vera", "member", "vision", now)
    return service


def sync(slurm: Cluster, svc: Service, grace_s: int = 30) -> None:
    run_sync(svc.db, slurm.slurm, time.time(), dry_run=False, submit_users=["root"],
             grace_s=grace_s)


def as_user(c: Cluster, user: str, *args: str) -> subprocess.CompletedProcess[str]:
    """A Slurm command run by ``user`` (not root: no operator rights)."""
    return subprocess.run(["runuser", "-u", user, "--", "env",
                           f"SLURM_CONF={c.slurm.conf}", "SLURM_TIME_FORMAT=%s", *args],
                          capture_output=True, text=True, cwd="/tmp", timeout=60)


def sbatch(c: Cluster, user: str, *args: str) -> str:
    r = as_user(c, user, "sbatch", "--parsable", *args)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def refused(c: Cluster, user: str, *args: str) -> str:
    """The error of a command Slurm must refuse."""
    r = as_user(c, user, *args)
    assert r.returncode != 0, (args, r.stdout)
    return r.stderr


def state(c: Cluster, sid: str) -> tuple[str, str, str]:
    j = c.job(sid)
    return j.get("state", ""), j.get("reason", ""), j.get("qos", "")


def preempted(c: Cluster, sid: str) -> bool:
    return any(r[1] == "PREEMPTED" for r in c.slurm.rows(
        ["sacct", "-X", "-D", "-n", "-P", "-j", sid, "-o", "jobidraw,state"]))


def test_the_teams_own_borrower_does_not_hold_its_guaranteed_job(slurm: Cluster,
                                                                  teams: Service,
                                                                  shared: Path) -> None:
    """The issue's sequence: a borrower of Llama runs; Llama's guaranteed job starts on the
    idle GPUs (it stayed PD AssocGrpGRES with 8 GPUs idle) and is held only past 8."""
    sync(slurm, teams)
    job = shared / "job.sh"
    job.write_text("#!/bin/sh\nsleep 3000\n")
    job.chmod(0o755)
    borrower = sbatch(slurm, "alice", "-o", "/dev/null", "--qos=allot_borrow", "--gres=gpu:8",
                      str(job))
    assert wait_for(lambda: state(slurm, borrower)[0] == "RUNNING")
    t0 = time.time()
    guaranteed = sbatch(slurm, "alice", "-o", "/dev/null", "--gres=gpu:4",
                        "--wrap=sleep 3000")
    assert wait_for(lambda: state(slurm, guaranteed)[0] == "RUNNING", 30), \
        state(slurm, guaranteed)
    assert time.time() - t0 < 30  # within the grace (here: at once, on idle GPUs)
    assert state(slurm, guaranteed)[2] == "allot_g_llama"
    assert state(slurm, borrower)[0] == "RUNNING"  # idle GPUs were there: no one preempted
    more = sbatch(slurm, "alice", "-o", "/dev/null", "--gres=gpu:4", "--wrap=sleep 3000")
    assert wait_for(lambda: state(slurm, more)[0] == "RUNNING")  # 8 of 8 guaranteed
    over = sbatch(slurm, "alice", "-o", "/dev/null", "--gres=gpu:1", "--wrap=sleep 3000")
    assert wait_for(lambda: state(slurm, over)[1] == "QOSGrpGRES")  # 9 > 8: held
    assert state(slurm, over)[0] == "PENDING"


def test_guaranteed_job_requeues_the_teams_own_borrower_on_full_nodes(
        slurm: Cluster, teams: Service) -> None:
    """Llama's own borrowers hold all 16 GPUs: Llama's guaranteed job requeues one of them
    (Slurm preempts for nodes), starts within the grace, and a requeued borrower never
    takes GPUs ahead of guaranteed work."""
    sync(slurm, teams, grace_s=GRACE_S)
    borrowers = [sbatch(slurm, "alice", "-o", "/dev/null", "-q", "allot_borrow", "-w", n,
                        "--gres=gpu:8", "--wrap=sleep 3000") for n in ("node1", "node2")]
    assert wait_for(lambda: all(state(slurm, b)[0] == "RUNNING" for b in borrowers))
    t0 = time.time()
    guaranteed = sbatch(slurm, "alice", "-o", "/dev/null", "--gres=gpu:4", "--wrap=sleep 3000")
    assert wait_for(lambda: state(slurm, guaranteed)[0] == "RUNNING", GRACE_S + 40), \
        [state(slurm, j) for j in (guaranteed, *borrowers)]
    took = time.time() - t0
    # the borrower had its grace, then Slurm's kill (KillWait 5 s) and requeue: Slurm 22.05
    # ends the grace at the preemptor's next scheduling pass, measured +13 s in all here
    assert GRACE_S <= took <= GRACE_S + 30, took
    gone = [b for b in borrowers if state(slurm, b)[0] != "RUNNING"]
    assert len(gone) == 1 and state(slurm, gone[0])[0] == "PENDING"  # requeued, not killed
    assert wait_for(lambda: preempted(slurm, gone[0]), 10)
    # 4 GPUs of the requeued borrower's node are free; more guaranteed work takes them, the
    # borrower (8 GPUs, priority 0) stays queued
    second = sbatch(slurm, "alice", "-o", "/dev/null", "--gres=gpu:4", "--wrap=sleep 3000")
    assert wait_for(lambda: state(slurm, second)[0] == "RUNNING")
    assert state(slurm, gone[0])[0] == "PENDING"


def test_users_typing_sbatch_cannot_pass_their_guarantee(slurm: Cluster,
                                                         teams: Service) -> None:
    """Other account, other QOS, ``scontrol update``, ``sacctmgr modify``: all refused; a
    user an admin adds by hand inherits the team's QOS, not Slurm's unlimited ``normal``."""
    sync(slurm, teams)
    full = sbatch(slurm, "alice", "-o", "/dev/null", "--gres=gpu:8", "--wrap=sleep 3000")
    held = sbatch(slurm, "alice", "-o", "/dev/null", "--gres=gpu:2", "--wrap=sleep 3000")
    assert wait_for(lambda: state(slurm, full)[0] == "RUNNING")
    assert wait_for(lambda: state(slurm, held)[1] == "QOSGrpGRES")
    wrap = ("-o", "/dev/null", "--gres=gpu:2", "--wrap=sleep 3000")
    assert "Invalid account" in refused(slurm, "alice", "sbatch", "-A", "vision", *wrap)
    for qos in ("allot_g_vision", "normal"):
        assert "Invalid qos" in refused(slurm, "alice", "sbatch", "-q", qos, *wrap)
    for change in ("qos=allot_g_vision", "qos=normal", "account=vision", "priority=99999"):
        refused(slurm, "alice", "scontrol", "update", f"jobid={held}", change)
    assert state(slurm, held) == ("PENDING", "QOSGrpGRES", "allot_g_llama")
    refused(slurm, "alice", "sacctmgr", "-i", "modify", "qos", "where", "name=allot_g_llama",
            "set", "grptres=gres/gpu=16")
    refused(slurm, "alice", "sacctmgr", "-i", "modify", "user", "where", "name=alice", "set",
            "qos=normal,allot_borrow,allot_g_llama")
    assert slurm.slurm.rows(["sacctmgr", "-n", "-P", "show", "qos", "where",
                             "name=allot_g_llama", "format=grptres"]) == [["gres/gpu=8"]]
    # an admin adds vera to llama by hand: she inherits llama's QOS and shares its guarantee
    slurm.sh("sacctmgr", "-i", "add", "user", "vera", "account=llama")
    assert "Invalid qos" in refused(slurm, "vera", "sbatch", "-A", "llama", "-q", "normal",
                                    *wrap)
    by_hand = sbatch(slurm, "vera", "-A", "llama", *wrap)
    assert wait_for(lambda: state(slurm, by_hand)[1] == "QOSGrpGRES")
    assert state(slurm, by_hand)[2] == "allot_g_llama"
    # what a user may do: move a held job to borrowing, where it runs on idle GPUs
    moved = as_user(slurm, "alice", "scontrol", "update", f"jobid={held}", "qos=allot_borrow")
    assert moved.returncode == 0, moved.stderr
    assert wait_for(lambda: state(slurm, held)[:1] == ("RUNNING",))
    assert state(slurm, held)[2] == "allot_borrow"


def _times(path: Path) -> list[float]:
    return [float(x) for x in path.read_text().split()] if path.exists() else []


def test_preempted_jobs_hear_sigterm_when_the_grace_starts(slurm: Cluster, teams: Service,
                                                           shared: Path) -> None:
    """Four borrowers fill the cluster; guaranteed work of both teams preempts all four at
    once. A job Allotment launched (its command is a step) and a user's script that runs
    its work with ``srun``, or asks for ``--signal=B:TERM@<grace>``, hear SIGTERM within
    about a second and run on for the whole grace. A batch shell that does neither hears
    nothing before the grace is over (what the README warns about)."""
    sync(slurm, teams, grace_s=GRACE_S)
    out = shared

    def watch(tag: str) -> str:
        """A shell that writes when it hears SIGTERM and beats every 0.2 s until killed
        (each beat replaces the file whole: a reader never sees it truncated and empty)."""
        return (f"trap 'date +%s.%N >> {out}/{tag}.term' TERM; "
                f"while :; do date +%s.%N > {out}/{tag}.beat && "
                f"mv -f {out}/{tag}.beat {out}/{tag}.alive; sleep 0.2; done")

    backend = SlurmBackend(slurm.slurm, shared / "runs", prefix=f"sg{time.time_ns() % 10**6}")
    backend.launch(LaunchSpec(1, 0, "Llama", "alice", watch("allotment"), 4,
                              {"node1": [0, 1, 2, 3]}, "gpu", 4))
    step = shared / "step.sh"  # the README's advice: run the work as a step
    step.write_text(f"#!/bin/sh\nsrun sh -c \"{watch('step')}\"\n")
    batch_signal = shared / "signal.sh"  # or ask for the signal in the batch shell
    batch_signal.write_text(f"#!/bin/sh\n#SBATCH --signal=B:TERM@{GRACE_S}\n{watch('signal')}\n")
    plain = shared / "plain.sh"  # neither: the batch shell waits for the end of the grace
    plain.write_text(f"#!/bin/sh\n{watch('plain')}\n")
    jobs = [sbatch(slurm, "alice", "-o", "/dev/null", "-q", "allot_borrow", "-w", node,
                   "--gres=gpu:4", str(script))
            for node, script in (("node1", step), ("node2", batch_signal), ("node2", plain))]
    tags = ("allotment", "step", "signal", "plain")
    assert wait_for(lambda: all((out / f"{t}.alive").exists() for t in tags), 30), \
        [state(slurm, j) for j in jobs]
    time.sleep(1.0)  # the traps are set
    t0 = time.time()
    owners = [sbatch(slurm, user, "-o", "/dev/null", "-w", node, "--gres=gpu:8",
                     "--wrap=sleep 3000") for user, node in (("alice", "node1"),
                                                             ("vera", "node2"))]
    assert wait_for(lambda: all(state(slurm, o)[0] == "RUNNING" for o in owners),
                    GRACE_S + 30), [state(slurm, j) for j in (*owners, *jobs)]
    time.sleep(0.5)
    for tag in ("allotment", "step", "signal"):
        heard = _times(out / f"{tag}.term")
        last = _times(out / f"{tag}.alive")[0]
        assert heard and heard[0] - t0 < 2.5, (tag, [h - t0 for h in heard])
        assert last - heard[0] >= GRACE_S - 0.5, (tag, last - heard[0])  # the whole grace
    heard = _times(out / "plain.term")
    assert heard and heard[0] - t0 >= GRACE_S - 0.5, [h - t0 for h in heard]


OLD_LAYOUT = [  # what `allot slurm sync` at the first layout ran, for ORG and its users
    "add qos allot_borrow priority=0 preempt= preemptmode=requeue gracetime=30 "
    "grptres=gres/gpu=16",
    "add qos allot_guaranteed priority=1000 preempt=allot_borrow preemptmode=requeue "
    "gracetime=0",
    "add account research parent=root description=allotment organization=allotment",
    "add account llama parent=research description=allotment organization=allotment",
    "modify account where name=llama set grptres=gres/gpu=8",
    "add account vision parent=research description=allotment organization=allotment",
    "modify account where name=vision set grptres=gres/gpu=8",
    *(f"add user {u} account={a} qos=allot_borrow,allot_guaranteed "
      "defaultqos=allot_guaranteed"
      for u, a in (("alice", "llama"), ("ann", "llama"), ("root", "llama"),
                   ("root", "vision"), ("vera", "vision"), ("vic", "vision"))),
]


def test_a_cluster_of_the_first_layout_migrates_in_place(slurm: Cluster,
                                                         teams: Service) -> None:
    """The first layout, with the issue's stuck job and a guaranteed job running in the
    shared QOS: one sync moves the stuck job to Llama's QOS (it starts) and keeps the
    shared QOS while a job runs in it; the sync after that job ends removes it; then
    nothing is left to do, and Slurm holds what a fresh sync makes."""
    for line in OLD_LAYOUT:
        slurm.sh("sacctmgr", "-i", *line.split())
    borrower = sbatch(slurm, "alice", "-o", "/dev/null", "-q", "allot_borrow", "-w", "node1",
                      "--gres=gpu:8", "--wrap=sleep 3000")
    assert wait_for(lambda: state(slurm, borrower)[0] == "RUNNING")
    stuck = sbatch(slurm, "alice", "-o", "/dev/null", "--gres=gpu:4", "--wrap=sleep 3000")
    running = sbatch(slurm, "vera", "-o", "/dev/null", "--gres=gpu:4", "--wrap=sleep 3000")
    assert wait_for(lambda: state(slurm, stuck)[:2] == ("PENDING", "AssocGrpGRES"))  # the bug
    assert wait_for(lambda: state(slurm, running)[0] == "RUNNING")
    conf = str(slurm.slurm.conf)

    # the service's data directory, where its database has one (its audit key)
    data = getattr(getattr(teams.db, "audit", None), "data_dir", None)
    data_args = ["--data-dir", str(data)] if data is not None else []

    def allot_sync(*extra: str) -> str:
        r = subprocess.run([ALLOT, "slurm", "sync", "--db", teams.db.url, *data_args,
                            "--slurm-conf", conf, "--submit-user", "root", *extra],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    dry = allot_sync("--dry-run")
    assert f"~ job {stuck}: QOS allot_guaranteed -> allot_g_llama" in dry
    assert f"note: qos allot_guaranteed kept while 1 job(s) are still in it ({running})" in dry
    assert state(slurm, stuck)[:2] == ("PENDING", "AssocGrpGRES")  # a dry run changes nothing
    first = allot_sync()
    assert "~ account llama: GrpTRES gres/gpu=8 -> -" in first
    assert wait_for(lambda: state(slurm, stuck)[0] == "RUNNING")
    assert state(slurm, stuck)[2] == "allot_g_llama" and state(slurm, borrower)[0] == "RUNNING"
    again = allot_sync()
    assert "changed 0 thing(s)" in again and "kept while 1 job(s) are still in it" in again
    slurm.sh("scancel", running)
    assert wait_for(lambda: state(slurm, running)[0] not in ("RUNNING", "COMPLETING"))
    last = allot_sync()
    assert "- qos allot_guaranteed: replaced by one QOS per team" in last
    assert "(already in sync)" in allot_sync()
    migrated = (slurm.slurm.rows(["sacctmgr", "-n", "-P", "show", "assoc", "format=account,"
                                  "parentname,user,grptres,qos,defaultqos"]),
                slurm.slurm.rows(["sacctmgr", "-n", "-P", "show", "qos", "format=name,"
                                  "priority,preempt,preemptmode,gracetime,grptres"]))
    slurm.clean()
    allot_sync()
    fresh = (slurm.slurm.rows(["sacctmgr", "-n", "-P", "show", "assoc", "format=account,"
                               "parentname,user,grptres,qos,defaultqos"]),
             slurm.slurm.rows(["sacctmgr", "-n", "-P", "show", "qos", "format=name,"
                               "priority,preempt,preemptmode,gracetime,grptres"]))
    assert sorted(migrated[0]) == sorted(fresh[0]) and sorted(migrated[1]) == sorted(fresh[1])
