"""Org trees for a simulation: from an org YAML file, or one team per trace team with
guarantees proportional to each team's GPU-time in the trace."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from allotment.domain.cluster import GpuType
from allotment.domain.org import OrgNode, OrgTree, Quota
from allotment.domain.workload import Workload


def apportion(total: int, weights: Mapping[str, float]) -> dict[str, int]:
    """Integer shares of ``total`` proportional to ``weights`` (largest remainder; ties by
    name). Sums to ``total`` when any weight is positive."""
    s = sum(weights.values())
    if total <= 0 or s <= 0:
        return {k: 0 for k in weights}
    exact = {k: total * v / s for k, v in weights.items()}
    out = {k: int(x) for k, x in exact.items()}
    left = total - sum(out.values())
    for k in sorted(exact, key=lambda k: (-(exact[k] - out[k]), k))[:left]:
        out[k] += 1
    return out


def trace_org(workloads: Iterable[Workload], capacity: Mapping[GpuType, int]) -> OrgTree:
    """One team per trace team, directly under the root; each GPU type's capacity is split
    by the team's share of that type's GPU-time in the trace."""
    gpu_time: dict[GpuType, dict[str, float]] = {t: {} for t in capacity}
    teams: set[str] = set()
    for w in workloads:
        teams.add(w.team)
        per = gpu_time.setdefault(w.gpu_type, {})
        per[w.team] = per.get(w.team, 0.0) + w.gpus * (w.duration or 0.0)
    quotas: dict[str, dict[GpuType, Quota]] = {team: {} for team in teams}
    for t, cap in capacity.items():
        shares = apportion(cap, {team: gpu_time[t].get(team, 0.0) for team in sorted(teams)})
        for team, g in shares.items():
            quotas[team][t] = Quota(g)
    return OrgTree([OrgNode(team, None, quotas[team]) for team in sorted(teams)], capacity)
