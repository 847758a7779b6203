"""``allot simulate`` with budgets and credits: the org file's ``budgets:`` beside ``org:``,
``--credit-half-life-s``, the per-team ``summary.json`` keys on both engines, and bad
budgets as one-line errors naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from allotment.cli.main import app

runner = CliRunner()
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "credit"


@pytest.mark.parametrize("engine", ["memory", "service"])
def test_summary_has_budget_and_credit_keys(tmp_path: Path, engine: str) -> None:
    """The credit example with a budget for batch: summary.json per team has
    budget_gpu_hours, used_gpu_hours, over_budget_since_s and credit_gpu_hours."""
    org = tmp_path / "org.yaml"
    org.write_text((EXAMPLE / "org.yaml").read_text()
                   + "budgets:\n  - {team: batch, gpu_hours: 100}\n")
    out = tmp_path / "out"
    r = runner.invoke(app, ["simulate", "--trace", str(EXAMPLE / "trace.csv"), "--org", str(org),
                            "--gpus", "32", "--policies", "fairshare", "--out", str(out),
                            "--no-plots", "--credit-half-life-s", "86400", "--engine", engine])
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "summary.json").read_text())
    teams = doc["policies"]["fairshare"]["teams"]
    assert teams["batch"]["budget_gpu_hours"] == 100.0
    assert teams["batch"]["used_gpu_hours"] > 100.0
    assert teams["batch"]["over_budget_since_s"] > 0
    assert teams["lender"]["budget_gpu_hours"] is None
    assert teams["lender"]["over_budget_since_s"] is None
    assert teams["lender"]["credit_gpu_hours"] > 0
    assert teams["hoarder"]["credit_gpu_hours"] == 0.0
    assert doc["credit_half_life_s"] == 86400.0


@pytest.mark.parametrize(("budgets", "field"), [
    ("[{team: nobody, gpu_hours: 1}]", "budgets[0].team"),
    ("[{team: batch, gpu_hours: -1}]", "budgets[0].gpu_hours"),
    ("[{team: batch, gpu_type: h100, gpu_hours: 1}]", "budgets[0].gpu_type"),
    ("[{team: batch, gpu_hours: 1}, {team: batch, gpu_hours: 2}]", "budgets[1]"),
    ("[{team: batch}]", "budgets[0].gpu_hours"),
])
def test_bad_budget_is_a_one_line_error(tmp_path: Path, budgets: str, field: str) -> None:
    org = tmp_path / "org.yaml"
    org.write_text((EXAMPLE / "org.yaml").read_text() + f"budgets: {budgets}\n")
    r = runner.invoke(app, ["simulate", "--trace", str(EXAMPLE / "trace.csv"), "--org", str(org),
                            "--gpus", "32", "--policies", "fairshare",
                            "--out", str(tmp_path / "o"), "--no-plots"])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    assert f"error: {field}" in r.output, r.output


def test_bad_credit_half_life_is_an_error(tmp_path: Path) -> None:
    r = runner.invoke(app, ["simulate", "--trace", str(EXAMPLE / "trace.csv"), "--org",
                            str(EXAMPLE / "org.yaml"), "--gpus", "32", "--policies", "fairshare",
                            "--out", str(tmp_path / "o"), "--no-plots",
                            "--credit-half-life-s", "0"])
    assert r.exit_code == 2 and "credit_half_life_s" in r.output, r.output
