"""Where a gang goes: pure functions over free GPUs per node.

Rules (all policies):
- a gang no larger than one node goes on exactly one node, best fit (the node with the
  fewest free GPUs that still holds it; ties: lowest node index), never split;
- a larger gang goes inside the smallest topology domain (rack, then pod, then all nodes
  of its type) that has enough free GPUs, best fit among domains (fewest free; ties: lowest
  id), taking that domain's nodes with the most free GPUs first so it spans few nodes.
Held nodes (reserved for another gang) are never used.
"""

from __future__ import annotations

from collections.abc import Sequence

from allotment.domain.cluster import Node

Placement = tuple[tuple[int, int], ...]


def on_one_node(gpus: int, node_gpus: int) -> bool:
    """Whether a gang must go on a single node: it is no larger than the largest node."""
    return gpus <= node_gpus


def place_on_one_node(levels: list[set[int]], gpus: int) -> int | None:
    """Best-fit node for a small gang; ``levels[f]`` is the set of usable nodes with f free."""
    for f in range(gpus, len(levels)):
        bucket = levels[f]
        if bucket:
            return min(bucket)
    return None


def domain_of(node: Node, level: str) -> int:
    if level == "rack":
        return node.rack
    if level == "pod":
        return node.pod
    return 0


def domain_totals(
    nodes: Sequence[Node], node_ids: Sequence[int], free: Sequence[int], held: set[int], level: str
) -> dict[int, int]:
    totals: dict[int, int] = {}
    for i in node_ids:
        if i in held or not free[i]:
            continue
        d = domain_of(nodes[i], level)
        totals[d] = totals.get(d, 0) + free[i]
    return totals


def fullest_first(members: list[int], free: Sequence[int], gpus: int) -> Placement | None:
    """``gpus`` taken from ``members``, most free GPUs first (ties: lowest index), so the
    gang spans few nodes; None if they do not hold it."""
    members.sort(key=lambda i: (-free[i], i))
    out: list[tuple[int, int]] = []
    need = gpus
    for i in members:
        take = min(free[i], need)
        out.append((i, take))
        need -= take
        if need == 0:
            return tuple(sorted(out))
    return None


def place_across_nodes(
    nodes: Sequence[Node], node_ids: Sequence[int], free: Sequence[int], held: set[int], gpus: int
) -> Placement | None:
    """Placement of a gang larger than one node, or None if the free GPUs cannot hold it."""
    for level in ("rack", "pod", "type"):
        totals = domain_totals(nodes, node_ids, free, held, level)
        fitting = [(total, d) for d, total in totals.items() if total >= gpus]
        if not fitting:
            continue
        _, domain = min(fitting)
        members = [
            i for i in node_ids
            if i not in held and free[i] and domain_of(nodes[i], level) == domain
        ]
        placement = fullest_first(members, free, gpus)
        if placement is not None:
            return placement
    return None


LEVELS = ("rack", "pod")  # the topology levels below "type" (all nodes of the type)
DomainIndex = dict[str, dict[int, list[int]]]  # level -> domain -> its node ids, ascending
DomainFree = dict[str, dict[int, int]]  # level -> domain -> free GPUs on unheld nodes


def domain_index(nodes: Sequence[Node], node_ids: Sequence[int]) -> DomainIndex:
    """The nodes of each rack and pod (fixed for a cluster)."""
    index: DomainIndex = {level: {} for level in LEVELS}
    for i in sorted(node_ids):
        for level in LEVELS:
            index[level].setdefault(domain_of(nodes[i], level), []).append(i)
    return index


def place_in_domains(
    index: DomainIndex, largest: dict[str, int], levels: list[set[int]], totals: DomainFree,
    type_free: int, free: Sequence[int], held: set[int], gpus: int,
) -> Placement | None:
    """``place_across_nodes`` (same rule, same answer) from free totals kept per domain,
    so that a cycle does not rescan every node for each large gang: a level whose largest
    domain (``largest``: GPUs, free or not) is smaller than the gang is skipped, and the
    nodes of the type with free GPUs are read from ``levels`` (the unheld nodes by free
    GPUs, ``levels[f]`` for f >= 1)."""
    for level in (*LEVELS, "type"):
        if level == "type":
            if type_free < gpus:
                return None
            members = [i for f in range(1, len(levels)) for i in levels[f]]
        else:
            if largest[level] < gpus:
                continue  # no domain of this level holds the gang, free or not
            fitting = [(total, d) for d, total in totals[level].items() if total >= gpus]
            if not fitting:
                continue
            _, domain = min(fitting)
            members = [i for i in index[level][domain] if i not in held and free[i]]
        placement = fullest_first(members, free, gpus)
        if placement is not None:
            return placement
    return None
