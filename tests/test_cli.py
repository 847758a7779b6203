"""The ``allot`` CLI: the simulate interface other tools rely on, and clean errors."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from allotment.cli.main import app

runner = CliRunner()
SUMMARY_KEYS = {
    "jobs": int, "utilization": float, "idle_while_waiting_gpu_hours": float,
    "reserved_idle_gpu_hours": float, "avg_jct_s": float, "p99_jct_s": float,
    "avg_queue_s": float, "min_team_guarantee_satisfaction": float, "jain_fairness": float,
    "preemptions": int, "wall_s": float,
}


def small_trace(tmp_path: Path) -> Path:
    rows = ["job_id,submit_time,duration,num_gpus,team"]
    for k in range(40):
        rows.append(f"j{k},{k * 30},{600 + 97 * (k % 7)},{[1, 2, 4, 8][k % 4]},{'ab'[k % 2]}")
    path = tmp_path / "t.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_simulate_writes_summary_and_plots(tmp_path: Path) -> None:
    """summary.json has the documented keys and types for every policy; plots exist."""
    out = tmp_path / "out"
    result = runner.invoke(app, ["simulate", "--trace", str(small_trace(tmp_path)),
                                 "--gpus", "16", "--out", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "summary.json").read_text())
    assert set(doc["policies"]) == {"static", "fifo", "las", "fairshare"}
    for entry in doc["policies"].values():
        for key, kind in SUMMARY_KEYS.items():
            assert isinstance(entry[key], kind), key
        assert entry["jobs"] == 40
    assert doc["policies"]["fairshare"]["idle_while_waiting_gpu_hours"] == 0.0
    for name in ("utilisation.png", "jct_cdf.png", "team_share.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert "fairshare" in result.output


def test_events_csv_is_the_per_job_and_per_team_log(tmp_path: Path) -> None:
    """--events writes every job's submit/admit/finish with its team."""
    out = tmp_path / "out"
    result = runner.invoke(app, ["simulate", "--trace", str(small_trace(tmp_path)), "--gpus",
                                 "16", "--policies", "fifo", "--out", str(out), "--events",
                                 "--no-plots"])
    assert result.exit_code == 0, result.output
    rows = (out / "events-fifo.csv").read_text().splitlines()
    assert rows[0] == "time,event,job_id,team,detail"
    assert "0.0,submit,j0,a,a" in rows and "0.0,admit,j0,a,0:1" in rows
    assert sum(1 for r in rows if ",finish," in r) == 40


def test_simulate_with_org_file(tmp_path: Path) -> None:
    """An org file sets guarantees; a team missing from it is named in the error."""
    org = tmp_path / "org.yaml"
    org.write_text("org:\n  - name: g\n    children:\n      - {name: a, guaranteed: 10}\n"
                   "      - {name: b, guaranteed: 6, lend_limit: 2}\n")
    out = tmp_path / "out"
    ok = runner.invoke(app, ["simulate", "--trace", str(small_trace(tmp_path)), "--gpus", "16",
                             "--org", str(org), "--policies", "fairshare", "--out", str(out),
                             "--no-plots"])
    assert ok.exit_code == 0, ok.output
    teams = json.loads((out / "summary.json").read_text())["policies"]["fairshare"]["teams"]
    assert teams["a"]["guaranteed_gpus"] == 10 and teams["b"]["guaranteed_gpus"] == 6
    org.write_text("org:\n  - {name: a, guaranteed: 10}\n")
    bad = runner.invoke(app, ["simulate", "--trace", str(small_trace(tmp_path)), "--gpus", "16",
                              "--org", str(org), "--out", str(out)])
    assert bad.exit_code == 2
    assert "teams in the trace but not in" in bad.output and "'b'" in bad.output


def test_bad_input_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    """Each mistake names its field, exits 2, and prints no traceback."""
    trace = str(small_trace(tmp_path))
    cases = [
        (["--policies", "fifo,nope"], "policies: unknown policy 'nope'"),
        (["--gpus", "0"], "gpus: must be >= 1"),
        (["--las-preemption", "all"], "las-preemption: must be none, team or surplus"),
        (["--gpus", "4"], "gpus: job j3 needs 8 GPUs"),
    ]
    for extra, message in cases:
        result = runner.invoke(app, ["simulate", "--trace", trace, "--out", str(tmp_path / "o"),
                                     *extra])
        assert result.exit_code == 2, extra
        assert message in " ".join(result.output.split()), result.output
        assert "Traceback" not in result.output
    bad = tmp_path / "bad.csv"
    bad.write_text("job_id,submit_time,duration,num_gpus,team\nx,1,1,-2,a\n")
    result = runner.invoke(app, ["simulate", "--trace", str(bad)])
    assert result.exit_code == 2 and "line 2: num_gpus" in result.output
    org = tmp_path / "org.yaml"
    org.write_text("org: [{name: a, guaranteed: {gpu: -3}}]\n")
    result = runner.invoke(app, ["simulate", "--trace", trace, "--org", str(org)])
    assert result.exit_code == 2 and "org[0].guaranteed" in result.output
