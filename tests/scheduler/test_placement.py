"""Placement rules: small gangs on one node (best fit), large gangs inside one domain."""

from __future__ import annotations

import pytest

from allotment.scheduler.placement import place_across_nodes, place_on_one_node
from tests.builders import cluster


@pytest.mark.parametrize(
    ("free", "gpus", "expected"),
    [
        ([8, 3, 5], 3, 1),      # best fit: the node with the fewest free that holds it
        ([8, 3, 5], 4, 2),
        ([8, 3, 5], 8, 0),
        ([2, 2, 2], 3, None),   # never split a small gang, even with 6 free in total
        ([4, 4], 4, 0),         # ties: lowest index
    ],
)
def test_place_on_one_node(free: list[int], gpus: int, expected: int | None) -> None:
    """A gang of at most one node goes to the best-fitting single node."""
    levels: list[set[int]] = [set() for _ in range(9)]
    for i, f in enumerate(free):
        levels[f].add(i)
    assert place_on_one_node(levels, gpus) == expected


def test_large_gang_stays_in_one_rack_when_it_fits() -> None:
    """16 GPUs go inside the rack that holds them (best fit), whole nodes first."""
    c = cluster(64, 8, nodes_per_rack=2, racks_per_pod=2)  # 8 nodes, racks of 2, pods of 4
    free = [8, 0, 8, 8, 8, 4, 0, 0]
    placement = place_across_nodes(c.nodes, c.nodes_by_type["gpu"], free, set(), 16)
    assert placement == ((2, 8), (3, 8))


def test_large_gang_spills_to_pod_then_type() -> None:
    """No rack holds 12 free GPUs: the pod with the fewest sufficient free GPUs is used."""
    c = cluster(64, 8, nodes_per_rack=2, racks_per_pod=2)
    free = [6, 0, 0, 6, 8, 8, 8, 0]  # pod 0 has 12, pod 1 has 24; rack 2 has 16
    assert place_across_nodes(c.nodes, c.nodes_by_type["gpu"], free, set(), 12) == (
        (4, 8), (5, 4))
    assert place_across_nodes(c.nodes, c.nodes_by_type["gpu"], free, {4, 5}, 12) == (
        (0, 6), (3, 6))
    assert place_across_nodes(c.nodes, c.nodes_by_type["gpu"], free, set(), 40) is None


def test_held_nodes_are_never_used() -> None:
    """Reserved nodes are excluded from large-gang placement."""
    c = cluster(32, 8, nodes_per_rack=4)
    free = [8, 8, 8, 8]
    assert place_across_nodes(c.nodes, c.nodes_by_type["gpu"], free, {0, 1, 2}, 16) is None
