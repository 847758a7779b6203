"""GPU utilisation samples and the push/file sampler (for fake GPUs and tests).

Pushed samples are JSON lines, one sample a line:
    {"time": 1700000000.0, "job_id": "j1", "gpu": 0, "util_pct": 3.5, "mem_used_mib": 20480}
``time`` in seconds (Unix), ``util_pct`` in [0, 100]. Bad lines are reported with their
line number; none is dropped silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from allotment.errors import InputError


@dataclass(frozen=True, slots=True)
class GpuSample:
    """One reading of one GPU: utilisation over the driver's last sampling period, memory
    in use, and the processes holding it (NVML) or the job it was pushed for (file)."""

    time: float
    gpu: int
    util_pct: float
    mem_used_mib: float
    gpu_uuid: str = ""
    pids: tuple[int, ...] = ()
    job_id: str | None = None


def read_pushed_samples(path: Path) -> list[GpuSample]:
    """Samples pushed to a JSON-lines file; raises ``InputError`` listing bad lines."""
    out: list[GpuSample] = []
    problems: list[str] = []
    for k, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            util = float(raw["util_pct"])
            if not 0 <= util <= 100:
                raise ValueError(f"util_pct {util} outside [0, 100]")
            out.append(GpuSample(float(raw["time"]), int(raw.get("gpu", 0)), util,
                                 float(raw.get("mem_used_mib", 0.0)),
                                 job_id=str(raw["job_id"]) if "job_id" in raw else None))
        except (ValueError, KeyError, TypeError) as exc:
            problems.append(f"line {k}: {exc}")
    if problems:
        raise InputError("samples", f"{path}: " + "; ".join(problems[:10]))
    return out
