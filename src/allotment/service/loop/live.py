"""The loop's in-memory world: one ``ClusterState`` kept between ticks and changed by
deltas (as the simulator keeps its own), plus what the loop mirrors of the active jobs.

It is built from the database once (at start, after a failover, or when the inventory, the
org tree or the quotas changed), together with the scheduler's persisted memory (decayed
usage, reservations), and after that only changed: by the loop's own decisions and by the
inbox (submissions and cancellations from the API). Any failure of a tick drops it, and the
next tick builds it again, so it can never drift from the database.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from allotment.domain.cluster import GpuType
from allotment.domain.jobstate import JobState
from allotment.domain.org import OrgTree
from allotment.domain.period import Period
from allotment.domain.workload import JobId
from allotment.scheduler import apply as path
from allotment.scheduler.ledger import make_ledger
from allotment.scheduler.policy import Policy
from allotment.scheduler.state import ClusterState, SchedulerMemory
from allotment.service.loop.rows import Run, idle_windows, job_id, workload
from allotment.storage import budgets, inbox, repo
from allotment.storage import jobs as jobrepo
from allotment.storage import reorg as reorg_rows
from allotment.storage import reservations as reservation_rows
from allotment.storage.models import JobRow

log = logging.getLogger("allotment.scheduler")
MEMORY_KEY = reorg_rows.MEMORY_KEY


@dataclass(slots=True)
class Live:
    state: ClusterState | None  # None: no inventory or no org tree (``blocked`` says why)
    names: list[str]  # node index -> node name
    index: dict[str, int]
    period: str  # the quota period in force when built ("default": the org file's)
    periods: tuple[str, ...] = ()  # periods with published quotas
    blocked: str | None = None
    runs: dict[int, Run] = field(default_factory=dict)  # active jobs
    held: dict[int, float] = field(default_factory=dict)  # pending, held back until
    unschedulable: dict[int, str] = field(default_factory=dict)  # pending, cannot run here now
    # last reason, estimated start written for each pending job (rows change only on change)
    explained: dict[int, tuple[str, float | None]] = field(default_factory=dict)
    estimated: set[int] = field(default_factory=set)  # jobs shown with an estimated start
    bucket_sig: dict[object, tuple[object, ...]] = field(default_factory=dict)  # see explain
    queue: dict[GpuType, list[JobId]] = field(default_factory=dict)  # the last cycle's order
    # cycles wanted: (time, job id or 0, attempt); a job's wake-up counts while that run goes
    wakes: list[tuple[float, int, int]] = field(default_factory=list)
    used_ids: dict[str, set[int]] = field(default_factory=dict)  # node -> GPU indices in use
    changed: bool = True  # something happened since the last cycle
    memory_saved: str = ""
    # why the backend will not start a job of (team, user) now (None: it will); the
    # backend's ``refusal`` hook with the org's team count, asked once per pair
    refusal: Callable[[str, str], str | None] = field(default=lambda team, user: None)
    refused: dict[tuple[str, str], str | None] = field(default_factory=dict)
    idle_windows: dict[str, float] = field(default_factory=dict)  # team -> its idle window
    signalled: set[int] = field(default_factory=set)  # runs sent SIGTERM/SIGKILL this tick
    org_version: int = 0  # the org version (``storage.reorg``) this state was built from

    def period_at(self, now: float) -> str:
        """The quota period in force at ``now`` (``repo.effective_period`` without a query:
        a publish rebuilds the state anyway)."""
        month = str(Period.of(now))
        return max((p for p in self.periods if p <= month), default="default")

    def budget_period(self, now: float) -> str:
        """The period budgets are counted over: the calendar month of ``now`` once plans
        are published (a month's budgets are its plan's, else the ``default`` ones), else
        ``default`` (the org file's, with no end: the simulator's whole trace)."""
        return "default" if self.period == "default" else str(Period.of(now))

    def org(self) -> OrgTree:
        assert self.state is not None
        return self.state.org

    def wake(self, t: float, job: int = 0, attempt: int = 0) -> None:
        heapq.heappush(self.wakes, (t, job, attempt))

    def wake_due(self, now: float) -> bool:
        """Pop the wake-ups due by ``now``; True if one of them still counts."""
        due = False
        while self.wakes and self.wakes[0][0] <= now:
            _, jid, attempt = heapq.heappop(self.wakes)
            run = self.runs.get(jid)
            if not jid or (run is not None and run.attempt == attempt):
                due = True
        return due

    def wake_counts(self, now: float) -> bool:
        """Whether a wake-up due by ``now`` still counts (``wake_due`` without popping)."""
        return any(t <= now and (not jid or (jid in self.runs
                                             and self.runs[jid].attempt == attempt))
                   for t, jid, attempt in self.wakes)

    def next_wake(self) -> float | None:
        return self.wakes[0][0] if self.wakes else None

    def take_ids(self, node: str, gpus: int, node_gpus: int) -> list[int]:
        taken = self.used_ids.setdefault(node, set())
        ids = [i for i in range(node_gpus) if i not in taken][:gpus]
        taken.update(ids)
        return ids

    def release_ids(self, gpu_ids: dict[str, list[int]]) -> None:
        for node, ids in gpu_ids.items():
            self.used_ids.get(node, set()).difference_update(ids)

    # -- pending jobs: one place decides where a pending row goes -------------------------
    def add_pending(self, j: JobRow | Any, now: float,
                    obs: path.Observer = path.NO_OBSERVER) -> None:
        """Queue a pending row (or a plain row of ``jobs.PENDING_COLUMNS``) in the state, or
        hold it back (with the reason)."""
        if j.hold_until is not None and j.hold_until > now:
            self.held[j.id] = j.hold_until
            self.wake(j.hold_until)
            return
        if self.state is None:
            self.unschedulable[j.id] = self.blocked or "the scheduler has no state"
            return
        w = workload(j)
        bad = self.state.unschedulable(w)
        if bad is not None:
            self.unschedulable[j.id] = bad[1]
            return
        key = (j.team, j.user)
        if key not in self.refused:
            self.refused[key] = self.refusal(j.team, j.user)
        if self.refused[key] is not None:
            self.unschedulable[j.id] = str(self.refused[key])
            return
        if w.id not in self.state.pending_index:
            path.submit(self.state, w, now, obs, j.attained_gpu_s)

    def forget_pending(self, jid: int) -> None:
        self.held.pop(jid, None)
        self.unschedulable.pop(jid, None)
        self.explained.pop(jid, None)
        if self.state is not None and job_id(jid) in self.state.pending_index:
            self.state.remove_pending(job_id(jid))


def load_memory(s: Session) -> SchedulerMemory:
    raw = repo.get_setting(s, MEMORY_KEY)
    if not raw:
        return SchedulerMemory()
    try:
        return SchedulerMemory.from_json(json.loads(raw))
    except (ValueError, TypeError, KeyError, AssertionError) as exc:
        log.error("scheduler memory in the database is unreadable (%s); starting afresh", exc)
        return SchedulerMemory()


def save_memory(s: Session, live: Live, now: float | None = None) -> None:
    """Persist what ``decide`` carries between cycles, when it changed; with ``now``, the
    budget and credit ledger as of ``now`` (``Ledger.at``). Stamped with the org version
    the state was built from: a state older than the stored stamp (a reorganisation
    committed since it was built, which re-keyed the stored memory) writes nothing: it is
    rebuilt from the database at its next inbox step."""
    if live.state is None:
        return
    memory = live.state.memory()
    ledger = live.state.ledger
    if now is not None and ledger.active:
        memory = dataclasses.replace(memory, ledger=ledger.at(live.state, now).to_json())
    raw = json.dumps(memory.to_json(), separators=(",", ":"))
    if raw != live.memory_saved:
        stamp = int(repo.get_setting(s, reorg_rows.MEMORY_VERSION_KEY) or 0)
        if stamp > live.org_version:
            return
        repo.set_setting(s, MEMORY_KEY, raw)
        if stamp != live.org_version:
            repo.set_setting(s, reorg_rows.MEMORY_VERSION_KEY, str(live.org_version))
        live.memory_saved = raw


def build(s: Session, now: float, policy: Policy, obs: path.Observer = path.NO_OBSERVER,
          previous: Live | None = None,
          refusal: Callable[[str, str, int], str | None] | None = None) -> Live:
    """The world from the database: nodes that are up, the org with the quotas in force,
    the active jobs as running ones (jobs on a node that went away are left out of the
    state: reconcile stops and requeues them), the pending jobs, and the persisted memory.
    The inbox is consumed up to this point (a note written meanwhile stays). The wake-ups
    of a ``previous`` state of this process carry over."""
    notes = inbox.read(s)
    cluster, names = repo.load_cluster(s)
    cfg = policy.config
    periods = tuple(sorted(repo.published_periods(s)))
    live = Live(None, names, {n: k for k, n in enumerate(names)}, "default", periods)
    live.org_version = reorg_rows.current_version(s)
    live.period = live.period_at(now)
    org = None
    if not cluster.nodes:
        live.blocked = "no inventory: an admin must set the nodes"
    else:
        try:
            # quotas are planned on the installed GPUs, down nodes included
            org = repo.load_org(s, now)
        except Exception as exc:  # an org that no longer fits the inventory
            log.error("org tree does not fit the inventory: %s", exc)
            live.blocked = f"the org tree does not fit the nodes up now: {exc}"
        if org is None and live.blocked is None:
            live.blocked = "no org tree: an admin must set it"
    if org is not None:
        live.state = ClusterState(cluster, org, pending_key=policy.pending_key,
                                  usage_half_life_s=cfg.usage_half_life_s)
        # the approved launch reservations (ended ones for a day), before any job naming
        # one is added and before the memory (the nodes chosen per launch) is restored
        live.state.set_launches(reservation_rows.launches(s, now))
        if refusal is not None:
            teams = len(org.team_ids)
            live.refusal = lambda team, user: refusal(team, user, teams)
    live.idle_windows = idle_windows(repo.org_rows(s))
    for j in jobrepo.active(s):
        run = Run.of(j, now)
        live.runs[j.id] = run
        for node, ids in run.gpu_ids.items():
            live.used_ids.setdefault(node, set()).update(ids)
        st = live.state
        if st is None or any(node not in live.index for node, _ in j.placement):
            continue
        w = workload(j)
        if w.reservation is not None and w.reservation not in st.launches:
            # its reservation was cancelled or ended long ago: it keeps running, as any job
            w = dataclasses.replace(w, reservation=None)
        if st.unschedulable(w) is not None:
            continue
        st.submit(w, j.attained_gpu_s)
        job = st.start(w.id, tuple((live.index[n], g) for n, g in j.placement),
                       run.start_time, cfg.checkpoint_s, j.borrowed_gpus)
        if j.state == JobState.TERMINATING:
            st.mark_terminating(w.id, j.terminating_since or now)
        else:
            wake = policy.start_wakeup(job)
            if wake is not None and wake > now:
                live.wake(wake, j.id, j.attempts)
    for j in jobrepo.pending_brief(s):
        live.add_pending(j, now, obs)
    if live.state is not None:
        # the budgets of the period (the plan's month, or the org file's), set once the
        # active jobs are back, so that re-adding them counts nothing
        period = live.budget_period(now)
        ledger = live.state.ledger = make_ledger(
            cfg.credit_half_life_s, cfg.credit_cap, budgets.of_period(s, period), period)
        memory = load_memory(s)
        live.state.restore(memory)
        if ledger.budget_gpu_s and memory.ledger.get("period") != period:
            # a period this scheduler has not counted yet: what was used in it so far
            ledger.used_gpu_s = {k: v for k, v in budgets.used_in(s, period, now).items()
                                 if k in ledger.budget_gpu_s}
            ledger.over_since = {k: now for k, v in ledger.used_gpu_s.items()
                                 if v >= ledger.budget_gpu_s[k]}
            ledger.time = None
        if ledger.time is None:
            ledger.time = now
    if previous is not None:
        for t, jid, attempt in previous.wakes:
            if not jid or (jid in live.runs and live.runs[jid].attempt == attempt):
                live.wake(t, jid, attempt)
    inbox.consume(s, notes)
    return live


__all__ = ["Live", "build", "job_id", "load_memory", "save_memory"]
