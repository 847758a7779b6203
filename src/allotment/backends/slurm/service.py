"""The Slurm backend's edges to the service database: sync a plan down, read usage up."""

from __future__ import annotations

import getpass
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select

from allotment.backends.slurm import sync
from allotment.backends.slurm.accounting import parse_sacct, sacct_args, usage_by_hour
from allotment.backends.slurm.cmd import Slurm
from allotment.errors import ConfigurationError
from allotment.storage import audit, repo
from allotment.storage import usage as stored_usage
from allotment.storage.db import Database
from allotment.storage.models import UsageRow, User


@dataclass
class SyncResult:
    changes: list[sync.Change]
    applied: bool
    period: str
    notes: list[str] = field(default_factory=list)  # what the sync leaves on purpose


def plan_sync(db: Database, slurm: Slurm, now: float, submit_users: Iterable[str] = (),
              grace_s: int = 30) -> tuple[list[sync.Change], list[str], str]:
    """The changes that make Slurm enforce the quotas in force at ``now``, and notes on
    what they leave on purpose."""
    with db.session() as s:
        org = repo.load_org(s, now)
        if org is None:
            raise ConfigurationError("no org tree in the service: set one first (PUT /v1/org)")
        period = repo.effective_period(s, now)
        users: dict[str, set[str]] = {t: set(submit_users) for t in org.team_ids}
        for u in s.execute(select(User)).scalars():
            if u.org_node in users:
                users[u.org_node].add(u.name)
    want = sync.desired(org, users, grace_s)
    current = sync.read_state(slurm)
    return sync.diff(current, want), sync.notes(current, want), period


def run_sync(db: Database, slurm: Slurm, now: float, dry_run: bool,
             submit_users: Iterable[str] | None = None, grace_s: int = 30) -> SyncResult:
    users = [getpass.getuser()] if submit_users is None else list(submit_users)
    changes, notes, period = plan_sync(db, slurm, now, users, grace_s)
    if not dry_run and changes:
        sync.apply(slurm, changes)
        with db.session() as s:
            audit.append(s, now, "slurm-sync", "slurm.synced", "slurm",
                         f"{len(changes)} change(s) for period {period}",
                         {"changes": [c.line() for c in changes]})
    return SyncResult(changes, not dry_run, period, notes)


def import_usage(db: Database, slurm: Slurm, start: float, end: float, now: float) -> int:
    """Set used and borrowed GPU-seconds and preemptions per team and hour, for the hours
    in ``[start, end)``, from ``sacct``; returns the number of records read. Slurm is the
    truth for these hours: jobs submitted with ``sbatch`` directly are counted too."""
    start = start // 3600 * 3600
    records = parse_sacct(slurm.run(sacct_args(start, end)))
    with db.session() as s:
        teams = {sync.account_name(t): t for t in repo.teams_under(s, None)}
        cap = repo.capacity(s)
        only = next(iter(cap)) if len(cap) == 1 else "gpu"
        usage = usage_by_hour(records, start, end, teams.get, lambda _a: only, now)
        rows = s.execute(select(UsageRow).where(UsageRow.hour >= start, UsageRow.hour < end))
        for row in rows.scalars():
            row.used_gpu_s = row.borrowed_gpu_s = 0.0
            row.preemptions = 0
        for (team, gpu_type, hour), u in usage.items():
            row = stored_usage.row(s, team, gpu_type, hour)
            row.used_gpu_s = u.used_gpu_s
            row.borrowed_gpu_s = u.borrowed_gpu_s
            row.preemptions = u.preemptions
    return len(records)
