"""Launch reservations in ``allot simulate``: the org file's ``reservations:``, the trace's
``reservation`` column, ``summary.json``'s ``reservations``, and on an LLM-lab workload a
gang naming a reservation starting within 60 s of its start with little held idle."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from allotment.cli.main import app
from allotment.domain.cluster import GpuType
from allotment.domain.orgspec import org_from_data, reservations_from_data
from allotment.domain.reservation import LaunchReservation
from allotment.errors import OrgFileError
from allotment.sim.synth import llm_lab, org_data, trace_csv

GRACE_S = 60.0  # the default grace period
LEAD_S = 600.0  # the default reservation lead


def _lab(tmp_path: Path, start: float, gang_submit: float, gpus: int = 1024
         ) -> tuple[Path, Path]:
    """A synthesized 4,096-GPU LLM lab over 5 days, with genai's reservation of ``gpus``
    GPUs for 24 h from ``start`` and a gang of that size naming it."""
    lab = llm_lab(4096, 5, seed=3)
    rows = list(csv.reader(trace_csv(lab).splitlines()))
    rows[0].append("reservation")
    for r in rows[1:]:
        r.append("")
    rows.append(["launch", f"{gang_submit:.1f}", "36000.0", str(gpus), "genai", "genai", "",
                 "flagship-launch"])
    rows[1:] = sorted(rows[1:], key=lambda r: float(r[1]))
    trace = tmp_path / "lab.csv"
    with trace.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    org = org_data(lab)
    org["reservations"] = [{"name": "flagship-launch", "team": "genai", "gpus": gpus,
                            "start": start, "hours": 24}]
    org_file = tmp_path / "org.yaml"
    org_file.write_text(yaml.safe_dump(org))
    return trace, org_file


def _simulate(tmp_path: Path, trace: Path, org: Path, policies: str = "fairshare",
              engine: str = "memory") -> dict[str, object]:
    out = tmp_path / f"out-{engine}"
    res = CliRunner().invoke(app, ["simulate", "--trace", str(trace), "--org", str(org),
                                   "--gpus", "4096", "--policies", policies, "--events",
                                   "--engine", engine, "--out", str(out)])
    assert res.exit_code == 0, res.output
    summary: dict[str, object] = json.loads((out / "summary.json").read_text())
    return summary


@pytest.mark.parametrize("early_s", [0.0, 7200.0])
def test_llm_lab_gang_starts_within_60_s_of_the_start(tmp_path: Path, early_s: float) -> None:
    """Submitted at the start or two hours before it: the gang starts within 60 s of the
    start, N GPUs were ready by then, and the GPUs held idle before the start stay under
    N x (grace + 10 min)."""
    start = 3 * 86400.0  # the lab is busy then: borrowers run on what becomes R's nodes
    trace, org = _lab(tmp_path, start, start - early_s)
    summary = _simulate(tmp_path, trace, org)
    pol = summary["policies"]["fairshare"]  # type: ignore[index]
    res = pol["reservations"]["flagship-launch"]
    assert res["team"] == "genai" and res["gpus"] == 1024 and res["start_s"] == start
    assert res["ready_s"] is not None and res["ready_s"] <= start
    assert res["held_idle_before_start_gpu_hours"] <= 1024 * (GRACE_S + LEAD_S) / 3600
    assert res["used_gpu_hours"] == pytest.approx(1024 * 10)
    with (tmp_path / "out-memory" / "events-fairshare.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    admits = [float(r["time"]) for r in rows if r["job_id"] == "launch" and r["event"] == "admit"]
    assert admits and start <= admits[0] <= start + 60
    freed = [float(r["time"]) for r in rows
             if r["event"] == "preempt" and r["detail"] == "for reservation:flagship-launch"]
    assert freed and all(t == start - GRACE_S for t in freed)
    assert pol["unfinished"] == 0 and pol["rejected"] == 0


def test_org_file_reservations_are_checked() -> None:
    cap = {GpuType("gpu"): 64}
    base = {"org": [{"name": "a", "guaranteed": 32}, {"name": "b", "guaranteed": 32}]}
    tree = org_from_data(base, cap)
    ok = dict(base, reservations=[
        {"name": "r1", "team": "a", "gpus": 48, "start": 100, "hours": 1},
        {"name": "r2", "team": "b", "gpus": 16, "start": 1000, "hours": 2}])
    assert reservations_from_data(ok, tree) == [
        LaunchReservation("r1", "a", GpuType("gpu"), 48, 100.0, 3700.0),
        LaunchReservation("r2", "b", GpuType("gpu"), 16, 1000.0, 8200.0)]
    bad = [
        ({"name": "r", "team": "nobody", "gpus": 8, "start": 0, "hours": 1},
         "reservations[0].team"),
        ({"name": "r", "team": "a", "gpus": 8, "start": 0, "hours": 0}, "reservations[0].hours"),
        ({"name": "r", "team": "a", "gpus": 8, "start": float("nan"), "hours": 1},
         "reservations[0].start"),
        ({"name": "r r", "team": "a", "gpus": 8, "start": 0, "hours": 1},
         "reservations[0].name"),
        ({"name": "r", "team": "a", "gpus": 8, "gpu_type": "h100", "start": 0, "hours": 1},
         "reservations[0].gpu_type"),
    ]
    for spec, field in bad:
        with pytest.raises(OrgFileError) as err:
            reservations_from_data(dict(base, reservations=[spec]), tree)
        assert err.value.field == field, (spec, err.value)
    # overlapping: 48 + 24 > 64 at t=1000, naming the other one and the GPUs short
    clash = dict(base, reservations=[
        {"name": "r1", "team": "a", "gpus": 48, "start": 0, "hours": 1},
        {"name": "r2", "team": "b", "gpus": 24, "start": 1000, "hours": 1}])
    with pytest.raises(OrgFileError) as err:
        reservations_from_data(clash, tree)
    assert err.value.field == "reservations[1].gpus"
    assert "8 gpu GPUs short" in str(err.value) and "r1" in str(err.value)
    # counted in whole nodes of 8 (no two reservations share a node): 3 x 4 GPUs on 16
    # fit in GPUs but need 3 nodes of the 2
    small = org_from_data({"org": [{"name": "a", "guaranteed": 16}]}, {GpuType("gpu"): 16})
    three = {"org": [{"name": "a", "guaranteed": 16}], "reservations": [
        {"name": f"r{k}", "team": "a", "gpus": 4, "start": 0, "hours": 1} for k in range(3)]}
    assert len(reservations_from_data(three, small)) == 3
    with pytest.raises(OrgFileError) as err:
        reservations_from_data(three, small, {GpuType("gpu"): 8})
    assert err.value.field == "reservations[2].gpus" and "whole nodes of 8" in str(err.value)


def test_trace_naming_an_unknown_reservation_is_refused_by_name(tmp_path: Path) -> None:
    trace, org = _lab(tmp_path, 86400.0, 86400.0)
    data = yaml.safe_load(org.read_text())
    data["reservations"][0]["name"] = "other"
    org.write_text(yaml.safe_dump(data))
    res = CliRunner().invoke(app, ["simulate", "--trace", str(trace), "--org", str(org),
                                   "--gpus", "4096", "--policies", "fairshare",
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code != 0
    assert "reservation" in res.output and "flagship-launch" in res.output
    assert "Traceback" not in res.output
