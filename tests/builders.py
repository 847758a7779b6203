"""Builders for tests: small clusters, orgs and workloads with readable defaults."""

from __future__ import annotations

import random
from collections.abc import Sequence

from allotment.domain.cluster import Cluster, GpuType, make_cluster
from allotment.domain.org import OrgNode, OrgTree, Quota, TeamId
from allotment.domain.workload import JobId, Workload
from allotment.policies import SchedulerConfig, make_policy
from allotment.scheduler.state import ClusterState
from allotment.sim.engine import SimConfig, SimResult, simulate

GPU = GpuType("gpu")


def cluster(gpus: int = 16, per_node: int = 8, nodes_per_rack: int = 2,
            racks_per_pod: int = 2) -> Cluster:
    return make_cluster({"gpu": gpus}, per_node, nodes_per_rack, racks_per_pod)


def team(name: str, guaranteed: int = 0, parent: str | None = None, weight: float = 1.0,
         borrow_limit: int | None = None, lend_limit: int | None = None) -> OrgNode:
    return OrgNode(name, parent, {GPU: Quota(guaranteed, borrow_limit, lend_limit)}, weight)


def group(name: str, parent: str | None = None, weight: float = 1.0) -> OrgNode:
    return OrgNode(name, parent, {}, weight, explicit_guarantee=False)


def org(nodes: Sequence[OrgNode], capacity: int) -> OrgTree:
    return OrgTree(nodes, {GPU: capacity})


def job(jid: str, team: str, gpus: int, submit: float, duration: float, seq: int | None = None,
        priority: int = 0, preemptible: bool = True) -> Workload:
    return Workload(JobId(jid), TeamId(team), GPU, gpus, submit,
                    seq if seq is not None else int(submit * 1000) + len(jid),
                    priority=priority, preemptible=preemptible, duration=duration)


def trace(*rows: tuple[str, str, int, float, float]) -> list[Workload]:
    """Jobs from ``(id, team, gpus, submit, duration)`` rows; seq is the row order."""
    return [job(j, t, g, s, d, seq=k) for k, (j, t, g, s, d) in enumerate(rows)]


def run(policy: str, jobs: Sequence[Workload], c: Cluster, o: OrgTree,
        grace_s: float = 60.0, min_runtime_s: float = 0.0, checkpoint_s: float | None = None,
        las_threshold_gpu_s: float = 3600.0, **kw: object) -> SimResult:
    cfg = SchedulerConfig(grace_s=grace_s, min_runtime_s=min_runtime_s,
                          checkpoint_s=checkpoint_s, las_threshold_gpu_s=las_threshold_gpu_s)
    return simulate(jobs, c, o, make_policy(policy, cfg), SimConfig(),
                    **kw)  # type: ignore[arg-type]


def log_without_submits(result: SimResult) -> list[tuple[float, str, str, str]]:
    return [e for e in result.events if e[1] != "submit"]


def start_random_runs(state: ClusterState, rng: random.Random, teams: Sequence[str],
                      runs: int, checkpoint_s: float | None, borrowed: bool = False) -> None:
    """Up to ``runs`` random runs of 1-8 GPUs started on random nodes of ``state``'s cluster
    of 8-GPU nodes (one that no longer fits its node is left out), each of a random team,
    started in the last 3,000 s before t=3,000; with ``borrowed``, some on borrowed GPUs."""
    free = [8] * (state.cluster.total_gpus // 8)
    for k in range(runs):
        g = rng.choice([1, 2, 4, 8])
        node = rng.randrange(len(free))
        if free[node] < g:
            continue
        free[node] -= g
        w = job(f"r{k}", rng.choice(teams), g, 0.0, 10_000.0, seq=k)
        state.submit(w, 0.0)
        state.start(w.id, ((node, g),), rng.uniform(0, 3000), checkpoint_s,
                    rng.choice([0, 0, g]) if borrowed else 0)
