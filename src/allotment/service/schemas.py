"""API schemas: one per direction (``XCreate`` in, ``XUpdate`` partial, ``XPublic`` out).

Every request body (``In``) is strict: an integer field takes a JSON integer only (not
``"1"``, ``true`` or ``1.0``), a number field a JSON number, a bool a JSON bool; dates stay
ISO strings. Numbers are finite; text is storable (``bounds.text_problem``).
"""

from __future__ import annotations

from datetime import date
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from allotment.domain.period import PATTERN as PERIOD
from allotment.service.bounds import INT32_MAX, first_bad_value

Name = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.@-]+$")
T = TypeVar("T")


class In(BaseModel):
    """Every request body: strict types, finite numbers; unknown fields, NUL characters
    (which no database text column can hold) and lone surrogates are refused, with the
    field named. The check walks nested values iteratively (any depth is safe)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    @field_validator("*")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        bad = first_bad_value(value)
        if bad is not None:
            path, why = bad
            raise PydanticCustomError("value_error", ".".join(map(str, path)) + f": {why}"
                                      if path else why)
        return value


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Page(Out, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


class UserCreate(In):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    role: Literal["member", "lead", "admin"]
    team: str | None = Field(default=None, min_length=1, max_length=128)


class UserPublic(Out):
    id: int
    name: str
    role: str
    org_node: str | None
    disabled_at: float | None = Field(default=None, description="set while the user is "
                                      "disabled: its tokens and sessions are refused")


class UserCreated(UserPublic):
    token: str = Field(description="shown once; store it, it is kept only hashed")


class TokenPublic(Out):
    id: int
    user_id: int
    created_at: float
    revoked_at: float | None


class TokenCreated(TokenPublic):
    token: str = Field(description="shown once; store it, it is kept only hashed")


class NodeIn(In):
    name: str = Name
    gpu_type: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    gpus: int = Field(ge=1, le=1024)
    rack: int = Field(default=0, ge=0, le=10**6)
    pod: int = Field(default=0, ge=0, le=10**6)
    state: Literal["up", "down"] = "up"


class InventoryUpdate(In):
    nodes: list[NodeIn] = Field(min_length=1, max_length=100_000)


class NodePublic(Out):
    name: str
    gpu_type: str
    gpus: int
    rack: int
    pod: int
    state: str


class InventoryPublic(Out):
    nodes: list[NodePublic]
    gpus_by_type: dict[str, int]


class OrgUpdate(In):
    org: list[dict[str, Any]] = Field(min_length=1, max_length=10_000)


class QuotaPublic(Out):
    period: str
    org_node: str
    gpu_type: str
    guaranteed: int
    borrow_limit: int | None
    lend_limit: int | None
    source: str


class OrgNodePublic(Out):
    name: str
    parent: str | None
    weight: float
    is_team: bool
    idle_window_s: float | None = Field(
        description="idle-GPU window of this node's teams (None: inherited or the default)")
    quotas: list[QuotaPublic]


class OrgPublic(Out):
    period: str
    nodes: list[OrgNodePublic]


class JobCreate(In):
    team: str = Field(min_length=1, max_length=128)
    gpu_type: str = Field(min_length=1, max_length=64)
    gpus: int = Field(ge=1, le=100_000)
    command: str = Field(min_length=1, max_length=8192)
    name: str = Field(default="", max_length=128)
    priority_class: Literal["low", "normal", "high"] = "normal"
    preemptible: bool = True
    time_limit_s: float | None = Field(default=None, gt=0, le=365 * 86400)
    reservation: str | None = Field(default=None, min_length=1, max_length=64,
                                    description="the launch reservation the job runs in")


class JobPublic(Out):
    id: int
    team: str
    user: str
    name: str
    gpu_type: str
    gpus: int
    command: str
    priority_class: str
    preemptible: bool
    time_limit_s: float | None
    state: str
    submit_time: float
    reason: str
    queue_position: int | None
    estimated_start: float | None
    placement: list[Any]
    gpu_ids: dict[str, Any]
    borrowed_gpus: int
    start_time: float | None
    first_start: float | None
    end_time: float | None
    attempts: int
    preemptions: int
    external_id: str | None = Field(
        description="the backend's id of the current attempt (Slurm job id, runner pid)")
    exit_code: int | None
    hold_until: float | None
    stop_reason: str
    idle_warned_at: float | None
    idle_gpu_hours: float
    last_util_pct: float | None
    reservation: str | None = None


class SampleIn(In):
    gpu: int = Field(default=0, ge=0, le=1024)
    util_pct: float = Field(ge=0, le=100)
    mem_used_mib: float = Field(default=0.0, ge=0, le=10**7)
    time: float | None = Field(default=None, ge=0, le=10**11)


class SamplesCreate(In):
    samples: list[SampleIn] = Field(min_length=1, max_length=1024)


class TeamQueue(Out):
    team: str
    pending_jobs: int
    pending_gpus: int
    running_jobs: int
    running_gpus: int
    borrowed_gpus: int


class RequestCreate(In):
    team: str = Field(min_length=1, max_length=128)
    period: str = Field(pattern=PERIOD)
    gpu_type: str = Field(min_length=1, max_length=64)
    gpus: int = Field(ge=0, le=10_000_000)
    min_gpus: int = Field(default=0, ge=0, le=10_000_000)
    tier: str = Field(default="normal", min_length=1, max_length=32,
                      description="a tier of the planner: critical, high, normal or low")
    launch: date | None = Field(default=None, strict=False)
    justification: str = Field(default="", max_length=4000)
    cooperates_with: list[str] = Field(default_factory=list, max_length=100)


class RequestUpdate(In):
    """Only the fields given change. ``null`` clears ``launch``; the other fields cannot
    be null (leave them out to keep them)."""

    gpus: int | SkipJsonSchema[None] = Field(default=None, ge=0, le=10_000_000)
    min_gpus: int | SkipJsonSchema[None] = Field(default=None, ge=0, le=10_000_000)
    tier: str | SkipJsonSchema[None] = Field(default=None, min_length=1, max_length=32)
    launch: date | None = Field(default=None, strict=False)
    justification: str | SkipJsonSchema[None] = Field(default=None, max_length=4000)

    @field_validator("gpus", "min_gpus", "tier", "justification", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise PydanticCustomError("null_not_allowed", "must not be null (leave the field "
                                      "out to keep its value)")
        return value


class RequestPublic(Out):
    id: int
    team: str
    period: str
    gpu_type: str
    gpus: int
    min_gpus: int
    tier: str
    launch: str | None
    justification: str
    cooperates_with: list[str]
    created_by: str
    updated_at: float


class PlanCreate(In):
    """Either a whole planner ``scenario`` (as in ``allot plan``) or a ``period`` to plan
    from the stored org, inventory, requests and last period's usage."""

    scenario: dict[str, Any] | None = None
    period: str | None = Field(default=None, pattern=PERIOD)
    as_of: date | None = Field(default=None, strict=False)
    rules: dict[str, Any] | None = None
    reserve: dict[str, int] | None = None
    # run and publish in one transaction: a plan that cannot be published leaves nothing
    publish: bool = False


class PlanPublic(Out):
    id: int
    period: str
    status: str
    created_by: str
    created_at: float
    published_at: float | None
    result: dict[str, Any]


class PlanCompare(In):
    a: int = Field(ge=1, le=INT32_MAX)
    b: int = Field(ge=1, le=INT32_MAX)


class DisputeCreate(In):
    team: str = Field(min_length=1, max_length=128)
    subject_kind: Literal["plan", "preemption"]
    subject_id: str = Field(pattern=r"^[0-9]{1,10}$",
                            description="the plan id or the preempted job's id")
    wants: str = Field(min_length=1, max_length=2000)
    why: str = Field(min_length=1, max_length=4000)
    gpu_type: str | None = Field(default=None, max_length=64)
    wanted_gpus: int | None = Field(default=None, ge=0, le=10_000_000)
    period: str | None = Field(default=None, pattern=PERIOD)


class DisputeResolve(In):
    decision: Literal["granted", "partially_granted", "denied"]
    reason: str = Field(min_length=1, max_length=4000)
    guaranteed: int | None = Field(default=None, ge=0, le=10_000_000)


class DisputePublic(Out):
    id: int
    team: str
    filed_by: str
    subject_kind: str
    subject_id: str
    wants: str
    why: str
    gpu_type: str | None
    wanted_gpus: int | None
    period: str | None
    state: str
    assigned_to: str | None
    level: int
    escalate_at: float | None
    decision: str | None
    decision_reason: str | None
    resolved_by: str | None
    resolved_at: float | None
    quota_change: dict[str, Any]
    history: list[Any]
    created_at: float


class AuditPublic(Out):
    seq: int
    time: float
    actor: str
    action: str
    subject: str
    reason: str
    data: dict[str, Any]
    hash: str


class AuditVerifyPublic(Out):
    ok: bool
    entries: int
    problems: list[str] = Field(description="which entry, head row or head file line failed "
                                "(for admins; others learn only ok and the count)")
    keyed_from: int | None = Field(default=None, description="the first entry of the keyed "
                                   "(HMAC) chain; None: not keyed yet")


class UsagePublic(Out):
    team: str
    gpu_type: str
    period: str
    used_gpu_hours: float
    borrowed_gpu_hours: float
    lent_gpu_hours: float
    idle_allocated_gpu_hours: float
    guaranteed_gpu_hours: float
    hoarding_score: float
    preemptions: int = Field(description="runs of this team preempted in the period")
    budget_gpu_hours: float | None = Field(
        default=None, description="the team's GPU-hour budget for the period (none: no budget)")
    remaining_gpu_hours: float | None = Field(
        default=None, description="budget - used, never below 0 (none: no budget)")
    credit_gpu_hours: float = Field(
        default=0.0, description="credit for lending, now (scheduler.ledger)")


class OrgChangePublic(Out):
    """One change of a reorganisation (``governance.reorg``): ``kind`` is added, removed,
    renamed, merged, split, moved or guarantee; ``text`` says it in words; the other keys
    (``from``, ``to``, ``parts``, ``heir``, ``into``, ``parent``) depend on the kind."""

    model_config = ConfigDict(extra="allow")
    kind: str
    node: str
    text: str


class OrgApplied(OrgPublic):
    """The org after ``PUT /v1/org`` (with ``dry_run``: the org as it still is), and the
    changes applied (or that would be)."""

    changes: list[OrgChangePublic]
    dry_run: bool
    version: int | None = Field(description="the new org version (None: a dry run)")
    moved: dict[str, int] = Field(default_factory=dict,
                                  description="rows re-keyed, per table")


class OrgVersionPublic(Out):
    id: int
    created_at: float
    actor: str
    teams: int
    changes: list[OrgChangePublic]
    moves: dict[str, str] = Field(description="old node -> the node its work and history "
                                  "went to")
    org: dict[str, Any] = Field(description="the org file of this version")


class InventoryChangePublic(Out):
    kind: str = Field(description="added, removed or changed")
    node: str
    text: str


class InventoryApplied(InventoryPublic):
    """The inventory after ``PUT /v1/inventory`` (with ``dry_run``: as it still is), and
    the changes applied (or that would be)."""

    changes: list[InventoryChangePublic]
    dry_run: bool


class ReservationCreate(In):
    """A launch reservation asked for (``governance.reservations`` has the rules)."""

    team: str = Field(min_length=1, max_length=128)
    gpus: int = Field(ge=1, le=10_000_000)
    gpu_type: str | None = Field(default=None, min_length=1, max_length=64,
                                 description="may be left out when the cluster has one type")
    start: str = Field(min_length=1, max_length=64,
                       description="ISO 8601 date and time; without an offset: UTC")
    hours: float = Field(gt=0, le=31 * 24)
    reason: str = Field(min_length=1, max_length=4000)
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,64}$",
                             description="default: <team>-<start as YYYYmmddHHMM>")


class ReservationPublic(Out):
    name: str
    team: str
    gpu_type: str
    gpus: int
    start: str = Field(description="ISO 8601, UTC")
    hours: float
    end: str = Field(description="ISO 8601, UTC")
    reason: str
    status: str = Field(description="pending, approved or cancelled")
    requested_by: str
    approved_by: str | None = Field(description="the admin, or auto (within the guarantee)")
    impact: dict[str, Any] = Field(description="beyond_guarantee, team_guarantee, "
                                   "from_unguaranteed, shrinks (team -> GPUs), text")
