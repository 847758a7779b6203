"""SQLAlchemy 2 tables of the service. Times are Unix seconds (float) so that the same
numbers flow into the scheduling core; JSON columns hold small lists and maps only.

Changing a table means a new Alembic migration in ``storage/migrations/versions``.

Ids handed to users (users, jobs, requests, plans, disputes) are never reused: on SQLite
their tables are AUTOINCREMENT (without it SQLite gives max(rowid) + 1, so the id of a
deleted row went to the next one); PostgreSQL's sequences never go back.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


NEVER_REUSED: dict[str, Any] = {"sqlite_autoincrement": True}


class User(Base):
    __tablename__ = "users"
    __table_args__ = NEVER_REUSED
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # member | lead | admin
    org_node: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    # set: every token and session of the user is refused (``allot admin disable-user``)
    disabled_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class UiSession(Base):
    """A dashboard login: the cookie holds a random id, the table only its SHA-256. It ends
    at ``expires_at``, at logout (row deleted), or when its user is disabled or the token it
    was opened with is revoked."""

    __tablename__ = "ui_sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    token_id: Mapped[int] = mapped_column(ForeignKey("api_tokens.id", ondelete="CASCADE"))
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)


class OrgNodeRow(Base):
    __tablename__ = "org_nodes"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    parent: Mapped[str | None] = mapped_column(String(128), nullable=True)
    weight: Mapped[float] = mapped_column(Float, default=1.0)
    position: Mapped[int] = mapped_column(Integer)
    idle_window_s: Mapped[float | None] = mapped_column(Float, nullable=True)


class QuotaRow(Base):
    """Quota of one org node for one GPU type in one period (``default``: the org file)."""

    __tablename__ = "quotas"
    period: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_node: Mapped[str] = mapped_column(String(128), primary_key=True)
    gpu_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    guaranteed: Mapped[int] = mapped_column(Integer)
    borrow_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    lend_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    source: Mapped[str] = mapped_column(String(64))


class BudgetRow(Base):
    """A team's GPU-hour budget for one GPU type in one period (``default``: the org file's,
    for every period without its own), keyed by team so a reorganisation can re-key it."""

    __tablename__ = "budgets"
    period: Mapped[str] = mapped_column(String(64), primary_key=True)
    team: Mapped[str] = mapped_column(String(128), primary_key=True)
    gpu_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    gpu_hours: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(64))


class NodeRow(Base):
    __tablename__ = "nodes"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    gpu_type: Mapped[str] = mapped_column(String(64))
    gpus: Mapped[int] = mapped_column(Integer)
    rack: Mapped[int] = mapped_column(Integer, default=0)
    pod: Mapped[int] = mapped_column(Integer, default=0)
    position: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="up")  # up | down


class RequestRow(Base):
    """A team's GPU request for a period (the planner's input): at most one per team,
    period and GPU type, as the planner takes them."""

    __tablename__ = "requests"
    __table_args__ = (UniqueConstraint("team", "period", "gpu_type",
                                       name="uq_requests_team_period_gpu_type"), NEVER_REUSED)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team: Mapped[str] = mapped_column(String(128))
    period: Mapped[str] = mapped_column(String(64))
    gpu_type: Mapped[str] = mapped_column(String(64))
    gpus: Mapped[int] = mapped_column(Integer)
    min_gpus: Mapped[int] = mapped_column(Integer, default=0)
    tier: Mapped[str] = mapped_column(String(32), default="normal")
    launch: Mapped[str | None] = mapped_column(String(10), nullable=True)
    justification: Mapped[str] = mapped_column(Text, default="")
    cooperates_with: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_by: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[float] = mapped_column(Float)


class PlanRow(Base):
    __tablename__ = "plans"
    __table_args__ = NEVER_REUSED
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    period: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # draft | published | superseded
    scenario: Mapped[dict[str, Any]] = mapped_column(JSON)
    result: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    published_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class JobRow(Base):
    """A job and its whole lifecycle; ``state`` moves only by conditional updates
    (``UPDATE ... WHERE state = old``), so two writers never both act on one transition.

    States: pending -> starting (admission committed) -> running (process launched)
    -> terminating (preemption sent) -> pending (requeued) | succeeded | failed | cancelled;
    pending -> rejected | cancelled.
    """

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team: Mapped[str] = mapped_column(String(128))
    user: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(128), default="")
    gpu_type: Mapped[str] = mapped_column(String(64))
    gpus: Mapped[int] = mapped_column(Integer)
    command: Mapped[str] = mapped_column(Text)
    priority_class: Mapped[str] = mapped_column(String(16), default="normal")
    preemptible: Mapped[bool] = mapped_column(Boolean, default=True)
    time_limit_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    submit_time: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(Text, default="")
    queue_position: Mapped[int | None] = mapped_column(Integer, nullable=True)
    estimated_start: Mapped[float | None] = mapped_column(Float, nullable=True)
    placement: Mapped[list[Any]] = mapped_column(JSON, default=list)  # [[node, gpus], ...]
    gpu_ids: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # node -> [ids]
    borrowed_gpus: Mapped[int] = mapped_column(Integer, default=0)
    start_time: Mapped[float | None] = mapped_column(Float, nullable=True)
    first_start: Mapped[float | None] = mapped_column(Float, nullable=True)
    end_time: Mapped[float | None] = mapped_column(Float, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    preemptions: Mapped[int] = mapped_column(Integer, default=0)
    attained_gpu_s: Mapped[float] = mapped_column(Float, default=0.0)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # the backend's id of the current attempt (Slurm job id, runner pid)
    external_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    hold_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    terminating_since: Mapped[float | None] = mapped_column(Float, nullable=True)
    term_sent_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    kill_sent: Mapped[bool] = mapped_column(Boolean, default=False)
    stop_reason: Mapped[str] = mapped_column(Text, default="")
    requeue: Mapped[bool] = mapped_column(Boolean, default=True)  # after terminating
    # idle detection (the state of policies.idle for this job, kept across restarts)
    idle_below_since: Mapped[float | None] = mapped_column(Float, nullable=True)
    idle_last_time: Mapped[float | None] = mapped_column(Float, nullable=True)
    idle_last_below: Mapped[bool] = mapped_column(Boolean, default=False)
    idle_warned_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    idle_gpu_s: Mapped[float] = mapped_column(Float, default=0.0)
    last_util_pct: Mapped[float | None] = mapped_column(Float, nullable=True)
    # the launch reservation the job runs in (``ReservationRow.name``), if any
    reservation: Mapped[str | None] = mapped_column(String(64), nullable=True)
    __table_args__ = (Index("ix_jobs_team_state", "team", "state"), NEVER_REUSED)


class ReservationRow(Base):
    """A launch reservation (``governance.reservations``): ``gpus`` GPUs of ``gpu_type``
    for ``team`` from ``start_time`` to ``end_time`` (Unix seconds). Status: pending (an
    admin must approve: ``impact`` says whose guarantees shrink), approved (the scheduler
    holds it), cancelled. Keyed by team name, so a reorganisation re-keys it."""

    __tablename__ = "reservations"
    __table_args__ = NEVER_REUSED
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    team: Mapped[str] = mapped_column(String(128))
    gpu_type: Mapped[str] = mapped_column(String(64))
    gpus: Mapped[int] = mapped_column(Integer)
    start_time: Mapped[float] = mapped_column(Float)
    end_time: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # pending | approved | cancelled
    requested_by: Mapped[str] = mapped_column(String(64))
    approved_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    impact: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class SampleRow(Base):
    """Utilisation pushed over HTTP for a job (one row per GPU per push)."""

    __tablename__ = "gpu_samples"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(Integer, index=True)
    time: Mapped[float] = mapped_column(Float)
    gpu: Mapped[int] = mapped_column(Integer)
    util_pct: Mapped[float] = mapped_column(Float)
    mem_used_mib: Mapped[float] = mapped_column(Float, default=0.0)
    consumed: Mapped[bool] = mapped_column(Boolean, default=False)


class UsageRow(Base):
    """GPU-seconds per team, GPU type and hour, integrated by the scheduler loop."""

    __tablename__ = "usage"
    team: Mapped[str] = mapped_column(String(128), primary_key=True)
    gpu_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    hour: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # Unix hour start
    used_gpu_s: Mapped[float] = mapped_column(Float, default=0.0)
    borrowed_gpu_s: Mapped[float] = mapped_column(Float, default=0.0)
    lent_gpu_s: Mapped[float] = mapped_column(Float, default=0.0)
    idle_gpu_s: Mapped[float] = mapped_column(Float, default=0.0)
    guaranteed_gpu_s: Mapped[float] = mapped_column(Float, default=0.0)
    preemptions: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class ClusterUsageRow(Base):
    """GPU-seconds per GPU type and hour, integrated by the scheduler loop: of GPUs up, of
    those in use, and of those idle while jobs of the type waited (the cluster page)."""

    __tablename__ = "cluster_usage"
    gpu_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    hour: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # Unix hour start
    up_gpu_s: Mapped[float] = mapped_column(Float, default=0.0)
    used_gpu_s: Mapped[float] = mapped_column(Float, default=0.0)
    idle_waiting_gpu_s: Mapped[float] = mapped_column(Float, default=0.0)


class DisputeRow(Base):
    __tablename__ = "disputes"
    __table_args__ = NEVER_REUSED
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team: Mapped[str] = mapped_column(String(128))
    filed_by: Mapped[str] = mapped_column(String(64))
    subject_kind: Mapped[str] = mapped_column(String(16))  # plan | preemption
    subject_id: Mapped[str] = mapped_column(String(64))
    wants: Mapped[str] = mapped_column(Text)
    why: Mapped[str] = mapped_column(Text)
    gpu_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    wanted_gpus: Mapped[int | None] = mapped_column(Integer, nullable=True)
    period: Mapped[str | None] = mapped_column(String(64), nullable=True)
    state: Mapped[str] = mapped_column(String(16))  # open | resolved
    assigned_to: Mapped[str | None] = mapped_column(String(128), nullable=True)  # None: admins
    level: Mapped[int] = mapped_column(Integer, default=0)
    escalate_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    decision: Mapped[str | None] = mapped_column(String(32), nullable=True)
    decision_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    resolved_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    resolved_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    quota_change: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    history: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_at: Mapped[float] = mapped_column(Float)


class AuditRow(Base):
    """One decision, chained to the one before (``storage/audit.py`` gives the formulas).
    ``scope`` says who may read it, decided when it is appended: ``org``, ``admin``,
    ``team:NAME`` or ``dispute:ID``."""

    __tablename__ = "audit"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    time: Mapped[float] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64), index=True)
    subject: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(200), index=True, server_default="admin")


class AuditHead(Base):
    """The chain's last entry (one row, id 1): appends lock it, so a deleted tail shows.
    ``keyed_from``: the first keyed entry; ``key_id`` names the key (an HMAC of it, not the
    key); ``chain_id`` marks this chain's lines in the head file."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
    keyed_from: Mapped[int | None] = mapped_column(Integer, nullable=True)
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    chain_id: Mapped[str | None] = mapped_column(String(32), nullable=True)


class Setting(Base):
    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Lease(Base):
    """Which scheduler process may act (one row per role); expires if it stops renewing."""

    __tablename__ = "leases"
    role: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[float] = mapped_column(Float)


class InboxRow(Base):
    """A change the scheduler loop has not seen yet, written in the same transaction as the
    change (a submission, a cancellation, a new inventory, org or quota): the loop keeps its
    state in memory and applies these as deltas, then deletes them."""

    __tablename__ = "scheduler_inbox"
    __table_args__ = {"sqlite_autoincrement": True}  # noqa: RUF012 (SQLAlchemy reads it)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # submit | cancel | reshape
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)


class NotificationRow(Base):
    """A notification to send (the transactional outbox): written in the same transaction
    as the decision it tells of, sent afterwards by ``service.notify.Notifier``."""

    __tablename__ = "notifications"
    __table_args__ = {"sqlite_autoincrement": True}  # noqa: RUF012 (SQLAlchemy reads it)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Float, index=True)
    claimed_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    claimed_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    delivered_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    gave_up_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")


class OrgVersionRow(Base):
    """One version of the org tree (``GET /v1/org/history``): the org file as applied, the
    changes against the version before (``governance.reorg``), and ``moves``: where the work
    and history of each old node went (old name -> new name; renames, merges, splits, forced
    removals), which the scheduler loop reads to re-key what it still holds in memory."""

    __tablename__ = "org_versions"
    __table_args__ = NEVER_REUSED
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[float] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(64))
    teams: Mapped[int] = mapped_column(Integer)
    org: Mapped[dict[str, Any]] = mapped_column(JSON)
    changes: Mapped[list[Any]] = mapped_column(JSON, default=list)
    moves: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
