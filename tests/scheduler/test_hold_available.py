"""``Snapshot.hold_available`` (a waiting gang takes every node with GPUs available to it,
in bulk) leaves the snapshot exactly as ``hold`` of those nodes does, node by node: held
nodes, nodes by free GPUs, free GPUs of unheld nodes per rack, pod and type, and held
capacity per domain. On random states with partly full nodes, nodes already held earlier
in the cycle, admissions earlier in the cycle (the snapshot's own copies) and fill, and
again after some of the nodes are given back."""

from __future__ import annotations

import random

from allotment.domain.cluster import GpuType, make_cluster
from allotment.scheduler.snapshot import Snapshot
from allotment.scheduler.state import ClusterState
from tests.builders import job, org, start_random_runs, team

GPU = GpuType("gpu")


def view(sc: Snapshot) -> tuple[object, ...]:
    return (sorted(sc.held), [sorted(b) for b in sc.levels[GPU]], sc.domain_free[GPU],
            sc.held_capacity(GPU), sc.type_free[GPU], sc.free, sc.max_fit(GPU))


def snapshot(seed: int) -> tuple[Snapshot, dict[int, int]]:
    """A random cycle's snapshot part-way through, and a gang's fill (node -> GPUs)."""
    rng = random.Random(seed)
    nodes = rng.choice([3, 8, 24])
    c = make_cluster({"gpu": 8 * nodes}, nodes_per_rack=rng.randint(1, 4),
                     racks_per_pod=rng.randint(1, 3))
    teams = ["a", "b", "c"]
    state = ClusterState(c, org([team(t, 0) for t in teams], 8 * nodes))
    start_random_runs(state, rng, teams, rng.randint(0, 3 * nodes), None)
    sc = Snapshot(state, 3600.0)
    for k in range(rng.randint(0, 3)):  # admissions earlier in the cycle
        w = job(f"x{k}", "a", 1, 0.0, 10.0, seq=500 + k)
        free = [i for i in range(nodes) if sc.free[i] and i not in sc.held]
        if free:
            sc.admit(w, ((rng.choice(free), 1),))
    if rng.random() < 0.5:  # nodes held for another gang earlier in the cycle
        sc.hold(rng.sample(range(nodes), rng.randint(1, nodes)))
    fill = {i: rng.randint(1, 8 - sc.free[i]) for i in rng.sample(range(nodes), nodes // 3)
            if sc.free[i] < 8}
    return sc, fill


def test_bulk_hold_equals_node_by_node() -> None:
    took_fill_only = took_all_free = 0
    for seed in range(300):
        bulk, fill = snapshot(seed)
        single, _ = snapshot(seed)
        assert view(bulk) == view(single)
        nodes = [i for i in range(len(bulk.free))
                 if i not in bulk.held and (bulk.free[i] or fill.get(i))]
        taken = bulk.hold_available(GPU, fill)
        single.hold(nodes)
        assert sorted(taken) == nodes, seed
        if seed % 2:  # (even seeds: give back before the held racks and pods are counted)
            assert view(bulk) == view(single), seed
        assert bulk.type_free[GPU] == 0
        back = tuple(random.Random(seed).sample(nodes, len(nodes) // 2))
        bulk.unhold(back)
        single.unhold(back)
        assert view(bulk) == view(single), seed
        took_fill_only += any(bulk.free[i] == 0 for i in taken)
        took_all_free += bool(taken)
    # the random states reach both kinds of node taken
    assert took_fill_only > 20 and took_all_free > 200
