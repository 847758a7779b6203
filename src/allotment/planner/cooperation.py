"""Cooperation: "pick one team, or let them cooperate".

Pools are teams that declare ``cooperates_with`` each other (either side suffices) for the
same GPU type; overlaps are requests of one GPU type that share a tag without a declared
pool ("possible overlap"). For each group the report shows both options side by side: the
teams planned apart (the plan itself) and planned as one pooled quota. A pooled request
sits under the teams' lowest common org ancestor, with the sum of their requests as demand,
the largest of their floors as its floor (one joint project must be viable) and the sum of
their effective weights as its weight.
"""

from __future__ import annotations

from dataclasses import dataclass

from allotment.planner.allocate import Allocation, Plan, _Item, _items, plan_type
from allotment.planner.scenario import Scenario


@dataclass(frozen=True, slots=True)
class CooperationOption:
    kind: str  # "declared" or "possible overlap"
    gpu_type: str
    teams: tuple[str, ...]
    shared_tags: tuple[str, ...]
    separate: dict[str, int]
    separate_total: int
    pooled: int
    pooled_reason: str
    note: str


def _groups(sc: Scenario) -> list[tuple[str, str, tuple[str, ...], tuple[str, ...]]]:
    out = []
    for t in sorted({r.gpu_type for r in sc.requests}):
        reqs = {r.team: r for r in sc.requests if r.gpu_type == t}
        parent = {team: team for team in reqs}

        def find(x: str, parent: dict[str, str] = parent) -> str:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for r in reqs.values():
            for other in r.cooperates_with:
                if other in reqs:
                    parent[find(r.team)] = find(other)
        pools: dict[str, list[str]] = {}
        for team in reqs:
            pools.setdefault(find(team), []).append(team)
        declared = [tuple(sorted(p)) for p in pools.values() if len(p) > 1]
        for p in sorted(declared):
            tags = set.intersection(*(set(reqs[m].tags) for m in p))
            out.append(("declared", t, p, tuple(sorted(tags))))
        by_tag: dict[str, set[str]] = {}
        for r in reqs.values():
            for tag in r.tags:
                by_tag.setdefault(tag, set()).add(r.team)
        seen: set[tuple[str, ...]] = set()
        for tag in sorted(by_tag):
            teams = sorted(by_tag[tag])
            if len(teams) < 2 or len({find(x) for x in teams}) < 2:
                continue
            key = tuple(teams)
            if key in seen:
                continue
            seen.add(key)
            tags = set.intersection(*(set(reqs[m].tags) for m in key))
            out.append(("possible overlap", t, key, tuple(sorted(tags))))
    return out


def _lca(teams: tuple[str, ...], parent: dict[str, str | None]) -> str | None:
    def chain(x: str) -> list[str | None]:
        out: list[str | None] = []
        node: str | None = parent[x]
        while node is not None:
            out.append(node)
            node = parent[node]
        out.append(None)
        return out

    common = chain(teams[0])
    for t in teams[1:]:
        c = set(chain(t))
        common = [n for n in common if n in c]
    return common[0]


def cooperation_options(sc: Scenario, plan: Plan) -> list[CooperationOption]:
    parent, weight, order = sc.org_maps()
    by_team = plan.by_team()
    out = []
    for kind, t, teams, tags in _groups(sc):
        items = _items(sc, t, parent, weight).get(t, [])
        members = [it for it in items if it.key in teams]
        rest = [it for it in items if it.key not in teams]
        pooled_key = "+".join(teams)
        pooled = _Item(
            pooled_key, _lca(teams, parent), sum(it.weight for it in members),
            max(it.floor for it in members), sum(it.demand for it in members), None,
            (1.0, 1.0, 1.0, 1.0), 0.0, teams, requested=sum(it.demand for it in members),
        )
        allocs, _, _ = plan_type(sc, t, plan.capacity[t], [*rest, pooled], parent, weight,
                                 order)
        mine: Allocation = next(a for a in allocs if a.team == pooled_key)
        separate = {m: by_team[(m, t)].allocated for m in teams}
        total = sum(separate.values())
        viable = [m for m in teams if by_team[(m, t)].floor != "infeasible"]
        if mine.allocated > total:
            note = (f"pooled, the teams get {mine.allocated - total:,} more GPUs together"
                    + ("" if len(viable) == len(teams) else
                       f"; apart, {', '.join(m for m in teams if m not in viable)} cannot "
                       "reach its minimum"))
        elif mine.allocated < total:
            note = f"pooled, the teams get {total - mine.allocated:,} fewer GPUs together"
        else:
            note = "the same GPUs either way; pooling lets them share one quota and one queue"
        out.append(CooperationOption(kind, t, teams, tags, separate, total, mine.allocated,
                                     mine.reason, note))
    return out


__all__ = ["CooperationOption", "cooperation_options"]
