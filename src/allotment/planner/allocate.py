"""From a scenario to per-team GPU quotas with an explanation for every number.

Per GPU type, independently:
1. Effective weight of a request (each factor is reported):
       w_eff = w_team x tier x launch x idle
   tier:   the request's priority tier multiplier (rules.tiers, e.g. high = 2);
   launch: 1 + boost x max(0, 1 - days_to_launch / horizon) (days_to_launch < 0 counts as
           0: a launch already due gets the whole boost; no date: 1);
   idle:   1 - min(idle_penalty_max, idle / (used + idle)) from last period's GPU-hours,
           so hoarding costs share, and no team's weight falls below 1 - idle_penalty_max.
2. Floors: minimum-viable floors are granted in the order (tier, launch date, w_eff,
   team) while they fit in the capacity. A floor that does not fit is reported as
   infeasible and that request gets nothing: a project below its minimum cannot run, and
   its share goes to the others. Never a silent cut.
3. Water-filling down the org tree: the capacity is split among the top-level nodes by
   weighted max-min (``waterfill.split``) with each node's floors and demand (sums over
   its subtree) as bounds, then each node's share among its children, down to requests.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from datetime import date

from allotment.planner.scenario import RequestSpec, Scenario
from allotment.planner.waterfill import split

ROOT = "the organisation"


@dataclass(slots=True)
class Allocation:
    """One team's quota for one GPU type, and why."""

    team: str
    gpu_type: str
    requested: int
    min_gpus: int
    allocated: int
    reason: str
    org_weight: float
    effective_weight: float
    tier: str
    tier_factor: float
    launch_factor: float
    idle_factor: float
    idle_gpu_hours: float
    floor: str  # "none", "met", "binding", "infeasible"
    parent: str
    justification: str = ""
    members: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Plan:
    period: str
    capacity: dict[str, int]
    allocations: tuple[Allocation, ...]
    infeasible: tuple[str, ...] = ()
    group_shares: dict[str, dict[str, int]] = field(default_factory=dict)

    def by_team(self) -> dict[tuple[str, str], Allocation]:
        return {(a.team, a.gpu_type): a for a in self.allocations}


@dataclass(slots=True)
class _Item:
    key: str
    parent: str | None
    weight: float
    floor: int
    demand: int
    request: RequestSpec | None
    factors: tuple[float, float, float, float]  # org weight, tier, launch, idle
    idle_hours: float
    members: tuple[str, ...]
    floor_status: str = "none"
    requested: int = 0
    # set by the water-filling: GPUs, lambda x weight, the group split, its budget
    allocated: int = 0
    fair: float = 0.0
    group: str = ROOT
    budget: int = 0


@dataclass(slots=True)
class _Group:
    """An org node with requests below it, for one GPU type."""

    key: str
    weight: float
    floor: int = 0
    demand: int = 0
    kids: list[_Item | _Group] = field(default_factory=list)
    allocated: int = 0
    fair: float = 0.0
    group: str = ROOT
    budget: int = 0


def _by_key(node: _Item | _Group) -> str:
    return node.key


def launch_factor(launch: date | None, as_of: date, boost: float, horizon: float) -> float:
    """1 + boost x max(0, 1 - max(days, 0) / horizon); 1 without a date."""
    if launch is None:
        return 1.0
    days = max((launch - as_of).days, 0)
    return 1.0 + boost * max(0.0, 1.0 - days / horizon)


def idle_factor(used_h: float, idle_h: float, max_penalty: float) -> float:
    """1 - min(max_penalty, idle / (used + idle)); 1 without history."""
    total = used_h + idle_h
    if total <= 0:
        return 1.0
    return 1.0 - min(max_penalty, idle_h / total)


def _items(sc: Scenario, gpu_type: str | None, parent: dict[str, str | None],
           weight: dict[str, float]) -> dict[str, list[_Item]]:
    """Requests as water-filling items with their effective weights, by GPU type (all
    types, or only ``gpu_type``)."""
    rules = sc.rules
    tiers, history, as_of = rules.tiers, sc.history, sc.as_of
    boost, horizon, max_penalty = (rules.launch_boost, rules.launch_horizon_days,
                                   rules.idle_penalty_max)
    out: dict[str, list[_Item]] = {}
    for r in sc.requests:
        if gpu_type is not None and r.gpu_type != gpu_type:
            continue
        team = r.team
        hist = history.get(team) if history else None
        tier = tiers[r.tier]
        launch = 1.0 if r.launch is None else launch_factor(r.launch, as_of, boost, horizon)
        idle = (idle_factor(hist.used_gpu_hours, hist.idle_gpu_hours, max_penalty)
                if hist else 1.0)
        org_w = weight[team]
        item = _Item(team, parent[team], org_w * tier * launch * idle, r.min_gpus, r.gpus, r,
                     (org_w, tier, launch, idle), hist.idle_gpu_hours if hist else 0.0,
                     (team,))
        bucket = out.get(r.gpu_type)
        if bucket is None:
            out[r.gpu_type] = [item]
        else:
            bucket.append(item)
    return out


def _grant_floors(items: list[_Item], capacity: int, gpu_type: str) -> list[str]:
    problems = []
    left = capacity
    order = sorted(
        (it for it in items if it.floor > 0),
        key=lambda it: (-it.factors[1],
                        it.request.launch or date.max if it.request else date.max,
                        -it.weight, it.key),
    )
    for it in order:
        if it.floor <= left:
            left -= it.floor
            it.floor_status = "met"
        else:
            problems.append(
                f"{it.key}: minimum viable {it.floor:,} {gpu_type} GPUs does not fit "
                f"(only {left:,} of {capacity:,} left after higher-priority floors); "
                f"allocated 0"
            )
            it.floor_status = "infeasible"
            it.demand = 0
            it.floor = 0
    return problems


def plan_type(
    sc: Scenario, gpu_type: str, capacity: int, items: list[_Item],
    parent: dict[str, str | None], weight: dict[str, float], order: list[str],
) -> tuple[list[Allocation], list[str], dict[str, int]]:
    """Allocate one GPU type's capacity among ``items`` over the org tree."""
    problems = _grant_floors(items, capacity, gpu_type)
    # the tree of groups that have requests below them; each node sums its subtree
    root = _Group(ROOT, 1.0)
    groups: dict[str, _Group] = {}

    def group_of(name: str | None) -> _Group:
        if name is None:
            return root
        g = groups.get(name)
        if g is None:
            g = groups[name] = _Group(name, weight[name])
        return g

    for it in items:
        g = group_of(it.parent)
        g.kids.append(it)
        g.floor += it.floor
        g.demand += it.demand
    for name in order:  # internal nodes deepest first: each rolls up into its parent once
        sub = groups.get(name)
        if sub is not None:
            up = group_of(parent[name])
            up.kids.append(sub)
            up.floor += sub.floor
            up.demand += sub.demand

    def share(g: _Group, budget: int) -> None:
        kids = sorted(g.kids, key=_by_key)
        if not kids:
            return
        ws = [k.weight for k in kids]
        xs, lam = split([k.key for k in kids], ws, [k.floor for k in kids],
                        [k.demand for k in kids], budget)
        for k, x, w in zip(kids, xs, ws, strict=True):
            k.allocated, k.fair, k.group, k.budget = x, lam * w, g.key, budget
            if isinstance(k, _Group):
                share(k, x)

    share(root, capacity)
    out = []
    shares_text: dict[str, tuple[str, str]] = {}  # per group: text around the GPU count
    for it in items:
        r = it.request
        a, fair, group, budget = it.allocated, it.fair, it.group, it.budget
        status = it.floor_status
        if status == "infeasible":
            reason = f"minimum-viable floor of {r.min_gpus if r else 0:,} GPUs does not fit"
        elif a >= it.demand:
            reason = "capped by demand"
        elif it.floor and a <= it.floor and fair <= it.floor:
            reason, status = f"minimum-viable floor ({it.floor:,} GPUs)", "binding"
        else:
            texts = shares_text.get(group)
            if texts is None:
                where = "the organisation" if group == ROOT else f"group {group}"
                texts = shares_text[group] = (f"water level of {where} reached at ",
                                              f" GPUs ({where} shares {budget:,})")
            reason = texts[0] + format(a, ",") + texts[1]
        org_w, tier, launch, idle = it.factors
        if tier != 1.0 or launch != 1.0 or idle != 1.0:
            notes = [reason]
            if tier != 1.0:
                notes.append(f"tier {r.tier if r else 'pooled'} x{tier:g}")
            if launch != 1.0:
                notes.append(f"launch boost x{launch:.2f}")
            if idle != 1.0:
                notes.append(f"idle penalty -{(1 - idle) * 100:.0f}% "
                             f"({it.idle_hours:,.0f} idle GPU-hours last period)")
            reason = "; ".join(notes)
        out.append(Allocation(
            it.key, gpu_type, r.gpus if r else it.requested, r.min_gpus if r else it.floor,
            a, reason, org_w, it.weight, r.tier if r else "", tier, launch, idle,
            it.idle_hours, status, it.parent or ROOT, r.justification if r else "", it.members,
        ))
    return out, problems, {name: groups[name].allocated for name in sorted(groups)}


def allocate(sc: Scenario, capacity_override: dict[str, int] | None = None) -> Plan:
    """The plan for a scenario; ``capacity_override`` replaces capacity per GPU type.

    The cyclic garbage collector is paused while the plan is built: it creates only
    acyclic objects (about ten per request), and each full collection it would trigger
    rescans the whole validated scenario, which for 10,000 teams costs more than the
    allocation itself.
    """
    paused = gc.isenabled()
    gc.disable()
    try:
        return _allocate(sc, capacity_override)
    finally:
        if paused:
            gc.enable()


def _allocate(sc: Scenario, capacity_override: dict[str, int] | None) -> Plan:
    parent, weight, order = sc.org_maps()
    capacity = dict(sc.capacity())
    capacity.update(capacity_override or {})
    allocations: list[Allocation] = []
    problems: list[str] = []
    groups: dict[str, dict[str, int]] = {}
    by_type = _items(sc, None, parent, weight)
    for t in sorted(capacity):
        allocs, probs, grp = plan_type(sc, t, capacity[t], by_type.get(t, []), parent, weight,
                                       order)
        allocations.extend(allocs)
        problems.extend(probs)
        groups[t] = grp
    allocations.sort(key=lambda a: (a.gpu_type, a.team))
    return Plan(sc.period, capacity, tuple(allocations), tuple(problems), groups)
