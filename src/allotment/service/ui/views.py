"""What the dashboard shows, computed from the database: pure functions of rows and time,
no HTML. The page modules of ``service/ui`` render them."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from markupsafe import Markup
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from allotment.domain.jobstate import ACTIVE, JobState
from allotment.domain.period import Period
from allotment.governance import accounting, plans
from allotment.service import holdings
from allotment.storage import budgets as budget_rows
from allotment.storage import jobs as jobrepo
from allotment.storage import plans as stored_plans
from allotment.storage import repo
from allotment.storage.models import ClusterUsageRow, JobRow, UsageRow

GPU_STATES = ("guaranteed", "borrowed", "reserved", "idle", "down")


@dataclass
class NodeView:
    name: str
    gpu_type: str
    rack: int
    pod: int
    cells: list[str]  # one GPU state per GPU index
    jobs: dict[int, int]  # GPU index -> job id

    @property
    def title(self) -> str:
        """"n1: 6 guaranteed 2 idle jobs 4, 7": what hovering the node shows (made here,
        not in the template: 2,000 nodes x 5 states of Jinja filters cost the cluster page
        about a third of its time)."""
        counts = [f"{self.cells.count(st)} {st}" for st in GPU_STATES if st in self.cells]
        jobs = sorted(set(self.jobs.values()))
        return (f"{self.name}: {' '.join(counts)}"
                + (f" jobs {', '.join(map(str, jobs))}" if jobs else ""))

    @property
    def cells_html(self) -> Markup:
        return Markup("".join(f'<i class="{c}"></i>' for c in self.cells))  # fixed names


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
    budget_gpu_hours: float | None = None  # the period's GPU-hour budget (None: none)
    remaining_gpu_hours: float | None = None  # budget - used, never below 0
    credit_gpu_hours: float = 0.0  # credit for lending, as the scheduler last saved it
    explanation: str = ""
    series: list[float] = field(default_factory=list)  # GPUs in use, per hour


def team_rows(s: Session, now: float, window_h: int) -> list[TeamRow]:
    """Per team and GPU type: the guarantee in force, what it holds now, borrowed, lent
    (pro rata of unused guarantee), idle-allocated, hoarding score this period, the
    period's budget and what is left of it, the credit for lending, the planner's
    explanation of its quota, and GPUs in use per hour over ``window_h``."""
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
    for (team, gtype), hours in budget_rows.of_period(s, period).items():
        r = row(team, str(gtype))
        r.budget_gpu_hours = hours
        r.remaining_gpu_hours = max(0.0, hours - r.used_gpu_hours)
    credit = accounting.credits_now(s)
    for (team, _), r in rows.items():
        r.credit_gpu_hours = credit.get(team, 0.0)
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


@dataclass
class History:
    """The cluster over ``hours`` hours to ``now``, one point per ``step_s`` from
    ``start``: GPUs in use and GPUs idle while jobs waited, in % of the GPUs up (an hour
    the loop did not run counts 0)."""

    start: float
    step_s: float
    utilisation_pct: list[float]
    idle_waiting_pct: list[float]


def cluster_history(s: Session, now: float, hours: int, points: int = 48) -> History:
    """Utilisation = used / up and idle-while-waiting = idle_waiting / up, GPU-seconds of
    all types summed over each slot of ``per`` hours (``cluster_usage``)."""
    per = max(1, -(-hours // points))
    slots = -(-hours // per)
    first = int(now // 3600 * 3600) - (slots * per - 1) * 3600
    up, used, idle = [0.0] * slots, [0.0] * slots, [0.0] * slots
    for hour, u, a, i in s.execute(
            select(ClusterUsageRow.hour, func.sum(ClusterUsageRow.up_gpu_s),
                   func.sum(ClusterUsageRow.used_gpu_s),
                   func.sum(ClusterUsageRow.idle_waiting_gpu_s))
            .where(ClusterUsageRow.hour >= first).group_by(ClusterUsageRow.hour)):
        k = (hour - first) // 3600 // per
        if 0 <= k < slots:
            up[k] += u or 0.0
            used[k] += a or 0.0
            idle[k] += i or 0.0
    return History(first, per * 3600.0,
                   [100 * a / u if u else 0.0 for a, u in zip(used, up, strict=True)],
                   [100 * i / u if u else 0.0 for i, u in zip(idle, up, strict=True)])


def plan_side_by_side(s: Session, now: float, draft_id: int | None) -> dict[str, Any]:
    recent = stored_plans.recent(s, 200)
    period = str(Period.of(now))
    published = [p for p in recent if p.status == stored_plans.PUBLISHED]
    current = next((p for p in published if p.period == period), None) \
        or next(iter(published), None)
    drafts = [p for p in recent if p.status == stored_plans.DRAFT]
    # the plan shown beside the current one: the one asked for, else the newest draft;
    # never the current plan itself (publishing a draft makes it the current one)
    chosen = next((p for p in recent if p.id == draft_id), None) \
        if draft_id is not None else None
    if chosen is None or (current is not None and chosen.id == current.id):
        chosen = drafts[0] if drafts else None
    draft = chosen
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
        if (d.is_symlink() or summary.is_symlink() or not (
                d.is_dir() and REPORT_NAME.match(d.name) and summary.is_file())):
            continue  # links are never followed, as the plot route does not follow them
        try:
            data = json.loads(summary.read_text())
        except (OSError, ValueError):
            continue
        out.append({"name": d.name, "summary": data,
                    "plots": sorted(p.name for p in d.glob("*.png")
                                    if REPORT_NAME.match(p.name) and not p.is_symlink())})
    return out
