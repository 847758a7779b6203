"""``allot trace synth --scenario llm-lab``: deterministic for a seed, readable by
``allot simulate``, with an org file whose guarantees fit the cluster."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from allotment.cli.main import app
from allotment.domain.cluster import GpuType
from allotment.domain.orgspec import org_from_data
from allotment.sim.synth import llm_lab, org_data, trace_csv
from allotment.sim.traces import load_trace


def test_same_seed_same_bytes_other_seed_other_trace() -> None:
    """A seed fixes the trace and its org file byte for byte; another seed changes it."""
    a, b = llm_lab(2048, 5, seed=7), llm_lab(2048, 5, seed=7)
    assert trace_csv(a) == trace_csv(b) and org_data(a) == org_data(b)
    assert trace_csv(llm_lab(2048, 5, seed=8)) != trace_csv(a)


def test_reference_scenario_shape() -> None:
    """At 16,384 GPUs: three LLM teams with 4,096-, 2,048- and 1,024-GPU pre-training gangs
    that run all month, genai's demand rising to its launch, 1-64 GPU research jobs, early
    failures, declared limits never shorter than the run, about 108% demand."""
    tr = llm_lab(16384, 30, seed=1)
    pre = {j.team: j.num_gpus for j in tr.jobs if j.user.endswith("-pretrain")}
    assert pre == {"llm-a": 4096, "llm-b": 2048, "llm-c": 1024}
    labs = {"vision", "speech", "robotics", "safety", "rl", "science"}
    assert {j.num_gpus for j in tr.jobs if j.team in labs} == {1, 2, 4, 8, 16, 32, 64}
    assert sum(tr.guarantees.values()) == 16384
    assert 13_000 < len(tr.jobs) < 15_000
    assert 1.0 < tr.demand_fraction() < 1.15
    assert sum(j.duration < 300 for j in tr.jobs) / len(tr.jobs) > 0.15
    assert all(j.time_limit_s is None or j.time_limit_s >= j.duration for j in tr.jobs)
    genai = [j for j in tr.jobs if j.team == "genai"]
    first = sum(j.num_gpus * j.duration for j in genai if j.submit_time < 10 * 86400)
    last = sum(j.num_gpus * j.duration for j in genai if j.submit_time >= 20 * 86400)
    assert last > 1.3 * first
    for team in ("llm-a", "llm-b", "llm-c"):  # one run at a time, all month
        segs = sorted((j.submit_time, j.duration) for j in tr.jobs
                      if j.team == team and j.user.endswith("-pretrain"))
        assert segs[0][0] < 86400 and segs[-1][0] + segs[-1][1] > 29 * 86400


def test_cli_writes_a_trace_and_org_that_simulate_reads(tmp_path: Path) -> None:
    """The CSV loads with its time limits; the org file's guarantees fit the cluster."""
    out, org_out = tmp_path / "lab.csv", tmp_path / "org.yaml"
    res = CliRunner().invoke(app, ["trace", "synth", "--scenario", "llm-lab", "--gpus", "1024",
                                   "--days", "3", "--seed", "2", "--out", str(out),
                                   "--org-out", str(org_out)])
    assert res.exit_code == 0, res.output
    jobs = load_trace(str(out))
    assert jobs and any(w.estimate_s is not None for w in jobs)
    tree = org_from_data(yaml.safe_load(org_out.read_text()), {GpuType("gpu"): 1024})
    assert {w.team for w in jobs} <= set(tree.team_ids)
    assert sum(tree.guarantee_of(t, GpuType("gpu")) for t in tree.team_ids) == 1024
    again = tmp_path / "again.csv"
    CliRunner().invoke(app, ["trace", "synth", "--gpus", "1024", "--days", "3", "--seed", "2",
                             "--out", str(again)])
    assert again.read_bytes() == out.read_bytes()


def test_bad_arguments_name_the_field(tmp_path: Path) -> None:
    for args, field in ((["--scenario", "hpc"], "scenario"), (["--days", "0"], "days"),
                        (["--gpus", "16"], "gpus")):
        res = CliRunner().invoke(app, ["trace", "synth", "--out", str(tmp_path / "x.csv"),
                                       *args])
        assert res.exit_code == 2 and f"{field}:" in res.output, res.output
