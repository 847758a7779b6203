"""Idle detection: warn after the window, reclaim after the grace, reset on activity."""

from __future__ import annotations

from pathlib import Path

import pytest

from allotment.errors import InputError
from allotment.policies.idle import IdleTracker
from allotment.reclaim import read_pushed_samples


def feed(tracker: IdleTracker, samples: list[tuple[float, float]]) -> list[tuple[str, float]]:
    out = []
    for t, util in samples:
        out += [(a.kind, a.time) for a in tracker.observe("j", 4, t, util)]
    return out


def test_idle_job_is_warned_then_reclaimed() -> None:
    """Under 5% from t=0: warned at 30 min, reclaimed 10 min later; idle GPU-hours count."""
    tracker = IdleTracker(threshold_pct=5, window_s=1800, reclaim_after_s=600)
    actions = feed(tracker, [(t, 0.0) for t in range(0, 2401, 300)])
    assert actions == [("warn", 1800), ("reclaim", 2400)]
    assert tracker.idle_gpu_hours("j") == pytest.approx(4 * 2400 / 3600)


def test_activity_resets_the_window_and_the_warning() -> None:
    tracker = IdleTracker(threshold_pct=5, window_s=600, reclaim_after_s=600)
    actions = feed(tracker, [(0, 1), (600, 1), (900, 80), (1200, 2), (1800, 2), (2400, 2)])
    assert actions == [("warn", 600), ("warn", 1800), ("reclaim", 2400)]


def test_no_reclaim_when_policy_says_warn_only() -> None:
    tracker = IdleTracker(window_s=60, reclaim_after_s=60, reclaim=False)
    assert feed(tracker, [(0, 0), (60, 0), (600, 0)]) == [("warn", 60)]


def test_pushed_samples_report_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text('{"time": 1, "job_id": "a", "gpu": 0, "util_pct": 3}\n'
                    '{"time": 2, "job_id": "a", "util_pct": 300}\nnot json\n')
    with pytest.raises(InputError, match=r"line 2: util_pct 300.0 outside .*line 3"):
        read_pushed_samples(path)
    path.write_text('{"time": 1, "job_id": "a", "gpu": 1, "util_pct": 3, "mem_used_mib": 9}\n')
    [s] = read_pushed_samples(path)
    assert (s.time, s.job_id, s.gpu, s.util_pct, s.mem_used_mib) == (1.0, "a", 1, 3.0, 9.0)
