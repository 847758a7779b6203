"""The org file: a YAML/JSON tree of org nodes with quotas, validated by pydantic.

    org:
      - name: research            # a group
        weight: 2
        children:
          - name: llm             # a team (a leaf)
            guaranteed: {gpu: 200}
            borrow_limit: {gpu: 100}
            lend_limit: {gpu: 50}
            weight: 1
            idle_window_s: 3600   # optional: idle-GPU window for this node's teams
      - name: product
        guaranteed: {gpu: 100}    # a group may set its own guarantee (>= its children's)
        children: [...]

``guaranteed``, ``borrow_limit`` and ``lend_limit`` map GPU type to GPUs; a bare integer
means the cluster's only GPU type. Errors name the path of the bad field, e.g.
``org[0].children[1].guaranteed``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from allotment.domain.cluster import GpuType
from allotment.domain.org import OrgNode, OrgTree, Quota
from allotment.domain.reservation import LaunchReservation, held_gpus
from allotment.errors import OrgFileError

# strict types (no "8" or true for a GPU count) and finite numbers
STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

GpuMap = dict[str, int] | int


class OrgNodeSpec(BaseModel):
    model_config = STRICT

    name: str = Field(min_length=1, max_length=128)
    weight: float = Field(default=1.0, gt=0)
    guaranteed: GpuMap | None = None
    borrow_limit: GpuMap | None = None
    lend_limit: GpuMap | None = None
    idle_window_s: float | None = Field(default=None, gt=0, le=30 * 86400)
    children: list[OrgNodeSpec] = Field(default_factory=list)

    @field_validator("guaranteed", "borrow_limit", "lend_limit")
    @classmethod
    def _non_negative(cls, v: GpuMap | None) -> GpuMap | None:
        values = [v] if isinstance(v, int) else list((v or {}).values())
        if any(x < 0 for x in values):
            raise ValueError("GPU counts must be >= 0")
        return v


class BudgetSpec(BaseModel):
    """``budgets: [{team, gpu_type, gpu_hours}]`` beside ``org:`` (a GPU-hour budget per
    team and GPU type for the period; ``gpu_type`` optional with one type)."""

    model_config = STRICT

    team: str = Field(min_length=1, max_length=128)
    gpu_type: str | None = Field(default=None, min_length=1, max_length=64)
    gpu_hours: float = Field(ge=0, le=1e12)

    @field_validator("gpu_hours", mode="before")
    @classmethod
    def _number(cls, v: Any) -> Any:
        return float(v) if isinstance(v, int) and not isinstance(v, bool) else v


class ReservationSpec(BaseModel):
    """``reservations: [{name, team, gpus, gpu_type, start, hours}]`` beside ``org:`` (launch
    reservations of a simulation: ``start`` in seconds from the trace's start; ``gpu_type``
    optional with one type). Approved as given."""

    model_config = STRICT

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    team: str = Field(min_length=1, max_length=128)
    gpus: int = Field(ge=1, le=10**7)
    gpu_type: str | None = Field(default=None, min_length=1, max_length=64)
    start: float = Field(ge=0, le=1e11)
    hours: float = Field(gt=0, le=24 * 366)

    @field_validator("start", "hours", mode="before")
    @classmethod
    def _number(cls, v: Any) -> Any:
        return float(v) if isinstance(v, int) and not isinstance(v, bool) else v


class OrgSpec(BaseModel):
    model_config = STRICT

    org: list[OrgNodeSpec] = Field(min_length=1)
    budgets: list[BudgetSpec] = Field(default_factory=list)
    reservations: list[ReservationSpec] = Field(default_factory=list)


def idle_windows(data: Any) -> dict[str, float]:
    """``idle_window_s`` by node name, for the nodes that set one (a valid org file)."""
    out: dict[str, float] = {}
    stack = list(OrgSpec.model_validate(data).org)
    while stack:
        s = stack.pop()
        if s.idle_window_s is not None:
            out[s.name] = s.idle_window_s
        stack.extend(s.children)
    return out


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "org"


def _gpu_map(value: GpuMap | None, types: tuple[GpuType, ...], where: str) -> dict[GpuType, int]:
    if value is None:
        return {}
    if isinstance(value, int):
        if len(types) != 1:
            raise OrgFileError(where, f"a bare number needs one GPU type; cluster has {types}")
        return {types[0]: value}
    unknown = sorted(set(value) - set(types))
    if unknown:
        raise OrgFileError(where, f"unknown GPU type(s) {unknown}; cluster has {list(types)}")
    return {GpuType(k): v for k, v in value.items()}


def org_from_data(data: Any, capacity: Mapping[GpuType, int]) -> OrgTree:
    """Build an ``OrgTree`` from parsed YAML/JSON; raises ``OrgFileError`` naming the field."""
    try:
        spec = OrgSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise OrgFileError(_loc(tuple(err["loc"])), err["msg"]) from None
    types = tuple(sorted(capacity))
    nodes: list[OrgNode] = []

    def walk(specs: list[OrgNodeSpec], parent: str | None, path: str) -> None:
        for k, s in enumerate(specs):
            where = f"{path}[{k}]"
            g = _gpu_map(s.guaranteed, types, f"{where}.guaranteed")
            b = _gpu_map(s.borrow_limit, types, f"{where}.borrow_limit")
            lend = _gpu_map(s.lend_limit, types, f"{where}.lend_limit")
            quotas = {
                t: Quota(g.get(t, 0), b.get(t), lend.get(t))
                for t in sorted(set(g) | set(b) | set(lend))
            }
            nodes.append(OrgNode(s.name, parent, quotas, s.weight,
                                 explicit_guarantee=s.guaranteed is not None))
            walk(s.children, s.name, f"{where}.children")

    walk(spec.org, None, "org")
    try:
        return OrgTree(nodes, capacity)
    except OrgFileError:
        raise
    except Exception as exc:  # InputError / ConfigurationError from the tree itself
        field = getattr(exc, "field", "org")
        raise OrgFileError(field, getattr(exc, "message", str(exc))) from None


def budgets_from_data(data: Any, tree: OrgTree) -> dict[tuple[str, GpuType], float]:
    """The ``budgets`` of an org file (GPU-hours per team and GPU type), checked against
    ``tree``; raises ``OrgFileError`` naming the field, e.g. ``budgets[1].team``."""
    try:
        spec = OrgSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise OrgFileError(_loc(tuple(err["loc"])), err["msg"]) from None
    return budgets_of(spec.budgets, tree, "budgets")


def reservations_from_data(data: Any, tree: OrgTree,
                           node_gpus: Mapping[GpuType, int] | None = None
                           ) -> list[LaunchReservation]:
    """The ``reservations`` of an org file, checked against ``tree`` and its capacity:
    a known team and GPU type, unique names, and at no time more GPUs of a type reserved
    than it has, each counted in the whole nodes the scheduler holds for it (no two share
    a node: its GPUs rounded up to a multiple of ``node_gpus[type]``, the type's largest
    node); raises ``OrgFileError`` naming the field, e.g. ``reservations[0].gpus``."""
    try:
        spec = OrgSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise OrgFileError(_loc(tuple(err["loc"])), err["msg"]) from None
    out: list[LaunchReservation] = []
    for k, r in enumerate(spec.reservations):
        where = f"reservations[{k}]"
        t = _team_and_type(tree, r.team, r.gpu_type, where)
        if any(o.name == r.name for o in out):
            raise OrgFileError(f"{where}.name", f"a second reservation named {r.name!r}")
        new = LaunchReservation(r.name, r.team, t, r.gpus, r.start, r.start + r.hours * 3600)
        cap = tree.capacity[t]
        m = max(1, (node_gpus or {}).get(t, 1))  # whole nodes (``held_gpus``)
        # the reserved GPUs of the type peak at the start of one of the overlapping ones
        for s in [new.start] + [o.start for o in out if o.gpu_type == t]:
            if not new.start <= s < new.end:
                continue
            at = [o for o in [*out, new] if o.gpu_type == t and o.start <= s < o.end]
            need = sum(held_gpus(o.gpus, m) for o in at)
            if need > cap:
                others = ", ".join(o.name for o in at if o is not new) or "none"
                raise OrgFileError(f"{where}.gpus", (
                    f"{need - cap} {t} GPUs short at t={s:g}: {r.gpus} GPUs with "
                    f"reservation(s) {others} need {need} (whole nodes of {m}) of the "
                    f"{cap} GPUs"))
        out.append(new)
    return out


def _team_and_type(tree: OrgTree, team: str, gpu_type: str | None, where: str) -> GpuType:
    """An entry's team (a team of ``tree``) and GPU type (optional with one type), checked;
    ``OrgFileError`` naming ``<where>.team`` or ``<where>.gpu_type`` otherwise."""
    i = tree.index.get(team)
    if i is None or not tree.is_team[i]:
        raise OrgFileError(f"{where}.team", f"{team!r} is not a team of the org")
    if gpu_type is None:
        if len(tree.gpu_types) != 1:
            raise OrgFileError(f"{where}.gpu_type",
                               f"required: the cluster has {list(tree.gpu_types)}")
        return tree.gpu_types[0]
    if gpu_type not in tree.gpu_types:
        raise OrgFileError(f"{where}.gpu_type", f"unknown GPU type {gpu_type!r}; "
                           f"cluster has {list(tree.gpu_types)}")
    return GpuType(gpu_type)


def budgets_of(specs: list[BudgetSpec], tree: OrgTree,
               where: str) -> dict[tuple[str, GpuType], float]:
    out: dict[tuple[str, GpuType], float] = {}
    for k, b in enumerate(specs):
        t = _team_and_type(tree, b.team, b.gpu_type, f"{where}[{k}]")
        if (b.team, t) in out:
            raise OrgFileError(f"{where}[{k}]", f"a second budget for {b.team} and {t}")
        out[(b.team, t)] = b.gpu_hours
    return out


def org_to_data(tree: OrgTree) -> dict[str, Any]:
    """The org file of ``tree`` (the inverse of ``org_from_data``): each node's own quotas,
    its guarantee only where it was given, its weight, its children."""
    def spec(i: int) -> dict[str, Any]:
        node = tree.nodes[i]
        assert node is not None
        out: dict[str, Any] = {"name": node.name, "weight": node.weight}
        if node.explicit_guarantee and node.quotas:
            out["guaranteed"] = {str(t): q.guaranteed for t, q in sorted(node.quotas.items())}
        borrow = {str(t): q.borrow_limit for t, q in sorted(node.quotas.items())
                  if q.borrow_limit is not None}
        lend = {str(t): q.lend_limit for t, q in sorted(node.quotas.items())
                if q.lend_limit is not None}
        if borrow:
            out["borrow_limit"] = borrow
        if lend:
            out["lend_limit"] = lend
        if tree.children[i]:
            out["children"] = [spec(c) for c in tree.children[i]]
        return out

    return {"org": [spec(c) for c in tree.children[0]]}
