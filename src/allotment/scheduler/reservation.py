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
from allotment.scheduler.placement import domain_of
from allotment.scheduler.snapshot import Snapshot


def reserve(sc: Snapshot, w: Workload) -> Reservation | None:
    """Hold GPUs for ``w``; None when every node it could use is already held."""
    cluster = sc.state.cluster
    nodes = cluster.nodes
    previous = sc.state.last_reservations.get(w.id)
    if sc.single_node(w):
        node = None
        if previous is not None and previous[0] == "node":
            p = previous[1]
            if p not in sc.held and nodes[p].gpu_type == w.gpu_type and nodes[p].gpus >= w.gpus:
                node = p
        if node is None:
            levels = sc.levels[w.gpu_type]  # unheld nodes by free GPUs, most free first
            for f in range(len(levels) - 1, -1, -1):
                fitting = [i for i in levels[f] if nodes[i].gpus >= w.gpus]
                if fitting:
                    node = min(fitting)
                    break
        if node is None:
            return None
        sc.hold([node])
        return Reservation(w.gpu_type, w.id, ("node", node), (node,))
    ids = [i for i in cluster.nodes_by_type[w.gpu_type] if i not in sc.held]
    for level in ("rack", "pod", "type"):
        capacity: dict[int, int] = {}
        free: dict[int, int] = {}
        for i in ids:
            d = domain_of(nodes[i], level)
            capacity[d] = capacity.get(d, 0) + nodes[i].gpus
            free[d] = free.get(d, 0) + sc.free[i]
        big = [d for d, c in capacity.items() if c >= w.gpus]
        if not big:
            continue
        if previous is not None and previous[0] == level and previous[1] in big:
            domain = previous[1]
        else:
            domain = min(big, key=lambda d: (-free[d], d))
        members = sorted(
            (i for i in ids if domain_of(nodes[i], level) == domain and sc.free[i]),
            key=lambda i: (-sc.free[i], i),
        )
        held, total = [], 0
        for i in members:
            if total >= w.gpus:
                break
            held.append(i)
            total += sc.free[i]
        sc.hold(held)
        return Reservation(w.gpu_type, w.id, (level, domain), tuple(sorted(held)))
    return None
