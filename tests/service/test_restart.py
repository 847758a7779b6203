"""A scheduler that crashes and is started again (or another that takes over) continues
with the same memory: fair-share order from the decayed usage it had, and the domains its
waiting gangs had reserved. Each scenario runs three ways: without a crash, with a crash
and a restart, and with a restart that lost the memory; the first two must decide the same,
the third shows that the memory is what made the difference."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete

from allotment.backends.fake import FakeBackend
from allotment.scheduler.config import SchedulerConfig
from allotment.service.loop import LoopConfig, SchedulerLoop
from allotment.service.loop.live import MEMORY_KEY
from allotment.storage import repo
from allotment.storage.models import Setting
from tests.service.conftest import World

DAY = 86_400.0


def _loop(w: World, fb: FakeBackend, **sched: Any) -> SchedulerLoop:
    cfg = SchedulerConfig(**{"grace_s": 30.0, "min_runtime_s": 0.0, **sched})
    return SchedulerLoop(w.db, fb, LoopConfig(scheduler=cfg, lease_ttl_s=10.0), clock=w.clock)


def _crash(w: World, fb: FakeBackend, old: SchedulerLoop, forget: bool,
           **sched: Any) -> SchedulerLoop:
    """The old process dies (no release, no flush); once its lease has run out a new one
    starts on the same database and backend. ``forget``: its memory row is lost too."""
    del old
    if forget:
        with w.db.session() as s:
            s.execute(delete(Setting).where(Setting.key == MEMORY_KEY))
    w.clock.advance(11.0)  # the lease (10 s) has expired
    return _loop(w, fb, **sched)


def _state(w: World, job: int) -> dict[str, Any]:
    return dict(w.call("admin", "GET", f"/v1/jobs/{job}").json())


def _fair_share_scenario(w: World, crash: str | None) -> str:
    """a borrows 12 GPUs for a day; then a and b (both 4 guaranteed) each want 8 more while
    c holds its 8: one 8-GPU block is free. Returns the team that gets it."""
    with w.db.session() as s:
        repo.set_org(s, {"org": [{"name": "a", "guaranteed": {"a100": 4}},
                                 {"name": "b", "guaranteed": {"a100": 4}},
                                 {"name": "c", "guaranteed": {"a100": 8}}]}, "test", w.clock())
        repo.create_user(s, "ua", "member", "a", w.clock())
    fb = FakeBackend()
    loop = _loop(w, fb)
    day = w.submit("admin", team="a", gpus=12)["id"]
    loop.tick()
    w.clock.advance(DAY)
    fb.finish(day, 0)
    loop.tick()
    hold = w.submit("admin", team="c", gpus=8)["id"]
    loop.tick()
    assert _state(w, hold)["state"] == "running"
    w.clock.advance(60.0)
    if crash is not None:
        loop = _crash(w, fb, loop, forget=crash == "forget")
    ja = w.submit("admin", team="a", gpus=8)["id"]
    jb = w.submit("admin", team="b", gpus=8)["id"]
    admitted = loop.tick().admitted
    assert len(admitted) == 1, admitted
    return {ja: "a", jb: "b"}[admitted[0]]


def test_fair_share_memory_survives_a_crash(world: World) -> None:
    """b, which used nothing, borrows before a, which borrowed 12 GPUs all day: with or
    without a crash in between. A restart that lost the memory would pick a (the tie
    between two teams that hold nothing now goes by name)."""
    assert _fair_share_scenario(world, None) == "b"


def test_fair_share_memory_survives_a_crash_restarted(world: World) -> None:
    """The same after a kill and a restart of the scheduler."""
    assert _fair_share_scenario(world, "restart") == "b"


def test_without_the_memory_the_order_is_lost(world: World) -> None:
    """The control: the restarted scheduler without its memory row decides otherwise."""
    assert _fair_share_scenario(world, "forget") == "a"


def _reservation_scenario(w: World, crash: str | None) -> str:
    """Six nodes of 8 (racks {n1,n2} {n3,n4} {n5,n6}); a holds all 48 GPUs guaranteed and
    runs 4 on n1 and 5 on n2; b (no guarantee) borrows the rest but 3 on n4. a's 16-GPU
    gang waits (b's borrowers are too young to preempt) and reserves rack 0, which has the
    most free GPUs (7; rack 1 has 3). Then b's job on n4 ends: rack 1 has 8 free, more than
    rack 0. A 3-GPU borrower of b then backfills outside the held rack: returns its node."""
    nodes = [{"name": f"n{k + 1}", "gpu_type": "a100", "gpus": 8, "rack": k // 2}
             for k in range(6)]
    assert w.call("admin", "PUT", "/v1/inventory", json={"nodes": nodes}).status_code == 200
    with w.db.session() as s:
        repo.set_org(s, {"org": [{"name": "a", "guaranteed": {"a100": 48}}, {"name": "b"}]},
                     "test", w.clock())
    fb = FakeBackend()
    sched = {"min_runtime_s": 1e7}
    loop = _loop(w, fb, **sched)
    jobs = []
    for team, g in (("a", 4), ("a", 5), ("b", 8), ("b", 5), ("b", 8), ("b", 8)):
        jobs.append(w.submit("admin", team=team, gpus=g)["id"])
        loop.tick()
    assert [_state(w, j)["placement"][0][0] for j in jobs] == [f"n{k + 1}" for k in range(6)]
    w.clock.advance(10.0)
    gang = w.submit("admin", team="a", gpus=16)["id"]
    loop.tick()
    assert _state(w, gang)["state"] == "pending"
    w.clock.advance(10.0)
    if crash is not None:
        loop = _crash(w, fb, loop, forget=crash == "forget", **sched)
    fb.finish(jobs[3], 0)  # n4 frees 5: rack 1 now has 8 free, rack 0 has 7
    loop.tick()
    w.clock.advance(10.0)
    small = w.submit("admin", team="b", gpus=3)["id"]
    loop.tick()
    assert _state(w, gang)["state"] == "pending"
    return str(_state(w, small)["placement"][0][0])


def test_reservation_survives_a_crash(world: World) -> None:
    """The gang keeps the rack it reserved (rack 0): the borrower backfills on n4."""
    assert _reservation_scenario(world, None) == "n4"


def test_reservation_survives_a_crash_restarted(world: World) -> None:
    assert _reservation_scenario(world, "restart") == "n4"


def test_without_the_memory_the_reservation_moves(world: World) -> None:
    """The control: a restart without the memory reserves the rack with the most free
    GPUs now (rack 1), and the borrower goes to rack 0 (n2, the best fit there)."""
    assert _reservation_scenario(world, "forget") == "n2"
