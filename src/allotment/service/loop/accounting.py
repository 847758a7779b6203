"""Accounting: integrate the GPU-seconds each team used, borrowed, lent, left idle and was
guaranteed, with the jobs as they were over each interval (before the tick changes them),
into its usage row of the hour (``usage``: the planner's history and ``allot usage``). Lent
time is all borrowed GPU-time of a type, attributed to the teams with unused guarantee of
that type, pro rata of what each leaves unused (``service.holdings.lent``).

The sums are kept in memory and written every ``flush_s`` (and when the hour turns, and
when the loop stops), so a tick costs no database work for them. ``accounted_until`` is
the time the rows are integrated up to: a process that starts (or takes over) integrates
again from there, so a crash loses no GPU-seconds, it only counts the last interval with
the jobs the new process sees.
"""

from __future__ import annotations

from sqlalchemy import select

from allotment.domain.jobstate import JobState
from allotment.service.holdings import guarantees, holdings, lent
from allotment.service.loop.live import Live
from allotment.storage import repo
from allotment.storage.db import Database
from allotment.storage.models import UsageRow

KEY = "accounted_until"
Sums = dict[tuple[str, str, int], list[float]]  # (team, type, hour) -> used, borrowed, lent,
# idle, guaranteed GPU-seconds


class Accountant:
    def __init__(self, flush_s: float = 30.0) -> None:
        self.flush_s = flush_s
        self.until: float | None = None  # integrated up to here (in memory)
        self.flushed_at: float | None = None
        self.sums: Sums = {}

    def account(self, db: Database, live: Live, now: float) -> None:
        if self.until is None:
            with db.session() as s:
                raw = repo.get_setting(s, KEY)
                if raw is None:
                    repo.set_setting(s, KEY, repr(now))
            self.until = self.flushed_at = float(raw) if raw is not None else now
        dt = now - self.until
        if dt > 0:
            self._integrate(live, self.until, dt)
            self.until = now
        hour_turned = self.flushed_at is not None and int(now // 3600) != int(
            self.flushed_at // 3600)
        if hour_turned or self.flushed_at is None or now - self.flushed_at >= self.flush_s:
            self.flush(db)

    def _integrate(self, live: Live, start: float, dt: float) -> None:
        h = holdings((r.team, r.gpu_type, str(r.state), r.gpus, r.borrowed_gpus,
                      r.state == JobState.RUNNING and bool(r.idle.get("last_below")))
                     for r in live.runs.values())
        guaranteed = guarantees(live.state.org if live.state is not None else None)
        lent_now = lent(guaranteed, h.used, h.borrowed)
        hour = int((start + dt) // 3600 * 3600)
        for k in {*h.used, *guaranteed}:
            acc = self.sums.setdefault((k[0], k[1], hour), [0.0] * 5)
            acc[0] += h.used.get(k, 0) * dt
            acc[1] += h.borrowed.get(k, 0) * dt
            acc[2] += lent_now.get(k, 0) * dt
            acc[3] += h.idle.get(k, 0) * dt
            acc[4] += guaranteed.get(k, 0) * dt

    def flush(self, db: Database) -> None:
        """Add the sums to their usage rows, and move ``accounted_until`` with them."""
        if self.until is None:
            return
        with db.session() as s:
            hours = sorted({hour for _, _, hour in self.sums})
            rows = {(r.team, r.gpu_type, r.hour): r for r in s.execute(
                select(UsageRow).where(UsageRow.hour.in_(hours))).scalars()} if hours else {}
            for key in sorted(self.sums):
                row = rows.get(key)
                if row is None:
                    row = UsageRow(team=key[0], gpu_type=key[1], hour=key[2], used_gpu_s=0.0,
                                   borrowed_gpu_s=0.0, lent_gpu_s=0.0, idle_gpu_s=0.0,
                                   guaranteed_gpu_s=0.0, preemptions=0)
                    s.add(row)
                used, borrowed, lent_s, idle, guaranteed = self.sums[key]
                row.used_gpu_s += used
                row.borrowed_gpu_s += borrowed
                row.lent_gpu_s += lent_s
                row.idle_gpu_s += idle
                row.guaranteed_gpu_s += guaranteed
            repo.set_setting(s, KEY, repr(self.until))
        self.sums.clear()
        self.flushed_at = self.until

    def forget(self) -> None:
        """Another process acts now: drop what was not written (it integrates from the last
        flush itself)."""
        self.until = self.flushed_at = None
        self.sums.clear()
