"""The org tree: org > groups > teams (any depth), each node with a quota per GPU type.

A node's ``Quota`` for one GPU type has:
- ``guaranteed``: GPUs the node's subtree may always get back (by reclaim if lent);
- ``borrow_limit``: at most this many GPUs above ``guaranteed`` (None: no limit);
- ``lend_limit``: at most this many of its unused guaranteed GPUs lent to others (None: all);
and the node has a ``weight`` (> 0) used by the fair-share ordering of the surplus.
Internal nodes without an explicit guarantee guarantee the sum of their children.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NewType

from allotment.domain.cluster import GpuType
from allotment.errors import ConfigurationError, InputError

TeamId = NewType("TeamId", str)

ROOT = "__root__"


@dataclass(frozen=True, slots=True)
class Quota:
    """Guarantee and limits of one org node for one GPU type."""

    guaranteed: int = 0
    borrow_limit: int | None = None
    lend_limit: int | None = None

    def __post_init__(self) -> None:
        if self.guaranteed < 0:
            raise InputError("guaranteed", f"must be >= 0, got {self.guaranteed}")
        if self.borrow_limit is not None and self.borrow_limit < 0:
            raise InputError("borrow_limit", f"must be >= 0, got {self.borrow_limit}")
        if self.lend_limit is not None and self.lend_limit < 0:
            raise InputError("lend_limit", f"must be >= 0, got {self.lend_limit}")


@dataclass(frozen=True, slots=True)
class OrgNode:
    """One node of the org tree; ``parent`` is None only for top-level nodes under the root."""

    name: str
    parent: str | None = None
    quotas: Mapping[GpuType, Quota] = field(default_factory=dict)
    weight: float = 1.0
    explicit_guarantee: bool = True

    def __post_init__(self) -> None:
        if not self.name or self.name == ROOT:
            raise InputError("name", f"invalid org node name {self.name!r}")
        if not self.weight > 0:
            raise InputError(f"{self.name}.weight", f"must be > 0, got {self.weight}")


class OrgTree:
    """An immutable org tree with integer indexes; index 0 is the implicit root (the cluster).

    Leaves are teams. Lookups used in hot paths are plain lists indexed by node index.
    """

    def __init__(self, nodes: Iterable[OrgNode], capacity: Mapping[GpuType, int]) -> None:
        node_list = list(nodes)
        names = [n.name for n in node_list]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise InputError("name", f"duplicate org node name(s): {', '.join(dupes)}")
        by_name = {n.name: n for n in node_list}
        for n in node_list:
            if n.parent is not None and n.parent not in by_name:
                raise InputError(f"{n.name}.parent", f"unknown parent {n.parent!r}")
        # index nodes: root first, then depth-first in name order (deterministic)
        children_names: dict[str | None, list[str]] = {}
        for n in node_list:
            children_names.setdefault(n.parent, []).append(n.name)
        order: list[str] = []

        def visit(parent: str | None, trail: tuple[str, ...]) -> None:
            for child in sorted(children_names.get(parent, [])):
                if child in trail:
                    raise InputError(f"{child}.parent", "cycle in org tree")
                order.append(child)
                visit(child, (*trail, child))

        visit(None, ())
        if len(order) != len(node_list):
            missing = sorted(set(names) - set(order))
            raise InputError(f"{missing[0]}.parent", "cycle in org tree")
        self.names: list[str] = [ROOT, *order]
        self.index: dict[str, int] = {name: i for i, name in enumerate(self.names)}
        self.nodes: list[OrgNode | None] = [None, *(by_name[n] for n in order)]
        self.parent: list[int] = [-1] + [
            self.index[by_name[n].parent or ROOT] for n in order
        ]
        self.children: list[list[int]] = [[] for _ in self.names]
        for i in range(1, len(self.names)):
            self.children[self.parent[i]].append(i)
        self.depth: list[int] = [0] * len(self.names)
        for i in range(1, len(self.names)):
            self.depth[i] = self.depth[self.parent[i]] + 1
        # path from the top-level ancestor down to the node (root excluded)
        self.path: list[tuple[int, ...]] = [()] * len(self.names)
        for i in range(1, len(self.names)):
            self.path[i] = (*self.path[self.parent[i]], i)
        self.weight: list[float] = [1.0] + [by_name[n].weight for n in order]
        self.gpu_types: tuple[GpuType, ...] = tuple(sorted(capacity))
        self.capacity: dict[GpuType, int] = dict(capacity)
        self.is_team: list[bool] = [i > 0 and not self.children[i] for i in range(len(self.names))]
        self.team_ids: list[TeamId] = [
            TeamId(n) for i, n in enumerate(self.names) if self.is_team[i]
        ]
        self.guaranteed: dict[GpuType, list[int]] = {}
        self.borrow_limit: dict[GpuType, list[int | None]] = {}
        self.lend_limit: dict[GpuType, list[int | None]] = {}
        for gpu_type in self.gpu_types:
            self._resolve_type(gpu_type)
        for n in node_list:
            for gpu_type in n.quotas:
                if gpu_type not in capacity:
                    raise InputError(
                        f"{n.name}.quotas",
                        f"unknown GPU type {gpu_type!r} (cluster has {', '.join(self.gpu_types)})",
                    )
        self.total_guaranteed: list[int] = [
            sum(self.guaranteed[t][i] for t in self.gpu_types) for i in range(len(self.names))
        ]

    def _resolve_type(self, gpu_type: GpuType) -> None:
        size = len(self.names)
        guaranteed = [0] * size
        borrow: list[int | None] = [None] * size
        lend: list[int | None] = [None] * size
        # bottom-up: deepest first
        for i in sorted(range(1, size), key=lambda k: -self.depth[k]):
            node = self.nodes[i]
            assert node is not None
            quota = node.quotas.get(gpu_type)
            child_sum = sum(guaranteed[c] for c in self.children[i])
            if quota is not None and (node.explicit_guarantee or not self.children[i]):
                if self.children[i] and child_sum > quota.guaranteed:
                    raise ConfigurationError(
                        f"{node.name}: children guarantee {child_sum} {gpu_type} GPUs, "
                        f"more than its own guarantee {quota.guaranteed}"
                    )
                guaranteed[i] = quota.guaranteed
            else:
                guaranteed[i] = child_sum
            if quota is not None:
                borrow[i] = quota.borrow_limit
                lend[i] = quota.lend_limit
        top = sum(guaranteed[c] for c in self.children[0])
        cap = self.capacity[gpu_type]
        if top > cap:
            raise ConfigurationError(
                f"top-level guarantees for {gpu_type} add up to {top} GPUs, "
                f"more than the cluster's {cap}"
            )
        guaranteed[0] = cap
        self.guaranteed[gpu_type] = guaranteed
        self.borrow_limit[gpu_type] = borrow
        self.lend_limit[gpu_type] = lend

    def team_index(self, team: str) -> int:
        i = self.index.get(team)
        if i is None or not self.is_team[i]:
            raise InputError("team", f"unknown team {team!r}")
        return i

    def guarantee_of(self, team: str, gpu_type: GpuType) -> int:
        return self.guaranteed[gpu_type][self.index[team]]

    def ancestors(self, i: int) -> list[int]:
        """Node ``i`` and its ancestors up to (excluding) the root, bottom-up."""
        out = []
        while i > 0:
            out.append(i)
            i = self.parent[i]
        return out


def flat_org(
    guarantees: Mapping[str, Mapping[GpuType, int]],
    capacity: Mapping[GpuType, int],
    weights: Mapping[str, float] | None = None,
) -> OrgTree:
    """A one-level org: every team directly under the root."""
    weights = weights or {}
    return OrgTree(
        [
            OrgNode(team, None, {t: Quota(g) for t, g in q.items()}, weights.get(team, 1.0))
            for team, q in guarantees.items()
        ],
        capacity,
    )
