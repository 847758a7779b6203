"""The planner's input: one YAML/JSON scenario, validated by pydantic.

    period: 2026-12                 # the period planned (free text, e.g. a month)
    as_of: 2026-11-22               # the date launch proximity is measured from
    inventory: {h100: 16000}        # GPUs per type (or clusters: {name: {type: n}})
    reserve: {h100: 320}            # held back for maintenance, per type
    rules:                          # optional; defaults shown
      launch_boost: 1.0             # weight x (1 + boost x max(0, 1 - days / horizon))
      launch_horizon_days: 90
      idle_penalty_max: 0.5         # weight x (1 - min(max, idle / allocated GPU-hours))
      tiers: {critical: 4, high: 2, normal: 1, low: 0.5}
    org:                            # weights of org nodes (org priorities); leaves are teams
      - name: research
        weight: 2
        children: [{name: llm-a}, {name: vision}]
    requests:
      - team: llm-a
        period: 2026-12             # optional; requests for other periods are left out
        gpu_type: h100
        gpus: 8000                  # requested GPUs for the period
        min_gpus: 2000              # minimum viable: below this the project cannot run
        gpu_hours: 4000000          # optional
        tier: high
        launch: 2027-01-15          # launch or milestone date, optional
        justification: "flagship model pre-training"
        cooperates_with: [llm-b]
        tags: [llm, pretraining]
    history:                        # optional, last period, per team
      llm-a: {allocated_gpus: 2000, used_gpu_hours: 1300000, idle_gpu_hours: 1840}
    budgets:                        # optional: GPU-hour budgets of the period, set on publish
      - {team: llm-a, gpu_type: h100, gpu_hours: 4000000}   # gpu_type optional with one type

Errors name the path of the bad field, e.g. ``requests[3].min_gpus``.
"""

from __future__ import annotations

from collections import Counter
from datetime import date
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from allotment.errors import ScenarioError

# strict types (no "8" or true for a GPU count) and finite numbers; dates from ISO strings
STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class Rules(BaseModel):
    model_config = STRICT

    launch_boost: float = Field(default=1.0, ge=0)
    launch_horizon_days: float = Field(default=90.0, gt=0)
    idle_penalty_max: float = Field(default=0.5, ge=0, lt=1)
    tiers: dict[str, float] = Field(
        default_factory=lambda: {"critical": 4.0, "high": 2.0, "normal": 1.0, "low": 0.5}
    )


class OrgWeightSpec(BaseModel):
    model_config = STRICT

    name: str = Field(min_length=1, max_length=128)
    weight: float = Field(default=1.0, gt=0)
    children: list[OrgWeightSpec] = Field(default_factory=list)


class RequestSpec(BaseModel):
    model_config = STRICT

    team: str = Field(min_length=1, max_length=128)
    period: str | None = Field(default=None, max_length=64)
    gpu_type: str = Field(min_length=1, max_length=64)
    gpus: int = Field(ge=0, le=10_000_000)
    min_gpus: int = Field(default=0, ge=0)
    gpu_hours: float | None = Field(default=None, ge=0)
    tier: str = "normal"
    launch: date | None = Field(default=None, strict=False)
    justification: str = Field(default="", max_length=4000)
    cooperates_with: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _floor_below_request(self) -> RequestSpec:
        if self.min_gpus > self.gpus:
            raise ValueError(f"min_gpus ({self.min_gpus}) is above gpus ({self.gpus})")
        return self


class HistorySpec(BaseModel):
    model_config = STRICT

    allocated_gpus: int = Field(default=0, ge=0)
    used_gpu_hours: float = Field(default=0.0, ge=0)
    idle_gpu_hours: float = Field(default=0.0, ge=0)


class BudgetSpec(BaseModel):
    """A team's GPU-hour budget for the period (``scheduler.ledger``)."""

    model_config = STRICT

    team: str = Field(min_length=1, max_length=128)
    gpu_type: str | None = Field(default=None, min_length=1, max_length=64)
    gpu_hours: float = Field(ge=0, le=1e12)


class Scenario(BaseModel):
    model_config = STRICT

    period: str = Field(min_length=1, max_length=64)
    as_of: date = Field(strict=False)
    inventory: dict[str, int] | None = None
    clusters: dict[str, dict[str, int]] | None = None
    reserve: dict[str, int] = Field(default_factory=dict)
    rules: Rules = Field(default_factory=Rules)
    org: list[OrgWeightSpec] = Field(min_length=1)
    requests: list[RequestSpec] = Field(default_factory=list)
    history: dict[str, HistorySpec] = Field(default_factory=dict)
    budgets: list[BudgetSpec] = Field(default_factory=list)
    other_period_requests: int = 0
    _org_maps: tuple[dict[str, str | None], dict[str, float], list[str]] | None = (
        PrivateAttr(default=None))

    def org_maps(self) -> tuple[dict[str, str | None], dict[str, float], list[str]]:
        """(parent of each org node, its weight, internal nodes deepest first), built once."""
        if self._org_maps is None:
            parent: dict[str, str | None] = {}
            weight: dict[str, float] = {}
            depth: dict[str, int] = {}
            stack: list[tuple[list[OrgWeightSpec], str | None, int]] = [(self.org, None, 0)]
            while stack:
                nodes, up, d = stack.pop()
                for n in nodes:
                    parent[n.name], weight[n.name], depth[n.name] = up, n.weight, d
                    if n.children:
                        stack.append((n.children, n.name, d + 1))
            internal = {p for p in parent.values() if p is not None}
            order = sorted(internal, key=lambda n: (-depth[n], n))
            self._org_maps = (parent, weight, order)
        return self._org_maps

    @model_validator(mode="after")
    def _inventory(self) -> Scenario:
        if (self.inventory is None) == (self.clusters is None):
            raise ValueError("give exactly one of inventory or clusters")
        self.other_period_requests = sum(
            1 for r in self.requests if r.period is not None and r.period != self.period)
        self.requests = [r for r in self.requests if r.period in (None, self.period)]
        types = sorted(self.capacity())
        seen: set[tuple[str, str]] = set()
        for k, b in enumerate(self.budgets):
            if b.gpu_type is None:
                if len(types) != 1:
                    raise ValueError(f"budgets[{k}].gpu_type: required with GPU types {types}")
                b.gpu_type = types[0]
            elif b.gpu_type not in types:
                raise ValueError(f"budgets[{k}].gpu_type: {b.gpu_type!r} is not in the "
                                 f"inventory ({types})")
            if (b.team, b.gpu_type) in seen:
                raise ValueError(f"budgets[{k}]: a second budget for {b.team} and {b.gpu_type}")
            seen.add((b.team, b.gpu_type))
        return self

    def capacity(self) -> dict[str, int]:
        """GPUs per type over all clusters, minus the reserve (never below 0)."""
        total: dict[str, int] = {}
        if self.inventory is not None:
            total.update(self.inventory)
        for per_type in (self.clusters or {}).values():
            for t, n in per_type.items():
                total[t] = total.get(t, 0) + n
        return {t: max(0, n - self.reserve.get(t, 0)) for t, n in sorted(total.items())}


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "scenario"


def parse_scenario(data: Any) -> Scenario:
    """Validate parsed YAML/JSON; raises ``ScenarioError`` naming the first bad field, then
    checks what pydantic cannot: unknown teams, GPU types, tiers, duplicate requests."""
    try:
        sc = Scenario.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ScenarioError(_loc(tuple(err["loc"])), err["msg"]) from None
    capacity = sc.capacity()
    for where, counts in (("inventory", sc.inventory or {}), ("reserve", sc.reserve)):
        for gpu, count in counts.items():
            if count < 0:
                raise ScenarioError(f"{where}.{gpu}", f"must be >= 0, got {count}")
    for t in sc.reserve:
        if t not in capacity:
            raise ScenarioError(f"reserve.{t}", f"unknown GPU type {t!r}")
    names: list[str] = []
    leaves: set[str] = set()

    def walk(nodes: list[OrgWeightSpec]) -> None:
        for n in nodes:
            names.append(n.name)
            if not n.children:
                leaves.add(n.name)
            walk(n.children)

    walk(sc.org)
    dupes = sorted(name for name, times in Counter(names).items() if times > 1)
    if dupes:
        raise ScenarioError("org", f"duplicate org node name(s): {dupes}")
    seen: set[tuple[str, str]] = set()
    for k, r in enumerate(sc.requests):
        where = f"requests[{k}]"
        if r.period is not None and r.period != sc.period:
            continue
        if r.team not in leaves:
            raise ScenarioError(f"{where}.team", f"unknown team {r.team!r} (not a leaf of org)")
        if r.gpu_type not in capacity:
            raise ScenarioError(f"{where}.gpu_type", f"unknown GPU type {r.gpu_type!r}; "
                                f"inventory has {sorted(capacity)}")
        if r.tier not in sc.rules.tiers:
            raise ScenarioError(f"{where}.tier", f"unknown tier {r.tier!r}; "
                                f"rules.tiers has {sorted(sc.rules.tiers)}")
        if (r.team, r.gpu_type) in seen:
            raise ScenarioError(f"{where}.team",
                                f"second request of {r.team!r} for {r.gpu_type}; merge them")
        seen.add((r.team, r.gpu_type))
        for other in r.cooperates_with:
            if other not in leaves:
                raise ScenarioError(f"{where}.cooperates_with", f"unknown team {other!r}")
    for team in sc.history:
        if team not in leaves:
            raise ScenarioError(f"history.{team}", f"unknown team {team!r}")
    sc.org_maps()
    return sc
