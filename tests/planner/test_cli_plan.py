"""``allot plan``: table, JSON and Markdown, compare, capacity overrides, clean errors."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from allotment.cli.main import app

runner = CliRunner()
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_sample_scenario_plans_the_lab(tmp_path: Path) -> None:
    """The README's sample: every team explained, capacity after reserve fully used."""
    out = tmp_path / "plan.json"
    result = runner.invoke(app, ["plan", str(EXAMPLES / "lab-2026-12.yaml"), "--json", str(out),
                                 "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["capacity"] == {"h100": 15_680}
    teams = doc["teams"]
    assert sum(t["allocated"] for t in teams.values()) == 15_680
    for name, t in teams.items():
        assert set(t) >= {"gpu_type", "requested", "allocated", "reason"}, name
        assert t["allocated"] <= t["requested"]
    assert teams["llm-flagship"]["reason"].startswith("water level of group research")
    assert "idle penalty -25%" in teams["llm-frontier"]["reason"]
    assert any(c["teams"] == ["llm-flagship", "llm-frontier"] for c in doc["cooperation"])
    md = (tmp_path / "plan.md").read_text()
    assert "## Every team's quota and why" in md and "Pick one team, or let them cooperate" in md


def test_capacity_override_and_compare(tmp_path: Path) -> None:
    """+2000 GPUs raises the capped LLM teams; --compare lists per-team changes."""
    base = EXAMPLES / "lab-2026-12.yaml"
    more = runner.invoke(app, ["plan", str(base), "--capacity", "+2000", "--out", str(tmp_path)])
    assert more.exit_code == 0, more.output
    doc = json.loads((tmp_path / "plan.json").read_text())
    assert doc["capacity"] == {"h100": 17_680}
    result = runner.invoke(app, ["plan", str(base), "--compare",
                                 str(EXAMPLES / "lab-2026-12-cooperate.yaml"),
                                 "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "lab-2026-12.yaml -> lab-2026-12-cooperate.yaml" in result.output


def test_plan_errors_name_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("period: x\nas_of: 2026-11-22\ninventory: {h100: 8}\norg: [{name: a}]\n"
                   "requests: [{team: a, gpu_type: h100, gpus: lots}]\n")
    result = runner.invoke(app, ["plan", str(bad), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "requests[0].gpus" in result.output and "Traceback" not in result.output
    ok = EXAMPLES / "lab-2026-12.yaml"
    for value, message in (("tpu=+5", "unknown GPU type 'tpu'"), ("+x", "is not"),
                           ("-99999", "leaves")):
        result = runner.invoke(app, ["plan", str(ok), "--capacity", value, "--out", str(tmp_path)])
        assert result.exit_code == 2 and message in result.output, result.output
    result = runner.invoke(app, ["plan", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and "scenario: cannot read" in result.output
