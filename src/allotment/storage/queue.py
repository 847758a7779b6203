"""The queue order the scheduler used, per GPU type: one stored row per type (the job ids
in order), written once per cycle, so that a job's queue position costs no row update when
the jobs ahead of it move; readers derive the position (1-based) from the row."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from allotment.storage import repo
from allotment.storage.models import Setting

PREFIX = "queue_order:"


def write(s: Session, order: Mapping[str, list[int]]) -> None:
    """Store each GPU type's order (types absent from ``order`` are emptied)."""
    for (key,) in s.execute(select(Setting.key).where(Setting.key.startswith(PREFIX))).all():
        if key[len(PREFIX):] not in order:
            repo.set_setting(s, key, "[]")
    for gpu_type, ids in order.items():
        repo.set_setting(s, PREFIX + gpu_type, json.dumps(ids, separators=(",", ":")))


def positions(s: Session, jobs: Iterable[tuple[int, str]]) -> dict[int, int]:
    """Queue position of each ``(job id, GPU type)`` that waits in the stored order."""
    wanted: dict[str, set[int]] = {}
    for job_id, gpu_type in jobs:
        wanted.setdefault(gpu_type, set()).add(job_id)
    out: dict[int, int] = {}
    for gpu_type, ids in wanted.items():
        raw = repo.get_setting(s, PREFIX + gpu_type)
        if not raw:
            continue
        for k, job_id in enumerate(json.loads(raw), start=1):
            if job_id in ids:
                out[job_id] = k
    return out
