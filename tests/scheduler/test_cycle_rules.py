"""One table of single-cycle cases for ``decide()``: each rule of the cycle and of
preemption, on a hand-built state, with the exact admissions, preemptions and wake-up
wanted (Kueue's ``preemption_test.go`` habit)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from allotment.domain.org import OrgNode
from allotment.domain.workload import JobId
from allotment.policies import make_policy
from allotment.scheduler import apply as path
from allotment.scheduler.config import DEFAULTS, LasPreemption, SchedulerConfig
from allotment.scheduler.cycle import decide
from allotment.scheduler.decisions import Admit, Decisions, Preempt
from allotment.scheduler.state import ClusterState, SchedulerMemory
from tests.builders import cluster, job, org, team

TWO = [team("a", 8), team("b", 8)]
FOUR = [team("a", 8), team("b", 24)]


@dataclass(frozen=True)
class Run:
    """A running job: ``(node, gpus)`` placement, start, borrowed GPUs at admission."""

    id: str
    team: str
    gpus: int
    node: int
    start: float
    borrowed: int = 0
    terminating_since: float | None = None
    attained: float = 0.0


@dataclass(frozen=True)
class Wait:
    id: str
    team: str
    gpus: int
    submit: float = 0.0
    attained: float = 0.0


@dataclass(frozen=True)
class Case:
    name: str
    teams: list[OrgNode]
    gpus: int
    running: list[Run]
    pending: list[Wait]
    now: float
    admits: list[tuple[str, tuple[tuple[int, int], ...]]] = field(default_factory=list)
    preempts: list[tuple[str, str]] = field(default_factory=list)
    wake_at: float | None = None
    config: SchedulerConfig = DEFAULTS


def build(teams: list[OrgNode], gpus: int, running: list[Run], pending: list[Wait],
          config: SchedulerConfig) -> tuple[ClusterState, object]:
    policy = make_policy("fairshare", config)
    state = ClusterState(cluster(gpus), org(teams, gpus), pending_key=policy.pending_key)
    for k, r in enumerate(running):
        w = job(r.id, r.team, r.gpus, r.start, 10_000.0, seq=k)
        state.submit(w, r.attained)
        state.start(w.id, ((r.node, r.gpus),), r.start, config.checkpoint_s, r.borrowed)
        if r.terminating_since is not None:
            state.mark_terminating(w.id, r.terminating_since)
    for k, p in enumerate(pending):
        state.submit(job(p.id, p.team, p.gpus, p.submit, 100.0, seq=100 + k), p.attained)
    return state, policy


CASES = [
    Case("borrowed GPUs are reclaimed first: b's guaranteed job preempts a's borrowed gang, "
         "never a's guaranteed one",
         TWO, 16, [Run("a-own", "a", 8, 0, 0.0), Run("a-borrowed", "a", 8, 1, 0.0, borrowed=8)],
         [Wait("b1", "b", 8, 900.0)], 1000.0, preempts=[("a-borrowed", "b1")]),
    Case("cheapest lost work: of two borrowed gangs, the one checkpointed most recently goes",
         FOUR, 32, [Run("b-own", "b", 8, 3, 0.0),
                    Run("a-own", "a", 8, 0, 0.0),
                    Run("a-ckpt", "a", 8, 1, 0.0, borrowed=8),  # checkpoint at 1800: loses 200 s
                    Run("a-new", "a", 8, 2, 1000.0, borrowed=8)],  # no checkpoint: loses 1000 s
         [Wait("b1", "b", 8, 1990.0)], 2000.0, preempts=[("a-ckpt", "b1")]),
    Case("minimum runtime honoured: jobs younger than min_runtime_s are kept, and the cycle "
         "asks to be woken when the first becomes a victim",
         TWO, 16, [Run("a-own", "a", 8, 0, 950.0), Run("a-borrowed", "a", 8, 1, 900.0, borrowed=8)],
         [Wait("b1", "b", 8, 950.0)], 1000.0, wake_at=900.0 + 300.0),
    Case("GPUs already being released are counted: a terminating borrower's GPUs are claimed, "
         "no second victim is preempted",
         FOUR, 32, [Run("b-own", "b", 8, 3, 0.0), Run("a-own", "a", 8, 0, 0.0),
                    Run("a-going", "a", 8, 1, 0.0, borrowed=8, terminating_since=990.0),
                    Run("a-other", "a", 8, 2, 0.0, borrowed=8)],
         [Wait("b1", "b", 8, 990.0)], 1000.0),
    Case("victims never take a team below its guarantee: once one of b's two borrowers is "
         "chosen, b keeps only its guarantee, so the second victim is c's borrower",
         [team("a", 6), team("b", 2), team("c", 0)], 8,
         [Run("b-own", "b", 1, 0, 0.0), Run("b-lent1", "b", 1, 0, 0.0, borrowed=1),
          Run("b-lent2", "b", 1, 0, 0.0, borrowed=1), Run("c-lent", "c", 1, 0, 0.0, borrowed=1)],
         [Wait(f"a{k}", "a", 1, 990.0) for k in range(6)], 1000.0,
         admits=[(f"a{k}", ((0, 1),)) for k in range(4)],
         preempts=[("b-lent1", "a4"), ("c-lent", "a5")]),
    Case("a job within its guarantee starts on free GPUs before any borrower is considered",
         TWO, 16, [Run("a-own", "a", 4, 0, 0.0)],
         [Wait("a-borrow", "a", 8, 10.0), Wait("b1", "b", 4, 20.0)], 100.0,
         admits=[("b1", ((0, 4),)), ("a-borrow", ((1, 8),))]),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name.split(":")[0] for c in CASES])
def test_one_cycle(case: Case) -> None:
    """The cycle makes exactly the admissions, preemptions and wake-up of the rule."""
    state, policy = build(case.teams, case.gpus, case.running, case.pending, case.config)
    d = decide(state, policy, case.now)  # type: ignore[arg-type]
    assert [(a.job_id, a.placement) for a in d.admits] == case.admits
    assert [(p.job_id, p.for_job) for p in d.preempts] == case.preempts
    assert d.wake_at == case.wake_at


class _Sink:
    def reject(self, job_id: JobId, reason: str, now: float) -> bool:
        return True

    def preempt(self, p: Preempt, now: float) -> bool:
        return True

    def admit(self, a: Admit, now: float) -> bool:
        return True

    def wake(self, t: float, job: object = None) -> None:
        pass


def test_no_preemption_loop() -> None:
    """After b takes back its guarantee from a's borrower, the requeued borrower waits:
    later cycles never preempt b's job for it, however long it waits."""
    cfg = SchedulerConfig(min_runtime_s=0.0)
    state, policy = build(TWO, 16, [Run("a-own", "a", 8, 0, 0.0),
                                    Run("a-borrowed", "a", 8, 1, 0.0, borrowed=8)],
                          [Wait("b1", "b", 8, 100.0)], cfg)
    d = decide(state, policy, 100.0)  # type: ignore[arg-type]
    assert [(p.job_id, p.for_job) for p in d.preempts] == [("a-borrowed", "b1")]
    path.apply(d, state, policy, _Sink(), 100.0)  # type: ignore[arg-type]
    path.requeue(state, JobId("a-borrowed"), 160.0)
    d = decide(state, policy, 160.0)  # type: ignore[arg-type]
    assert [a.job_id for a in d.admits] == ["b1"]
    path.apply(d, state, policy, _Sink(), 160.0)  # type: ignore[arg-type]
    for now in (200.0, 5_000.0, 500_000.0):
        d = decide(state, policy, now)  # type: ignore[arg-type]
        assert d.preempts == [] and d.admits == []
        assert "a-borrowed" in d.waiting


def test_a_victim_without_grace_sits_out_its_instant() -> None:
    """With no grace period a victim stops at the instant it is told and is requeued
    then: it does not start again in that instant's cycles (the job it made room for goes
    first), and the cycle asks for the next instant, where it competes as usual. Here b
    takes back its guarantee from a's two borrowers on node 1; the 4 GPUs free on node 2
    could take one of them at once, but only at the next instant do they."""
    cfg = SchedulerConfig(min_runtime_s=0.0, grace_s=0.0)
    teams = [team("a", 8), team("b", 8), team("c", 8)]
    state, policy = build(teams, 24, [Run("a-own", "a", 8, 0, 0.0),
                                      Run("a-borrowed", "a", 4, 1, 0.0, borrowed=4),
                                      Run("a-other", "a", 4, 1, 0.0, borrowed=4),
                                      Run("c-own", "c", 4, 2, 0.0)],
                          [Wait("b1", "b", 8, 100.0)], cfg)
    d = decide(state, policy, 100.0)  # type: ignore[arg-type]
    assert sorted(p.job_id for p in d.preempts) == ["a-borrowed", "a-other"]
    path.apply(d, state, policy, _Sink(), 100.0)  # type: ignore[arg-type]
    for victim in ("a-borrowed", "a-other"):  # no grace: gone at once
        path.requeue(state, JobId(victim), 100.0)
    d = decide(state, policy, 100.0)  # type: ignore[arg-type]
    assert [(a.job_id, a.placement) for a in d.admits] == [("b1", ((1, 8),))]
    assert "no grace period" in d.waiting[JobId("a-borrowed")]
    assert d.wake_at is not None and 100.0 < d.wake_at < 100.001
    path.apply(d, state, policy, _Sink(), 100.0)  # type: ignore[arg-type]
    later = decide(state, policy, d.wake_at)  # type: ignore[arg-type]
    assert [(a.job_id, a.placement) for a in later.admits] == [("a-borrowed", ((2, 4),))]
    assert later.preempts == []


def test_reservation_kept_across_cycles() -> None:
    """A blocked gang keeps the domain it reserved in the last cycle while that domain can
    still hold it, even when another domain now has more free GPUs."""
    cfg = SchedulerConfig(min_runtime_s=0.0, reserve_after_s=0.0)
    teams = [team("a", 48)]  # 6 nodes of 8: racks {0,1} {2,3} {4,5}
    running = [Run("r0", "a", 4, 0, 0.0), Run("r1", "a", 5, 1, 0.0), Run("r2", "a", 8, 2, 0.0),
               Run("r3", "a", 5, 3, 0.0), Run("r4", "a", 8, 4, 0.0), Run("r5", "a", 8, 5, 0.0)]
    gang = [Wait("gang", "a", 16, 10.0)]
    state, policy = build(teams, 48, running, gang, cfg)
    d = decide(state, policy, 10.0)  # type: ignore[arg-type]
    assert [r.domain for r in d.reservations if r.job_id == "gang"] == [("rack", 0)]  # 7 free
    path.apply(d, state, policy, _Sink(), 10.0)  # type: ignore[arg-type]
    path.finish(state, JobId("r3"), 20.0)  # rack 1 now has 8 free, more than rack 0's 7
    d = decide(state, policy, 20.0)  # type: ignore[arg-type]
    assert [r.domain for r in d.reservations if r.job_id == "gang"] == [("rack", 0)]
    fresh, _ = build(teams, 48, [r for r in running if r.id != "r3"], gang, cfg)
    d = decide(fresh, policy, 20.0)  # type: ignore[arg-type]
    assert [r.domain for r in d.reservations if r.job_id == "gang"] == [("rack", 1)]


def test_fair_share_memory_survives_a_restart() -> None:
    """A scheduler rebuilt from its jobs plus its persisted memory orders borrowers as the
    one that ran all along; one rebuilt without the memory does not."""
    cfg = SchedulerConfig(min_runtime_s=0.0, las_preemption=LasPreemption.NONE)
    teams = [team("a", 4), team("b", 4), team("c", 8)]
    state, policy = build(teams, 16, [], [], cfg)
    # a borrowed 12 GPUs for a day; b nothing
    a_run = job("a-day", "a", 12, 0.0, 86_400.0, seq=0)
    state.submit(a_run)
    state.start(a_run.id, ((0, 8), (1, 4)), 0.0)
    path.finish(state, a_run.id, 86_400.0)
    memory = SchedulerMemory.from_json(state.memory().to_json())
    waits = [Wait("a2", "a", 8, 86_400.0), Wait("b2", "b", 8, 86_400.0)]
    now = 86_500.0

    def first_borrower(st: ClusterState) -> str:
        d: Decisions = decide(st, policy, now)  # type: ignore[arg-type]
        borrowers = [a.job_id for a in d.admits if a.borrowed_gpus]
        return borrowers[0]

    for w in waits:
        state.submit(job(w.id, w.team, w.gpus, w.submit, 100.0, seq=200))
    restored, _ = build(teams, 16, [], waits, cfg)
    restored.restore(memory)
    forgetful, _ = build(teams, 16, [], waits, cfg)
    # a single free block of 8 (the other 8 held by c): b, which used nothing, borrows first
    for st in (state, restored, forgetful):
        blocker = job("c-own", "c", 8, 0.0, 10**6, seq=300)
        st.submit(blocker)
        st.start(blocker.id, ((1, 8),), 86_400.0)
    assert first_borrower(state) == "b2"
    assert first_borrower(restored) == "b2"
    assert memory.decayed["a"][0] > 0
    assert first_borrower(forgetful) == "a2"  # without memory: name order decides
