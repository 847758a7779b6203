"""Launch reservations: N GPUs of one type booked for a team over a window, for a launch.

A reservation is approved before the scheduler sees it (``governance.reservations`` in the
service; the org file's ``reservations:`` in a simulation). Jobs that name it
(``Workload.reservation``) run on its GPUs during ``[start, end)``; how the scheduler frees
them by the start and lends them meanwhile is ``scheduler.launch``.
"""

from __future__ import annotations

from dataclasses import dataclass

from allotment.domain.cluster import GpuType


@dataclass(frozen=True, slots=True)
class LaunchReservation:
    """``gpus`` GPUs of ``gpu_type`` for team ``team`` from ``start`` to ``end`` (seconds on
    the scheduler's clock: trace seconds in a simulation, epoch seconds in the service)."""

    name: str
    team: str
    gpu_type: GpuType
    gpus: int
    start: float
    end: float


def held_gpus(gpus: int, node_gpus: int) -> int:
    """The GPUs a reservation of ``gpus`` takes: whole nodes of ``node_gpus`` (the type's
    largest), since the scheduler holds whole nodes for it and no two share one."""
    m = max(1, node_gpus)
    return -(-gpus // m) * m
