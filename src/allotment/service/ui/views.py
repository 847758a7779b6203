"""What the dashboard shows, computed from the database: pure functions of rows and time,
no HTML. The page modules of ``service/ui`` render them."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from allotment.domain.jobstate import ACTIVE, JobState
from allotment.domain.period import Period
from allotment.governance import accounting, plans
from allotment.service import holdings
from allotment.storage import jobs as jobrepo
from allotment.storage import plans as stored_plans
from allotment.storage import repo
from allotment.storage.models import JobRow, UsageRow

GPU_STATES = ("guaranteed", "borrowed", "reserved", "idle", "down")


@dataclass
class NodeView:
    name: str
    gpu_type: str
    rack: int
    pod: int
    cells: list[str]  # one GPU state per GPU index
    jobs: dict[int, int]  # GPU index -> job id


@dataclass
class ClusterView:
    by_type: dict[str, dict[str, int]]  # gpu type -> state -> GPUs
    domains: dict[tuple[str, int, int], list[NodeView]]  # (type, pod, rack) -> nodes
    pending_jobs: int
    pending_gpus: int
    idle_while_waiting: int  # idle GPUs of the types that jobs wait for
    total: int


def cluster_view(s: Session) -> ClusterView:
    nodes = repo.node_rows(s)
    cells: dict[str, list[str]] = {
        n.name: ["down" if n.state != "up" else "idle"] * n.gpus for n in nodes}
    owners: dict[str, dict[int, int]] = {n.name: {} for n in nodes}
    for j in jobrepo.active(s):
        state = ("reserved" if j.state in (JobState.STARTING, JobState.TERMINATING)
                 else "guaranteed")
        ids = [(node, i) for node, gs in sorted(j.gpu_ids.items()) for i in gs]
        borrowed_from = len(ids) - j.borrowed_gpus  # the last ones count as borrowed
        for k, (node, i) in enumerate(ids):
            row = cells.get(node)
            if row is None or i >= len(row) or row[i] == "down":
                continue
            row[i] = "borrowed" if state == "guaranteed" and k >= borrowed_from else state
            owners[node][i] = j.id
    by_type: dict[str, dict[str, int]] = {}
    domains: dict[tuple[str, int, int], list[NodeView]] = {}
    for n in nodes:
        counts = by_type.setdefault(n.gpu_type, dict.fromkeys(GPU_STATES, 0))
        for c in cells[n.name]:
            counts[c] += 1
        domains.setdefault((n.gpu_type, n.pod, n.rack), []).append(
            NodeView(n.name, n.gpu_type, n.rack, n.pod, cells[n.name], owners[n.name]))
    waiting_types: dict[str, int] = {}
    pend = 0
    for gpu_type, gpus in s.execute(select(JobRow.gpu_type, JobRow.gpus)
                                    .where(JobRow.state == JobState.PENDING)):
        waiting_types[gpu_type] = waiting_types.get(gpu_type, 0) + gpus
        pend += 1
    idle_waiting = sum(by_type.get(t, {}).get("idle", 0) for t in waiting_types)
    return ClusterView(by_type, dict(sorted(domains.items())), pend,
                       sum(waiting_types.values()), idle_waiting,
                       sum(n.gpus for n in nodes))


@dataclass
class TeamRow:
    team: str
    gpu_type: str
    parent: str | None
    guaranteed: int = 0
    in_use: int = 0
    borrowed: int = 0
    lent: float = 0.0
    idle_allocated: int = 0
    pending_gpus: int = 0
    hoarding: float = 0.0
    used_gpu_hours: float = 0.0
    explanation: str = ""
    series: list[float] = field(default_factory=list)  # GPUs in use, per hour


def team_rows(s: Session, now: float, window_h: int) -> list[TeamRow]:
    """Per team and GPU type: the guarantee in force, what it holds now, borrowed, lent
    (pro rata of unused guarantee), idle-allocated, hoarding score this period, the
    planner's explanation of its quota, and GPUs in use per hour over ``window_h``."""
    org = repo.load_org(s, now)
    parents = {r.name: r.parent for r in repo.org_rows(s)}
    rows: dict[tuple[str, str], TeamRow] = {}

    def row(team: str, t: str) -> TeamRow:
        if (team, t) not in rows:
            rows[(team, t)] = TeamRow(team, t, parents.get(team))
        return rows[(team, t)]

    h = holdings.holdings(s.execute(
        select(JobRow.team, JobRow.gpu_type, JobRow.state, JobRow.gpus, JobRow.borrowed_gpus,
               JobRow.idle_last_below).where(JobRow.state.in_(ACTIVE))))
    guaranteed = holdings.guarantees(org)
    for k, g in guaranteed.items():
        row(*k).guaranteed = int(g)
    for k in h.used:
        r = row(*k)
        r.in_use, r.borrowed = int(h.used[k]), int(h.borrowed.get(k, 0))
        r.idle_allocated = int(h.idle.get(k, 0))
    for p_team, p_type, gpus in s.execute(select(JobRow.team, JobRow.gpu_type, JobRow.gpus)
                                          .where(JobRow.state == JobState.PENDING)):
        row(p_team, p_type).pending_gpus += gpus
    for k, v in holdings.lent(guaranteed, h.used, h.borrowed).items():
        # shown no higher than the guarantee left unused (the loop's GPU-hours are not capped)
        rows[k].lent = min(v, max(0.0, rows[k].guaranteed - rows[k].in_use))
    month = Period.of(now)
    period, p_start, p_end = str(month), month.start, month.end
    for team, gtype, used, idle in s.execute(
            select(UsageRow.team, UsageRow.gpu_type, func.sum(UsageRow.used_gpu_s),
                   func.sum(UsageRow.idle_gpu_s))
            .where(UsageRow.hour >= p_start, UsageRow.hour < p_end)
            .group_by(UsageRow.team, UsageRow.gpu_type)):
        if (team, gtype) in rows or used:
            r = row(team, gtype)
            r.used_gpu_hours = (used or 0.0) / 3600
            r.hoarding = accounting.hoarding_score(idle or 0.0, used or 0.0)
    plan = stored_plans.published(s, period)
    if plan is not None:
        for a in plan.result.get("teams", {}).values():
            for team in a.get("members") or [a["team"]]:
                if (team, a["gpu_type"]) in rows:
                    rows[(team, a["gpu_type"])].explanation = f"plan {plan.id}: {a['reason']}"
    # GPUs in use per time slot: hourly usage averaged into at most 48 slots
    start = int(now // 3600 * 3600) - (window_h - 1) * 3600
    per = max(1, -(-window_h // 48))
    slots = -(-window_h // per)
    for k in rows:
        rows[k].series = [0.0] * slots
    for team, gtype, hour, used in s.execute(
            select(UsageRow.team, UsageRow.gpu_type, UsageRow.hour, UsageRow.used_gpu_s)
            .where(UsageRow.hour >= start)):
        tr = rows.get((team, gtype))
        slot = (hour - start) // 3600 // per
        if tr is not None and 0 <= slot < slots:
            tr.series[slot] += used / 3600 / per
    return [rows[k] for k in sorted(rows)]


def sparkline(series: list[float], width: int = 160, height: int = 28) -> str:
    """SVG polyline points for a series (0 at the bottom)."""
    if not series:
        return ""
    top = max(max(series), 1e-9)
    step = width / max(1, len(series) - 1)
    return " ".join(f"{k * step:.1f},{height - v / top * (height - 2) - 1:.1f}"
                    for k, v in enumerate(series))


def plan_side_by_side(s: Session, now: float, draft_id: int | None) -> dict[str, Any]:
    recent = stored_plans.recent(s, 200)
    period = str(Period.of(now))
    published = [p for p in recent if p.status == stored_plans.PUBLISHED]
    current = next((p for p in published if p.period == period), None) \
        or next(iter(published), None)
    drafts = [p for p in recent if p.status == stored_plans.DRAFT]
    draft = next((p for p in recent if p.id == draft_id), None) if draft_id is not None \
        else (drafts[0] if drafts else None)
    rows: list[dict[str, Any]] = []
    if draft is not None and current is not None and draft.id != current.id:
        rows = plans.compare(current, draft)
    elif draft is not None:
        rows = [{"team": a["team"], "gpu_type": a["gpu_type"], "a": None, "b": a["allocated"],
                 "delta": a["allocated"], "reason_a": "", "reason_b": a["reason"]}
                for a in draft.result.get("teams", {}).values()]
    return {"current": current, "draft": draft, "drafts": drafts, "rows": rows,
            "plans": recent}


REPORT_NAME = re.compile(r"^(?!\.+$)[A-Za-z0-9_.-]{1,128}$")  # no ".", "..", "..."


def inside(folder: Path, path: Path) -> Path | None:
    """``path`` with symlinks resolved, if it stays inside ``folder``; else None."""
    try:
        root, got = folder.resolve(strict=True), path.resolve(strict=True)
    except OSError:
        return None
    return got if got.is_relative_to(root) and got != root else None


def reports(folder: Path | None) -> list[dict[str, Any]]:
    """Simulator runs stored under the service's reports folder (``allot simulate --out
    DATA_DIR/reports/NAME``): their summary and plots."""
    if folder is None or not folder.is_dir():
        return []
    out = []
    for d in sorted(folder.iterdir()):
        summary = d / "summary.json"
        if not (d.is_dir() and REPORT_NAME.match(d.name) and summary.is_file()):
            continue
        try:
            data = json.loads(summary.read_text())
        except (OSError, ValueError):
            continue
        out.append({"name": d.name, "summary": data,
                    "plots": sorted(p.name for p in d.glob("*.png")
                                    if REPORT_NAME.match(p.name))})
    return out
