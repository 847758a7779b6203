"""The Slurm backend's pure parts, without a Slurm: the sync diff, sacct parsing and
clipping, state mapping, the importer's parsers, and sacct exports as traces."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from allotment.backends.slurm import sync
from allotment.backends.slurm.accounting import parse_gpus, parse_sacct, usage_by_hour
from allotment.backends.slurm.backend import batch_command, gpu_util, run_status
from allotment.backends.slurm.importer import (
    org_from_accounts,
    own_qos_limits,
    parse_accounts,
    parse_sinfo,
)
from allotment.domain.cluster import GpuType
from allotment.domain.orgspec import org_from_data
from allotment.errors import ConfigurationError, TraceFormatError
from allotment.sim.traces import load_trace

ORG = {"org": [{"name": "research", "children": [
    {"name": "Llama", "guaranteed": 4}, {"name": "vision", "guaranteed": 8}]}]}


def tree(data: dict = ORG, cap: int = 16):  # type: ignore[no-untyped-def,type-arg]
    return org_from_data(data, {GpuType("gpu"): cap})


def test_diff_from_nothing_orders_parents_first_and_qos_before_users() -> None:
    want = sync.desired(tree(), {"Llama": ["ann"]})
    lines = [c.line() for c in sync.diff(sync.SlurmState(), want)]
    assert lines[:3] == [
        "+ qos allot_borrow: Priority=0 Preempt=- PreemptMode=requeue GraceTime=00:00:30 "
        "GrpTRES=gres/gpu=16",
        "+ qos allot_g_llama: Priority=1000 Preempt=allot_borrow PreemptMode=requeue "
        "GraceTime=00:00:00 GrpTRES=gres/gpu=4",
        "+ qos allot_g_vision: Priority=1000 Preempt=allot_borrow PreemptMode=requeue "
        "GraceTime=00:00:00 GrpTRES=gres/gpu=8"]
    assert lines[3:] == [
        "+ account research: parent=root QOS=allot_borrow DefaultQOS=allot_borrow",
        "+ account llama: parent=research QOS=allot_borrow,allot_g_llama "
        "DefaultQOS=allot_g_llama",
        "+ account vision: parent=research QOS=allot_borrow,allot_g_vision "
        "DefaultQOS=allot_g_vision",
        "+ user ann@llama: QOS=allot_borrow,allot_g_llama DefaultQOS=allot_g_llama"]
    assert not any("GrpTRES" in line for line in lines if " account " in line)


def test_diff_of_the_same_state_is_empty_and_foreign_accounts_are_left_alone() -> None:
    want = sync.desired(tree(), {"Llama": ["ann"]})
    have = sync.SlurmState(dict(want.accounts), dict(want.qos), dict(want.users))
    have.accounts["physics"] = sync.Account("physics", "root", (("gres/gpu", 2),), ours=False)
    have.accounts["old"] = sync.Account("old", "root", (), ours=True)
    have.qos["allot_g_hand"] = sync.Qos("allot_g_hand", 5, (), "cluster", 0, (), "by hand")
    assert [c.line() for c in sync.diff(have, want)] == \
        ["- account old: no longer in the org tree"]
    assert sync.notes(have, want) == []


def test_grptres_of_a_type_no_longer_limited_is_cleared() -> None:
    want = sync.desired(tree(), {})
    have = sync.SlurmState(dict(want.accounts), dict(want.qos), {})
    have.accounts["llama"] = replace(want.accounts["llama"],
                                          grp_tres=(("gres/gpu", 2), ("gres/gpu:v100", 1)))
    have.qos["allot_g_llama"] = replace(want.qos["allot_g_llama"],
                                             grp_tres=(("gres/gpu:v100", 1),))
    assert [c.args[-1] for c in sync.diff(have, want)] == \
        ["grptres=gres/gpu=4,gres/gpu:v100=-1", "grptres=gres/gpu=-1,gres/gpu:v100=-1"]


def first_layout() -> sync.SlurmState:
    """What the first layout's sync left in Slurm (read back as ``read_state`` does):
    one shared guaranteed QOS, the guarantee on each team's association."""
    have = sync.SlurmState()
    have.qos["normal"] = sync.Qos("normal", 0, (), "cluster", 0, (), "Normal QOS default")
    have.qos["allot_borrow"] = sync.Qos("allot_borrow", 0, (), "requeue", 30,
                                        (("gres/gpu", 16),), "allot_borrow")
    have.qos["allot_guaranteed"] = sync.Qos("allot_guaranteed", 1000, ("allot_borrow",),
                                            "requeue", 0, (), "allot_guaranteed")
    have.accounts["research"] = sync.Account("research", "root", (), True, ("normal",), "")
    for acct, n in (("llama", 4), ("vision", 8)):
        have.accounts[acct] = sync.Account(acct, "research", (("gres/gpu", n),), True,
                                           ("normal",), "")
    old = ("allot_borrow", "allot_guaranteed")
    have.users[("ann", "llama")] = sync.UserAssoc("ann", "llama", old, "allot_guaranteed")
    have.users[("root", "vision")] = sync.UserAssoc("root", "vision", old, "allot_guaranteed")
    return have


def test_the_first_layout_migrates_in_place_in_a_safe_order() -> None:
    """Team QOS first; users before their account's QOS list (Slurm refuses a list without
    an association's default QOS); pending jobs moved to their team's QOS before the
    association limits go (or they start in the shared QOS); the shared QOS removed last,
    once no job runs in it."""
    want = sync.desired(tree(), {"Llama": ["ann"], "vision": ["root"]})
    have = first_layout()
    have.legacy_jobs = (sync.QueuedJob("7", "llama", "PENDING"),
                        sync.QueuedJob("8", "vision", "RUNNING"))
    lines = [c.line() for c in sync.diff(have, want)]
    assert lines == [
        "+ qos allot_g_llama: Priority=1000 Preempt=allot_borrow PreemptMode=requeue "
        "GraceTime=00:00:00 GrpTRES=gres/gpu=4",
        "+ qos allot_g_vision: Priority=1000 Preempt=allot_borrow PreemptMode=requeue "
        "GraceTime=00:00:00 GrpTRES=gres/gpu=8",
        "~ user ann@llama: QOS=allot_borrow,allot_g_llama DefaultQOS=allot_g_llama",
        "~ user root@vision: QOS=allot_borrow,allot_g_vision DefaultQOS=allot_g_vision",
        "~ job 7: QOS allot_guaranteed -> allot_g_llama",
        "~ account llama: GrpTRES gres/gpu=4 -> -",
        "~ account llama: QOS normal -> allot_borrow,allot_g_llama, "
        "DefaultQOS - -> allot_g_llama",
        "~ account vision: GrpTRES gres/gpu=8 -> -",
        "~ account vision: QOS normal -> allot_borrow,allot_g_vision, "
        "DefaultQOS - -> allot_g_vision",
        "~ account research: QOS normal -> allot_borrow, DefaultQOS - -> allot_borrow"]
    job = sync.diff(have, want)[4]
    assert (job.tool, job.args) == ("scontrol", ("update", "jobid=7", "qos=allot_g_llama"))
    # job 8 runs in the shared QOS: Slurm cannot move it, so the QOS stays, and says why
    (note,) = sync.notes(have, want)
    assert "allot_guaranteed kept while 1 job(s) are still in it (8)" in note
    # once it has ended, the shared QOS goes, after everything that named it
    have.legacy_jobs = ()
    changes = sync.diff(have, want)
    assert changes[-1].line() == "- qos allot_guaranteed: replaced by one QOS per team"
    assert changes[-1].args == ("remove", "qos", "where", "name=allot_guaranteed")
    assert sync.notes(have, want) == []


def test_a_pending_job_of_an_account_that_is_no_team_keeps_the_shared_qos() -> None:
    want = sync.desired(tree(), {})
    have = first_layout()
    have.legacy_jobs = (sync.QueuedJob("9", "research", "PENDING"),)
    lines = [c.line() for c in sync.diff(have, want)]
    assert not any(line.startswith(("~ job", "- qos")) for line in lines)
    assert "(9)" in sync.notes(have, want)[0]


def test_a_removed_team_loses_its_account_then_its_qos() -> None:
    want = sync.desired(tree(), {})
    have = sync.SlurmState(dict(want.accounts), dict(want.qos), {})
    smaller = sync.desired(tree({"org": [{"name": "research", "children": [
        {"name": "Llama", "guaranteed": 4}]}]}), {})
    assert [c.line() for c in sync.diff(have, smaller)] == [
        "- account vision: no longer in the org tree",
        "- qos allot_g_vision: its team is no longer in the org tree"]


def test_several_gpu_types_are_typed_tres_and_case_clashes_are_refused() -> None:
    assert sync.gpu_tres(["a100"]) == {"a100": "gres/gpu"}
    assert sync.gpu_tres(["A100", "h100"]) == {"A100": "gres/gpu:a100", "h100": "gres/gpu:h100"}
    with pytest.raises(ConfigurationError, match="one Slurm account 'llama'"):
        sync.desired(tree({"org": [{"name": "llama"}, {"name": "Llama"}]}), {})


def test_sacct_records_are_clipped_to_the_window_and_split_by_hour() -> None:
    text = "\n".join([
        # id|name|account|user|qos|state|submit|start|end|elapsed|alloctres|reqtres|partition
        "1|a|llama|ann|allot_guaranteed|COMPLETED|0|3000|4200|1200|cpu=1,gres/gpu=2||gpu",
        "2|b|llama|ann|allot_borrow|PREEMPTED|0|3500|3700|200|gres/gpu=4||gpu",
        "3|c|physics|bob|normal|COMPLETED|0|3000|4000|1000|gres/gpu=8||gpu",
        "4|d|vision|vic|allot_guaranteed|RUNNING|0|3900|Unknown|100|gres/gpu:a100=1||gpu",
    ])
    recs = parse_sacct(text)
    assert recs[3].gpus == {"a100": 1} and recs[3].end is None
    teams = {"llama": "Llama", "vision": "vision"}
    out = usage_by_hour(recs, 3300, 4000, teams.get, lambda a: "gpu", now=4000)
    assert out[("Llama", "gpu", 0)].used_gpu_s == 2 * 300 + 4 * 100
    assert out[("Llama", "gpu", 0)].borrowed_gpu_s == 4 * 100
    assert out[("Llama", "gpu", 3600)].used_gpu_s == 2 * 400 + 4 * 100
    assert out[("Llama", "gpu", 3600)].preemptions == 1  # counted in the hour it ended
    assert out[("vision", "a100", 3600)].used_gpu_s == 100
    assert not any(k[0] == "physics" for k in out)  # not a team: left out


def test_slurm_states_map_to_run_states() -> None:
    assert run_status("PENDING", "AssocGrpGRES", "").detail == "PENDING (Reason=AssocGrpGRES)"
    assert run_status("RUNNING", "None", "").state == "alive"
    assert run_status("COMPLETED", "", "0:0").exit_code == 0
    assert run_status("FAILED", "", "3:0").exit_code == 3
    assert run_status("CANCELLED+", "", "0:15").exit_code == 143
    assert run_status("NODE_FAIL", "", "").state == "gone"
    assert run_status("REQUEUED", "", "").state == "queued"
    assert parse_gpus("billing=1,gres/gpu=4,gres/gpu:a100=4") == {"": 4, "a100": 4}


def test_import_parsers_build_inventory_and_org() -> None:
    nodes = parse_sinfo("n1|gpu:a100:8(S:0-1)|idle\nn1|gpu:a100:8(S:0-1)|idle\n"
                        "n2|gpu:8|down*\nc1|(null)|idle\n", "h100")
    assert [(n.name, n.gpu_type, n.gpus, n.state) for n in nodes] == \
        [("n1", "a100", 8, "up"), ("n2", "h100", 8, "down")]
    rows = parse_accounts("root||||1\nroot||root||1\nresearch|root|||1\n"
                          "llama|research||gres/gpu=4|2\nllama||ann|||\nphysics|root|||parent\n")
    org = org_from_accounts(rows, ["gpu"])
    assert org == [{"name": "physics"}, {"name": "research", "weight": 1, "children": [
        {"name": "llama", "weight": 2, "guaranteed": {"gpu": 4}}]}]


def test_a_guarantee_is_read_from_a_qos_of_the_accounts_own() -> None:
    """What ``allot slurm sync`` makes imports back: the team QOS's limit is the guarantee;
    the shared borrowing QOS (preempted) and a QOS several accounts share are no guarantee."""
    assoc = ("root||normal\nresearch||allot_borrow\nllama||allot_g_llama\n"
             "llama|ann|allot_g_llama\nvision||allot_g_vision\nphys||normal\nbio||normal\n")
    qos = ("normal||gres/gpu=64\nallot_borrow||gres/gpu=16\n"
           "allot_g_llama|allot_borrow|gres/gpu=4\nallot_g_vision|allot_borrow|\n")
    own = own_qos_limits(assoc, qos)
    assert own == {"llama": "gres/gpu=4"}
    rows = parse_accounts("research|root|||\nllama|research|||\nvision|research||gres/gpu=2|\n")
    assert org_from_accounts(rows, ["gpu"], own) == [{"name": "research", "children": [
        {"name": "llama", "guaranteed": {"gpu": 4}},
        {"name": "vision", "guaranteed": {"gpu": 2}}]}]


def test_an_sacct_export_is_a_trace(tmp_path: Path) -> None:
    p = tmp_path / "sacct.txt"
    p.write_text(
        "JobIDRaw|Account|User|Submit|Start|ElapsedRaw|AllocTRES|ReqTRES|State|\n"
        "10|llama|ann|2026-01-01T10:00:00|2026-01-01T10:00:05|100|gres/gpu=4|gres/gpu=4|"
        "PREEMPTED|\n"
        "10|llama|ann|2026-01-01T10:00:00|2026-01-01T10:05:00|600|gres/gpu=4|gres/gpu=4|"
        "COMPLETED|\n"
        "11|vision|vic|2026-01-01T10:01:00|2026-01-01T10:01:00|50|gres/gpu:a100=2|"
        "gres/gpu:a100=2|COMPLETED|\n"
        "12|vision|vic|2026-01-01T10:02:00|2026-01-01T10:02:00|50|cpu=1|cpu=1|COMPLETED|\n"
        "13|vision|vic|2026-01-01T10:03:00|Unknown|0||gres/gpu=1|CANCELLED by 0|\n")
    jobs = load_trace(str(p))
    assert [(w.id, w.team, w.gpus, w.submit_time, w.duration, w.gpu_type) for w in jobs] == [
        ("10", "llama", 4, 0.0, 600.0, "gpu"), ("11", "vision", 2, 60.0, 50.0, "a100")]
    bad = tmp_path / "bad.txt"
    bad.write_text("JobIDRaw|Account|Submit|ElapsedRaw|AllocTRES|\n"
                   "1|llama|yesterday|10|gres/gpu=1|\n")
    with pytest.raises(TraceFormatError, match="line 2: Submit"):
        load_trace(str(bad))


def test_gpu_utilisation_from_sstat() -> None:
    out = ("cpu=00:00:01,gres/gpumem=1024M,gres/gpuutil=3,mem=4M\n"
           "cpu=00:00:09,gres/gpuutil=41\n")
    assert gpu_util(out) == 41.0
    assert gpu_util("cpu=00:00:01,mem=4M\n") is None  # fake GPUs: nothing gathered


def test_a_one_node_command_runs_as_a_step_and_a_multi_node_one_in_the_batch_shell(
        tmp_path: Path) -> None:
    """Preemption signals steps at once and the batch shell only when the grace is over;
    a step that cannot start (no slurmctld) falls back to the batch shell. Run here with a
    stand-in ``srun`` that starts the step, or fails as srun does without a controller."""
    import subprocess

    script = batch_command("echo \"ran: $0\" \"it's\"; exit 3", 1)
    assert "srun --overlap --ntasks=1 --nodes=1 /bin/sh -c" in script
    assert batch_command("srun python train.py", 2) == "srun python train.py"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    srun = bin_dir / "srun"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "TMPDIR": str(tmp_path), "SLURM_JOB_ID": "7"}
    outcomes = []
    for fake in ('shift 3; exec "$@"', "echo 'srun: error: Unable to contact slurm controller'"
                 " >&2; exit 1"):
        srun.write_text(f"#!/bin/sh\n{fake}\n")
        srun.chmod(0o755)
        r = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, env=env,
                           timeout=10)
        outcomes.append((r.returncode, r.stdout, "did not start" in r.stderr))
    assert outcomes == [(3, "ran: /bin/sh it's\n", False), (3, "ran: /bin/sh it's\n", True)]
    assert not (tmp_path / "allotment-step-7").exists()  # the marker is cleaned up
