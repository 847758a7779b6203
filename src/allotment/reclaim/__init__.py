"""Measuring real GPU utilisation: samplers at the edge (NVML, pushed files)."""

from allotment.reclaim.samples import GpuSample, read_pushed_samples

__all__ = ["GpuSample", "read_pushed_samples"]
