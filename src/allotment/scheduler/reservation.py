"""Holding free GPUs for a blocked gang so that backfill cannot starve it.

No duration estimates are used, so a reservation is a place, not a time: the chosen
domain's free GPUs are held (up to the gang size) and grow as jobs there end; later jobs
backfill only elsewhere. The domain is sticky: a job keeps the domain of its last
reservation while that domain can still hold it.
  - gang <= one node: the node with the most free GPUs (ties: lowest index);
  - larger: the smallest topology level (rack, pod, all nodes of the type) with a domain
    big enough, and in it the domain with the most free GPUs (ties: lowest id).
"""

from __future__ import annotations

from allotment.domain.workload import Workload
from allotment.scheduler.decisions import Reservation
from allotment.scheduler.snapshot import Snapshot
from allotment.scheduler.state import Topology


def reserve(sc: Snapshot, w: Workload) -> Reservation | None:
    """Hold GPUs for ``w``; None when every node it could use is already held."""
    cluster = sc.state.cluster
    nodes = cluster.nodes
    t = w.gpu_type
    previous = sc.state.last_reservations.get(w.id)
    if sc.single_node(w):
        node = None
        if previous is not None and previous[0] == "node":
            p = previous[1]
            if p not in sc.held and nodes[p].gpu_type == t and nodes[p].gpus >= w.gpus:
                node = p
        if node is None:
            levels = sc.levels[t]  # unheld nodes by free GPUs, most free first
            uniform = sc.topology.uniform[t]
            for f in range(len(levels) - 1, -1, -1):
                if not levels[f]:
                    continue
                if uniform:  # every node of the type holds a gang that fits on one node
                    node = min(levels[f])
                    break
                fitting = [i for i in levels[f] if nodes[i].gpus >= w.gpus]
                if fitting:
                    node = min(fitting)
                    break
        if node is None:
            return None
        sc.hold([node])
        return Reservation(t, w.id, ("node", node), (node,))
    free = sc.free
    for level in (*Topology.LEVELS, "type"):
        domain = _domain(sc, w, level, previous)
        if domain is None:
            continue
        if level == "type":
            members = sc.nodes_by_free(t)
        else:
            held_nodes = sc.held
            members = sorted((i for i in sc.topology.members[(t, level)][domain]
                              if free[i] and i not in held_nodes), key=lambda i: (-free[i], i))
        held, total = [], 0
        for i in members:
            if total >= w.gpus:
                break
            held.append(i)
            total += free[i]
        sc.hold(held)
        return Reservation(t, w.id, (level, domain), tuple(sorted(held)))
    return None


def _domain(sc: Snapshot, w: Workload, level: str,
            previous: tuple[str, int] | None) -> int | None:
    """The domain at ``level`` whose unheld nodes can hold ``w``: the previous one if it
    still can, else the one with the most unheld free GPUs (ties: lowest id); None if
    none can."""
    t = w.gpu_type
    if level == "type":
        cap = sc.state.cluster.capacity(t) - sum(
            sc.state.cluster.nodes[i].gpus for i in sc.held
            if sc.state.cluster.nodes[i].gpu_type == t)
        return 0 if cap >= w.gpus else None
    key = (t, level)
    if sc.topology.max_capacity[key] < w.gpus:
        return None
    if previous is not None and previous[0] == level and (
            previous[1] in sc.topology.capacity[key]
            and sc.unheld_capacity(t, level, previous[1]) >= w.gpus):
        return previous[1]
    best: tuple[int, int] | None = None
    for d, f in sc.dom_free[key].items():
        if (best is None or (-f, d) < best) and sc.unheld_capacity(t, level, d) >= w.gpus:
            best = (-f, d)
    return None if best is None else best[1]
