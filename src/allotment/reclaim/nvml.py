"""Reading real GPUs through NVML (the nvidia-ml-py package).

``NvmlSampler.available()`` says whether an NVIDIA driver answers here; ``sample()`` reads
every GPU once: utilisation (% of the last sampling period in which a kernel ran), memory
in use, and the PIDs of compute processes. A process that holds memory but runs no kernel
reads as 0% utilisation with memory in use: allocated but idle.
"""

from __future__ import annotations

import importlib
import time
from types import ModuleType
from typing import Any

from allotment.reclaim.samples import GpuSample


def _load() -> ModuleType | None:
    try:
        return importlib.import_module("pynvml")  # provided by nvidia-ml-py
    except ImportError:
        return None


class NvmlSampler:
    """Samples every NVIDIA GPU on this machine; ``available()`` is False without one."""

    def __init__(self) -> None:
        self._nvml: Any = _load()
        self._ready = False
        self.error: str | None = None
        if self._nvml is None:
            self.error = "nvidia-ml-py is not installed"
            return
        try:
            self._nvml.nvmlInit()
            self._ready = True
        except Exception as exc:  # NVMLError: no driver, no device
            self.error = f"NVML unavailable: {exc}"

    def available(self) -> bool:
        return self._ready and self.device_count() > 0

    def device_count(self) -> int:
        return int(self._nvml.nvmlDeviceGetCount()) if self._ready else 0

    def sample(self) -> list[GpuSample]:
        if not self._ready:
            return []
        nv = self._nvml
        now = time.time()
        out = []
        for i in range(self.device_count()):
            h = nv.nvmlDeviceGetHandleByIndex(i)
            util = nv.nvmlDeviceGetUtilizationRates(h)
            mem = nv.nvmlDeviceGetMemoryInfo(h)
            uuid = nv.nvmlDeviceGetUUID(h)
            try:
                procs = nv.nvmlDeviceGetComputeRunningProcesses(h)
                pids = tuple(sorted(int(p.pid) for p in procs))
            except Exception:  # some drivers refuse process queries in containers
                pids = ()
            out.append(GpuSample(now, i, float(util.gpu), mem.used / 2**20,
                                 uuid.decode() if isinstance(uuid, bytes) else str(uuid), pids))
        return out

    def close(self) -> None:
        if self._ready:
            self._nvml.nvmlShutdown()
            self._ready = False
