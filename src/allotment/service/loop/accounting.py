"""Accounting: integrate the GPU-seconds each team used, borrowed, lent, left idle and was
guaranteed since the last tick, with the jobs as they were over that interval (before this
tick changes them), into its usage row of the hour (``usage``: the planner's history and
``allot usage``). Lent time is all borrowed GPU-time of a type, attributed to the teams with
unused guarantee of that type, pro rata of what each leaves unused
(``service.holdings.lent``)."""

from __future__ import annotations

from sqlalchemy import select

from allotment.domain.jobstate import JobState
from allotment.service.holdings import guarantees, holdings, lent
from allotment.service.loop.live import Live
from allotment.storage import repo
from allotment.storage.db import Database
from allotment.storage.models import UsageRow

KEY = "accounted_until"


def account(db: Database, live: Live | None, now: float) -> None:
    with db.session() as s:
        last_raw = repo.get_setting(s, KEY)
        repo.set_setting(s, KEY, repr(now))
        if last_raw is None or live is None:
            return
        dt = now - float(last_raw)
        if dt <= 0:
            return
        h = holdings((r.team, r.gpu_type, str(r.state), r.gpus, r.borrowed_gpus,
                      r.state == JobState.RUNNING and bool(r.idle.get("last_below")))
                     for r in live.runs.values())
        guaranteed = guarantees(live.state.org if live.state is not None else None)
        lent_now = lent(guaranteed, h.used, h.borrowed)
        keys = {*h.used, *guaranteed}
        if not keys:
            return
        hour = int(now // 3600 * 3600)
        rows = {(r.team, r.gpu_type): r for r in s.execute(
            select(UsageRow).where(UsageRow.hour == hour)).scalars()}
        for k in sorted(keys):
            row = rows.get(k)
            if row is None:
                row = UsageRow(team=k[0], gpu_type=k[1], hour=hour, used_gpu_s=0.0,
                               borrowed_gpu_s=0.0, lent_gpu_s=0.0, idle_gpu_s=0.0,
                               guaranteed_gpu_s=0.0, preemptions=0)
                s.add(row)
            row.used_gpu_s += h.used.get(k, 0) * dt
            row.borrowed_gpu_s += h.borrowed.get(k, 0) * dt
            row.lent_gpu_s += lent_now.get(k, 0) * dt
            row.idle_gpu_s += h.idle.get(k, 0) * dt
            row.guaranteed_gpu_s += guaranteed.get(k, 0) * dt
