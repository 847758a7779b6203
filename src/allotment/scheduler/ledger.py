"""GPU-hour budgets per period and credit for lending: what a team used against its budget,
and what it earned by lending its idle guarantee. Both are integrated from the
``ClusterState`` itself (GPUs held per team, pending work), so the simulator and the live
loop count them the same way; both are part of the scheduler's memory
(``SchedulerMemory.ledger``), keyed by team name, so a restart keeps them and a
reorganisation can re-key them.

The state is constant between two changes, and every change calls ``advance(state, now)``
first (``ClusterState._account`` and the apply path), so the integrals below are exact.
Queries at a later instant (``used_at``, ``credit_at``) extrapolate with the state as it
is, without changing anything: ``decide`` stays pure.

Budgets. For team T and GPU type k with budget B_Tk (GPU-seconds) in the period:
    U_Tk(t) = integral from the period's start to t of u_Tk dt   (u: GPUs T holds of type k)
    T is over budget for k at t iff U_Tk(t) >= B_Tk; ``over_since`` is the first such t.
Past its budget a team is never killed and its running jobs are never preempted for it:
its new work of that type is ordered after every team within budget and only borrows (see
``policies.incentives``).

Credit. For team T (all GPU types), with half-life H_c and cap multiple m:
    r_T = sum over k of [T has no pending work of type k] x I_Tk x min(1, O_k / I_k)
          I_Tk = max(0, G_Tk - u_Tk): T's unused guarantee;  I_k = sum over teams of I_Tk
          O_k = sum over teams of max(0, u_Tk - G_Tk): GPUs borrowed beyond guarantees
      (lent GPUs: borrowed GPU-time attributed pro rata to unused guarantees, the rule of
       the service's accounting, counted only while T had no work for them)
    C_T(t) = min(cap_T, C_T(t0) x f + r_T x (H_c / ln 2) x (1 - f)),  f = 2^(-(t - t0) / H_c)
    cap_T  = m x E_T x H_c       (E_T: T's guaranteed GPUs over all types)
C_T is in GPU-seconds, in [0, cap_T]. C_T / H_c is in GPUs: lending r GPUs for a long time
gives C_T / H_c -> 1.44 r (1 / ln 2), at most m x E_T. A team that kept its guarantee
busy with its own jobs (needless or not) lends nothing and earns nothing. The cap is
applied at each integration step (the curve is exact between steps while under the cap).
How credit enters the fair-share value: ``policies.incentives.credited_value``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from allotment.domain.cluster import GpuType

if TYPE_CHECKING:
    from allotment.scheduler.state import ClusterState

BudgetKey = tuple[str, GpuType]  # (team, GPU type)
WARN_AT = (80, 100)  # percent of a budget at which a warning is sent, once each


@dataclass(slots=True)
class Ledger:
    """Budgets and credits of one scheduler (see the module docstring)."""

    budget_gpu_s: dict[BudgetKey, float] = field(default_factory=dict)
    period: str = "default"  # the budgets' period: used GPU-seconds restart with a new one
    credit_half_life_s: float | None = None  # None: no credit
    credit_cap: float = 1.0  # m
    used_gpu_s: dict[BudgetKey, float] = field(default_factory=dict)
    over_since: dict[BudgetKey, float] = field(default_factory=dict)
    warned: dict[BudgetKey, int] = field(default_factory=dict)  # highest WARN_AT sent
    credit_gpu_s: dict[str, float] = field(default_factory=dict)
    time: float | None = None  # everything above is integrated up to here
    # r_T, valid from ``time`` on, for the state's shape then (time, running, pending)
    _rates: tuple[tuple[float, int, int], dict[str, float]] | None = None

    @property
    def active(self) -> bool:
        return bool(self.budget_gpu_s) or self.credit_half_life_s is not None

    # -- integration ----------------------------------------------------------------------
    def advance(self, state: ClusterState, now: float) -> None:
        """Integrate up to ``now`` with the state as it was since ``time`` (call before
        every change of the state)."""
        if not self.active:
            return
        t0 = self.time
        if t0 is None or now <= t0:
            if t0 is None:
                self.time = now
            return
        dt = now - t0
        org = state.org
        for key, budget in self.budget_gpu_s.items():
            i = org.index.get(key[0])
            usage = state.usage.get(key[1])
            if i is None or usage is None:
                continue
            used = self.used_gpu_s.get(key, 0.0)
            gain = usage[i] * dt
            if key not in self.over_since and used + gain >= budget:
                # when U reached B (a budget of 0, or one reached before: at t0)
                self.over_since[key] = t0 + max(0.0, budget - used) / usage[i] if (
                    usage[i] and budget > used) else t0
            self.used_gpu_s[key] = used + gain
        if self.credit_half_life_s is not None:
            rates = self.rates(state)
            for team in set(rates) | set(self.credit_gpu_s):
                value = self._credit_after(state, team, rates.get(team, 0.0), dt)
                if value > 0:
                    self.credit_gpu_s[team] = value
                else:
                    self.credit_gpu_s.pop(team, None)
        self.time = now
        self._rates = None

    def rates(self, state: ClusterState) -> dict[str, float]:
        """r_T for every team lending now (cached until the next ``advance``)."""
        t = (self.time if self.time is not None else 0.0, len(state.running),
             state.num_pending)
        if self._rates is not None and self._rates[0] == t:
            return self._rates[1]
        org = state.org
        out: dict[str, float] = {}
        for gpu_type, usage in state.usage.items():
            g = org.guaranteed[gpu_type]
            pending = state.pending_gpus[gpu_type]
            idle_total = 0
            borrowed = 0
            idle: list[tuple[int, int]] = []
            for i in range(1, len(org.names)):
                if not org.is_team[i]:
                    continue
                unused = g[i] - usage[i]
                if unused > 0:
                    idle_total += unused
                    if not pending[i]:
                        idle.append((i, unused))
                elif unused < 0:
                    borrowed -= unused
            if not borrowed or not idle:
                continue
            share = min(1.0, borrowed / idle_total)
            for i, unused in idle:
                name = org.names[i]
                out[name] = out.get(name, 0.0) + unused * share
        self._rates = (t, out)
        return out

    def _credit_after(self, state: ClusterState, team: str, rate: float, dt: float) -> float:
        h = self.credit_half_life_s
        assert h is not None
        f = math.exp2(-dt / h)
        value = self.credit_gpu_s.get(team, 0.0) * f + rate * (h / math.log(2)) * (1.0 - f)
        return min(value, self.cap_gpu_s(state, team))

    def cap_gpu_s(self, state: ClusterState, team: str) -> float:
        i = state.org.index.get(team)
        h = self.credit_half_life_s
        if i is None or h is None:
            return 0.0
        return self.credit_cap * state.org.total_guaranteed[i] * h

    # -- queries (pure) -------------------------------------------------------------------
    def used_at(self, state: ClusterState, key: BudgetKey, now: float) -> float:
        """U_Tk(now) in GPU-seconds."""
        used = self.used_gpu_s.get(key, 0.0)
        if self.time is None or now <= self.time:
            return used
        i = state.org.index.get(key[0])
        usage = state.usage.get(key[1])
        if i is None or usage is None:
            return used
        return used + usage[i] * (now - self.time)

    def over_budget(self, state: ClusterState, team: str, gpu_type: GpuType,
                    now: float) -> bool:
        budget = self.budget_gpu_s.get((team, gpu_type))
        return budget is not None and self.used_at(state, (team, gpu_type), now) >= budget

    def credit_at(self, state: ClusterState, team: str, now: float) -> float:
        """C_T(now) in GPU-seconds."""
        if self.credit_half_life_s is None:
            return 0.0
        if self.time is None or now <= self.time:
            return self.credit_gpu_s.get(team, 0.0)
        rate = self.rates(state).get(team, 0.0)
        return self._credit_after(state, team, rate, now - self.time)

    def due_warnings(self, state: ClusterState, now: float) -> list[tuple[BudgetKey, int]]:
        """(team, type) and the highest threshold of ``WARN_AT`` passed and not yet sent."""
        out = []
        for key, budget in sorted(self.budget_gpu_s.items()):
            used = self.used_at(state, key, now)
            passed = max((p for p in WARN_AT if budget <= 0 or used >= budget * p / 100),
                         default=0)
            if passed > self.warned.get(key, 0):
                out.append((key, passed))
        return out

    # -- persistence ----------------------------------------------------------------------
    def at(self, state: ClusterState, now: float) -> Ledger:
        """A copy integrated up to ``now`` (this ledger is left as it is): what to save.
        Integrating in two steps gives the same values as in one (the cap included: with
        a constant rate the curve moves monotonically towards its limit)."""
        copy = Ledger(self.budget_gpu_s, self.period, self.credit_half_life_s,
                      self.credit_cap, dict(self.used_gpu_s), dict(self.over_since),
                      dict(self.warned), dict(self.credit_gpu_s), self.time)
        copy.advance(state, now)
        return copy

    def to_json(self) -> dict[str, object]:
        def keyed(d: dict[BudgetKey, float] | dict[BudgetKey, int]) -> list[list[object]]:
            return [[team, str(t), v] for (team, t), v in sorted(d.items())]

        return {"period": self.period, "time": self.time,
                "used": keyed(self.used_gpu_s), "over_since": keyed(self.over_since),
                "warned": keyed(self.warned),
                "credit": {k: v for k, v in sorted(self.credit_gpu_s.items())}}

    def restore(self, raw: dict[str, object], known: set[str]) -> None:
        """Take back a persisted ledger: credits of the teams in ``known``; used GPU-hours,
        crossings and warnings only when it was of this ledger's period."""
        t = raw.get("time")
        if not isinstance(t, int | float):
            return
        self.time = float(t)
        self._rates = None
        credit = raw.get("credit") or {}
        assert isinstance(credit, dict)
        self.credit_gpu_s = {str(k): float(v) for k, v in credit.items() if k in known}
        if raw.get("period") != self.period:
            self.used_gpu_s, self.over_since, self.warned = {}, {}, {}
            return

        def rows(name: str) -> list[tuple[BudgetKey, float]]:
            got = raw.get(name) or []
            assert isinstance(got, list)
            return [((str(a), GpuType(str(b))), float(c)) for a, b, c in got if a in known]

        self.used_gpu_s = dict(rows("used"))
        self.over_since = dict(rows("over_since"))
        self.warned = {k: int(v) for k, v in rows("warned")}


def make_ledger(credit_half_life_s: float | None, credit_cap: float,
                budgets_gpu_hours: dict[BudgetKey, float] | None = None,
                period: str = "default") -> Ledger:
    """A fresh ledger: the scheduler config's credit settings and the period's budgets
    (GPU-hours per team and GPU type)."""
    return Ledger({k: v * 3600.0 for k, v in (budgets_gpu_hours or {}).items()}, period,
                  credit_half_life_s, credit_cap)
