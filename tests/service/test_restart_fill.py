"""A scheduler restarted while jobs fill GPUs held for a blocked gang keeps both: the
gang's reservation and which runs are its fill, so the fill is preempted (through the one
apply path) the moment the gang can start. The control restart without its memory treats
the fill as an ordinary borrower and leaves it running."""

from __future__ import annotations

from typing import Any

from allotment.backends.fake import FakeBackend
from allotment.service.loop import SchedulerLoop
from allotment.storage import repo
from tests.service.conftest import World
from tests.service.test_restart import _crash, _loop, _state


def _fill_scenario(w: World, crash: str | None) -> tuple[str, str]:
    fill, gang, _ = _run_fill(w, crash)
    return str(_state(w, fill)["state"]), str(_state(w, gang)["state"])


def _run_fill(w: World, crash: str | None) -> tuple[int, int, SchedulerLoop]:
    """n1 and n2 (8 GPUs each); a and b guaranteed 8 each. a runs 8 on n1, b 4 on n2; a's
    16-GPU gang (a borrower, reserving at once) holds n2's 4 free GPUs; a's 2-GPU job fills
    them. b's job ends, then (after a crash, or none) a's 8: the gang could start but for
    its fill. Returns the fill job's id, the gang's and the loop."""
    with w.db.session() as s:
        repo.set_org(s, {"org": [{"name": "a", "guaranteed": {"a100": 8}},
                                 {"name": "b", "guaranteed": {"a100": 8}}]}, "test", w.clock())
    fb = FakeBackend()
    sched: dict[str, Any] = {"reserve_after_s": 0.0}
    loop = _loop(w, fb, **sched)
    big_a = w.submit("admin", team="a", gpus=8)["id"]
    small_b = w.submit("admin", team="b", gpus=4)["id"]
    loop.tick()
    w.clock.advance(10.0)
    gang = w.submit("admin", team="a", gpus=16)["id"]
    loop.tick()
    w.clock.advance(10.0)
    fill = w.submit("admin", team="a", gpus=2)["id"]
    loop.tick()
    assert _state(w, fill)["state"] == "running"
    assert _state(w, fill)["placement"][0][0] == "n2"
    fb.finish(small_b, 0)
    w.clock.advance(10.0)
    loop.tick()
    assert _state(w, gang)["state"] == "pending"
    if crash is not None:
        loop = _crash(w, fb, loop, forget=crash == "forget", **sched)
    fb.finish(big_a, 0)
    w.clock.advance(10.0)
    loop.tick()
    return fill, gang, loop


def test_fill_is_preempted_when_the_gang_can_start(world: World) -> None:
    """Without a crash: the fill job is told to stop (grace period), the gang waits."""
    assert _fill_scenario(world, None) == ("terminating", "pending")


def test_fill_survives_a_crash(world: World) -> None:
    """The same after a kill and a restart of the scheduler."""
    assert _fill_scenario(world, "restart") == ("terminating", "pending")


def test_without_the_memory_the_fill_is_not_known(world: World) -> None:
    """The control: a restart that lost the memory leaves the 2-GPU job running."""
    assert _fill_scenario(world, "forget") == ("running", "pending")



def test_gang_starts_once_the_grace_period_is_over(world: World) -> None:
    """After the restart, the fill is stopped at the end of its 30 s grace, requeued, and
    the gang runs on all 16 GPUs."""
    fill, gang, loop = _run_fill(world, "restart")
    world.clock.advance(31.0)
    loop.tick()
    loop.tick()
    assert _state(world, gang)["state"] == "running"
    assert _state(world, fill)["state"] == "pending"
