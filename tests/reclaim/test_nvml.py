"""NVML on a real NVIDIA GPU: a job holding memory without computing reads as idle, a
busy one does not. Skips with a message where there is no GPU (CI has none)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from allotment.policies.idle import IdleTracker
from allotment.reclaim.nvml import NvmlSampler

HOLD = """
import sys, time, torch
x = torch.empty(8 * 2**30, dtype=torch.uint8, device="cuda")  # 8 GiB held, no kernels
torch.cuda.synchronize(); print("ready", flush=True); time.sleep(120)
"""
BUSY = """
import sys, time, torch
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
print("ready", flush=True)
end = time.time() + 120
while time.time() < end:
    for _ in range(20):
        a = (a @ a).clamp_(-1, 1)
    torch.cuda.synchronize()
"""


@pytest.fixture(scope="module")
def sampler() -> NvmlSampler:
    s = NvmlSampler()
    if not s.available():
        pytest.skip(f"no NVIDIA GPU here ({s.error or 'NVML found no device'})")
    try:
        import torch  # noqa: F401
    except ImportError:
        pytest.skip("torch is needed to drive the GPU in this test")
    return s


@contextmanager
def running(script: str) -> Iterator[subprocess.Popen[str]]:
    """A GPU workload in a child process, ready when it prints "ready"; always reaped."""
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                          text=True) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            yield proc
        finally:
            proc.kill()
            proc.wait()


def watch(sampler: NvmlSampler, seconds: float) -> list[tuple[float, float, float]]:
    out = []
    end = time.time() + seconds
    while time.time() < end:
        s = sampler.sample()[0]
        out.append((s.time, s.util_pct, s.mem_used_mib))
        time.sleep(0.25)
    return out


def test_memory_held_without_compute_is_idle(sampler: NvmlSampler) -> None:
    """8 GiB allocated and no kernels: memory in use, utilisation under 5%: warned idle."""
    with running(HOLD):
        time.sleep(1.5)  # let the utilisation window forget the allocation's memset
        readings = watch(sampler, 4.0)
    print("hold readings (time, util %, MiB):", readings[:3], "...")
    assert min(mib for _, _, mib in readings) >= 8 * 1024
    assert max(util for _, util, _ in readings) < 5
    tracker = IdleTracker(threshold_pct=5, window_s=2.0, reclaim_after_s=1.0)
    kinds = [a.kind for t, util, _ in readings for a in tracker.observe("hold", 1, t, util)]
    assert kinds == ["warn", "reclaim"]


def test_busy_gpu_is_not_idle(sampler: NvmlSampler) -> None:
    """Back-to-back matrix products read as high utilisation and never warn."""
    with running(BUSY):
        time.sleep(1.0)
        readings = watch(sampler, 4.0)
    print("busy readings (time, util %, MiB):", readings[:3], "...")
    assert max(util for _, util, _ in readings) >= 50
    tracker = IdleTracker(threshold_pct=5, window_s=2.0, reclaim_after_s=1.0)
    assert not [a for t, util, _ in readings for a in tracker.observe("busy", 1, t, util)]
