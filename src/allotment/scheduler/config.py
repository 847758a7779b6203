"""One set of scheduler settings and defaults, shared by ``allot simulate``, the service
(``allot up``, ``serve``, ``scheduler``) and the tests.

Every knob that changes what ``decide`` does lives here, so the simulator and the live loop
cannot drift apart. Service-only knobs (tick length, idle rule, lease) sit in
``service.loop.LoopConfig``, which holds one of these.

Defaults:
    policy               fairshare
    grace_s              60      s between a preemption notice (SIGTERM) and the kill
    min_runtime_s        300     s a job runs before it may be preempted
    checkpoint_s         1800    s between a job's checkpoints, assumed when it reports none
                                 (a preempted job loses the work since its last checkpoint;
                                 the simulator's jobs checkpoint exactly at this interval)
    backfill             on      later jobs may use GPUs not held for a blocked gang
    reserve_after_s      3600    s a gang beyond its guarantee waits before GPUs are held for it
    las_threshold_gpu_s  3600    GPU-s of attained service that demote a job to LAS queue 2
    las_preemption       none    fairshare: queue-2 jobs a queue-1 job may preempt
    usage_half_life_s    604800  s (7 days): half-life of the decayed usage D of fair share
    credit_half_life_s   None    s: half-life of the credit for lending (None: no credit;
                                 ``scheduler.ledger``, ``policies.incentives``)
    credit_cap           1.0     credit is capped at this many x the team's guarantee x the
                                 credit half-life (GPU-seconds)
    reservation_lead_s   600     s before a launch reservation's preemptions (start - grace)
                                 at which its nodes are chosen and held (``scheduler.launch``)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from allotment.errors import InputError


class LasPreemption(StrEnum):
    """Which queue-2 (long so far) jobs a waiting queue-1 job may preempt under fairshare."""

    NONE = "none"  # none: LAS order only inside a team's queue
    TEAM = "team"  # its own team's
    SURPLUS = "surplus"  # also other teams' jobs on borrowed GPUs

    @classmethod
    def parse(cls, value: str, field: str = "las_preemption") -> LasPreemption:
        try:
            return cls(value)
        except ValueError:
            raise InputError(field, f"must be none, team or surplus, got {value!r}") from None


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """What a scheduling cycle needs to know beside the state (see the module docstring)."""

    policy: str = "fairshare"
    grace_s: float = 60.0
    min_runtime_s: float = 300.0
    checkpoint_s: float | None = 1800.0
    backfill: bool = True
    reserve_after_s: float = 3600.0
    las_threshold_gpu_s: float = 3600.0
    las_preemption: LasPreemption = LasPreemption.NONE
    usage_half_life_s: float = 7 * 24 * 3600.0
    credit_half_life_s: float | None = None
    credit_cap: float = 1.0
    reservation_lead_s: float = 600.0

    def __post_init__(self) -> None:
        for name in ("grace_s", "min_runtime_s", "reserve_after_s", "las_threshold_gpu_s",
                     "reservation_lead_s"):
            value = getattr(self, name)
            if not (value >= 0 and value < float("inf")):
                raise InputError(name, f"must be a finite number >= 0, got {value!r}")
        if self.checkpoint_s is not None and not (0 < self.checkpoint_s < float("inf")):
            raise InputError("checkpoint_s", f"must be > 0, got {self.checkpoint_s!r}")
        if not (0 < self.usage_half_life_s < float("inf")):
            raise InputError("usage_half_life_s", f"must be > 0, got {self.usage_half_life_s!r}")
        if self.credit_half_life_s is not None and not (
                0 < self.credit_half_life_s < float("inf")):
            raise InputError("credit_half_life_s",
                             f"must be > 0, got {self.credit_half_life_s!r}")
        if not (0 <= self.credit_cap < float("inf")):
            raise InputError("credit_cap", f"must be a finite number >= 0, got "
                             f"{self.credit_cap!r}")
        if not isinstance(self.las_preemption, LasPreemption):
            object.__setattr__(self, "las_preemption", LasPreemption.parse(
                str(self.las_preemption)))


DEFAULTS = SchedulerConfig()
