"""Cluster hardware: GPU types, nodes and a three-level topology (node < rack < pod)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NewType

GpuType = NewType("GpuType", str)


@dataclass(frozen=True, slots=True)
class Node:
    """A machine with ``gpus`` GPUs of one type, inside rack ``rack`` of pod ``pod``.

    ``rack`` is the NVLink island / rack index (global), ``pod`` the pod index.
    """

    index: int
    name: str
    gpu_type: GpuType
    gpus: int
    rack: int
    pod: int


@dataclass(frozen=True, slots=True)
class Cluster:
    """An immutable description of the nodes; indexes are positions in ``nodes``."""

    nodes: tuple[Node, ...]
    nodes_by_type: dict[GpuType, tuple[int, ...]] = field(init=False, compare=False)
    _capacity: dict[GpuType, int] = field(init=False, compare=False, repr=False)
    _max_node: dict[GpuType, int] = field(init=False, compare=False, repr=False)
    _type_nodes: dict[GpuType, frozenset[int]] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        by_type: dict[GpuType, list[int]] = {}
        for i, node in enumerate(self.nodes):
            if node.index != i:
                raise ValueError(f"node {node.name} has index {node.index}, expected {i}")
            by_type.setdefault(node.gpu_type, []).append(i)
        object.__setattr__(self, "nodes_by_type", {k: tuple(v) for k, v in by_type.items()})
        object.__setattr__(self, "_capacity", {
            t: sum(self.nodes[i].gpus for i in ids) for t, ids in by_type.items()})
        object.__setattr__(self, "_max_node", {
            t: max(self.nodes[i].gpus for i in ids) for t, ids in by_type.items()})
        object.__setattr__(self, "_type_nodes", {
            t: frozenset(ids) for t, ids in by_type.items()})

    @property
    def gpu_types(self) -> tuple[GpuType, ...]:
        return tuple(sorted(self.nodes_by_type))

    def type_node_set(self, gpu_type: GpuType) -> frozenset[int]:
        """The indexes of the nodes of ``gpu_type``, as a set."""
        return self._type_nodes.get(gpu_type, frozenset())

    def capacity(self, gpu_type: GpuType) -> int:
        return self._capacity.get(gpu_type, 0)

    @property
    def total_gpus(self) -> int:
        return sum(self._capacity.values())

    def max_node_gpus(self, gpu_type: GpuType) -> int:
        return self._max_node.get(gpu_type, 0)

    @property
    def num_racks(self) -> int:
        return 1 + max((n.rack for n in self.nodes), default=-1)

    @property
    def num_pods(self) -> int:
        return 1 + max((n.pod for n in self.nodes), default=-1)


def uniform_cluster(
    gpus: int,
    gpus_per_node: int = 8,
    gpu_type: str = "gpu",
    nodes_per_rack: int = 4,
    racks_per_pod: int = 8,
    start_index: int = 0,
    start_rack: int = 0,
    start_pod: int = 0,
) -> list[Node]:
    """Nodes for ``gpus`` GPUs of one type, ``gpus_per_node`` each (the last may be smaller)."""
    if gpus <= 0:
        raise ValueError("gpus must be positive")
    if gpus_per_node <= 0:
        raise ValueError("gpus_per_node must be positive")
    nodes: list[Node] = []
    remaining = gpus
    k = 0
    while remaining > 0:
        size = min(gpus_per_node, remaining)
        rack = start_rack + k // nodes_per_rack
        pod = start_pod + k // (nodes_per_rack * racks_per_pod)
        nodes.append(
            Node(start_index + k, f"{gpu_type}-n{k:04d}", GpuType(gpu_type), size, rack, pod)
        )
        remaining -= size
        k += 1
    return nodes


def make_cluster(
    gpus_by_type: dict[str, int],
    gpus_per_node: int = 8,
    nodes_per_rack: int = 4,
    racks_per_pod: int = 8,
) -> Cluster:
    """A cluster with one uniform block of nodes per GPU type (types in sorted order)."""
    nodes: list[Node] = []
    for gpu_type in sorted(gpus_by_type):
        start_rack = 1 + max((n.rack for n in nodes), default=-1)
        start_pod = 1 + max((n.pod for n in nodes), default=-1)
        nodes.extend(
            uniform_cluster(
                gpus_by_type[gpu_type], gpus_per_node, gpu_type, nodes_per_rack,
                racks_per_pod, len(nodes), start_rack, start_pod,
            )
        )
    return Cluster(tuple(nodes))
