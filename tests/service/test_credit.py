"""Credit for lending in the service (issue 14, item 3), on SQLite and PostgreSQL: the
credit a team earns while another team uses its idle guarantee is part of the scheduler's
memory, saved each tick and restored by a restarted scheduler; ``GET /v1/usage`` shows it,
and a borrowing job's reason says what it is worth."""

from __future__ import annotations

import json

from allotment.backends.fake import FakeBackend
from allotment.scheduler.config import SchedulerConfig
from allotment.service.loop import LoopConfig, SchedulerLoop
from allotment.storage import repo
from tests.service.conftest import World

CFG = LoopConfig(scheduler=SchedulerConfig(credit_half_life_s=86400.0),
                 accounting_flush_s=0.0)


def saved_credit(w: World) -> dict[str, float]:
    with w.db.session() as s:
        raw = json.loads(repo.get_setting(s, "scheduler_memory") or "{}")
    return {k: float(v) for k, v in (raw.get("ledger") or {}).get("credit", {}).items()}


def test_credit_survives_a_restart_and_shows(world: World) -> None:
    """vision lends its 8 idle GPUs to llama for 2 h: it earns credit (llama none); a new
    scheduler process continues from the saved credit; usage and why show it."""
    backend = FakeBackend()  # the runs outlive the scheduler process (as real ones do)
    loop = SchedulerLoop(world.db, backend, CFG, clock=world.clock)
    world.submit("member_own", gpus=16)  # 8 of them borrowed from vision
    loop.tick()
    for _ in range(4):
        world.clock.advance(1800)
        loop.tick()
    credit = saved_credit(world)
    assert set(credit) == {"vision"}
    # 8 GPUs lent for 2 h with a 1-day half-life: a little under 16 GPU-hours
    assert 15.0 * 3600 < credit["vision"] < 16.0 * 3600
    rows = {r["team"]: r for r in world.call("member_other", "GET", "/v1/usage").json()}
    assert 15.0 < rows["vision"]["credit_gpu_hours"] < 16.0
    assert rows["llama"]["credit_gpu_hours"] == 0.0
    # a restarted scheduler (another process, same database) has the same credit
    assert loop.live is not None and loop.live.state is not None
    before = loop.live.state.ledger.credit_at(loop.live.state, "vision", world.clock())
    loop2 = SchedulerLoop(world.db, backend, CFG, clock=world.clock, holder=loop.holder)
    loop2.tick()
    assert loop2.live is not None and loop2.live.state is not None
    after = loop2.live.state.ledger.credit_gpu_s["vision"]
    assert abs(after - before) <= 1e-6 * before
    # vision now borrows beyond its guarantee: its reason names the credit
    world.submit("member_other", team="vision", gpus=8)  # within: reclaims from llama
    loop2.tick()
    world.clock.advance(61)  # llama's grace is over: vision's job runs
    loop2.tick()
    world.submit("member_own", gpus=8)  # llama's guarantee: the cluster is full again
    loop2.tick()
    job = world.submit("member_other", team="vision", gpus=4)  # beyond its guarantee
    loop2.tick()
    why = world.call("member_other", "GET", f"/v1/jobs/{job['id']}").json()["reason"]
    assert "credit for lending: 1" in why and "lowers its fair-share value" in why, why


def test_without_credit_nothing_is_saved(world: World) -> None:
    """Credit is off unless configured: the memory has no ledger and usage shows 0."""
    loop = SchedulerLoop(world.db, FakeBackend(), LoopConfig(accounting_flush_s=0.0),
                         clock=world.clock)
    world.submit("member_own", gpus=16)
    loop.tick()
    world.clock.advance(3600)
    loop.tick()
    assert saved_credit(world) == {}
    rows = {r["team"]: r for r in world.call("member_other", "GET", "/v1/usage").json()}
    assert rows["vision"]["credit_gpu_hours"] == 0.0
