"""Utilisation bins: an interval that starts on a bin boundary which floating-point
rounding puts in the bin before still advances (it used to loop forever: a synthesized
LLM-lab trace, 2,048 GPUs, 2 days, seed 3, never finished under fairshare)."""

from __future__ import annotations

from allotment.sim.metrics import MetricsRecorder
from tests.builders import cluster, org, team


def test_interval_on_a_rounded_bin_boundary_advances() -> None:
    """t0 = 89,375.9 s and a = t0 + 291 h: (a - t0) // 3600 gives 290, and the end of bin
    290 is a itself."""
    from allotment.scheduler.state import ClusterState

    state = ClusterState(cluster(16), org([team("a", 16)], 16))
    rec = MetricsRecorder(state, 3600.0)
    rec.t0 = 89375.9
    a = 89375.9 + 291 * 3600.0
    rec._bin(a, a + 10.0, 4)
    assert len(rec.bins) == 292 and rec.bins[291] == 40.0
