"""``benchmarks/reserved_idle.py``: its breakdown of reserved idle GPU-hours must add up to
the replay's own ``reserved_idle_gpu_hours`` (it is what the next tuning is read from)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from allotment.policies import make_policy
from allotment.sim.engine import SimConfig, simulate

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "reserved_idle.py"


def _module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("reserved_idle", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_breakdown_sums_to_the_metric_and_names_each_phase() -> None:
    mod = _module()
    jobs, cluster, org = mod.make_world(2048, 7, 3)
    (t,) = org.gpu_types
    br = mod.Breakdown({w.id: (w.team, w.gpus) for w in jobs},
                       {n: org.guarantee_of(n, t) for n in org.index})
    res = simulate(jobs, cluster, org, make_policy("fairshare"), SimConfig(record_events=False),
                   observer=br)
    total_h = sum(br.gpu_s.values()) / 3600
    assert res.metrics.reserved_idle_gpu_hours > 100  # the world does hold GPUs idle
    assert abs(total_h - res.metrics.reserved_idle_gpu_hours) < 1e-6 * total_h
    phases = {k[1] for k in br.gpu_s}
    assert phases <= {"gathering", "fill or victims leaving", "reclaiming"}
    assert "gathering" in phases
    assert {k[2] for k in br.gpu_s} <= {"whole", "part", "none"}
