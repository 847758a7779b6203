"""A plan becomes the scheduler's guaranteed quotas: one function, ``plan_to_org``."""

from __future__ import annotations

from collections.abc import Mapping

from allotment.domain.cluster import GpuType
from allotment.domain.org import OrgNode, OrgTree, Quota
from allotment.planner.allocate import Plan
from allotment.planner.scenario import OrgWeightSpec, Scenario


def plan_to_org(plan: Plan, scenario: Scenario,
                capacity: Mapping[GpuType, int] | None = None) -> OrgTree:
    """The org tree of ``scenario`` with each team's allocation as its guarantee.

    ``capacity`` is the cluster the scheduler runs (default: the scenario's inventory,
    reserve included, so the reserve stays unguaranteed but usable by borrowers).
    """
    if capacity is None:
        total: dict[GpuType, int] = {}
        for t, n in (scenario.inventory or {}).items():
            total[GpuType(t)] = total.get(GpuType(t), 0) + n
        for per in (scenario.clusters or {}).values():
            for t, n in per.items():
                total[GpuType(t)] = total.get(GpuType(t), 0) + n
        capacity = total
    quotas: dict[str, dict[GpuType, Quota]] = {}
    for a in plan.allocations:
        for member in a.members or (a.team,):
            quotas.setdefault(member, {})[GpuType(a.gpu_type)] = Quota(
                a.allocated if len(a.members) <= 1 else 0)
    nodes: list[OrgNode] = []

    def walk(specs: list[OrgWeightSpec], parent: str | None) -> None:
        for s in specs:
            nodes.append(OrgNode(s.name, parent, quotas.get(s.name, {}), s.weight,
                                 explicit_guarantee=not s.children))
            walk(s.children, s.name)

    walk(scenario.org, None)
    return OrgTree(nodes, capacity)
