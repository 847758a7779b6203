"""Notifications leave the scheduling path: a preemption or an idle warning is a row of the
outbox committed with the decision, sent by a worker with a timeout and retries with
backoff; a receiver that hangs never delays a tick, and once it answers again the
notification arrives, once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select

from allotment.backends.fake import FakeBackend
from allotment.reclaim.samples import GpuSample
from allotment.scheduler.config import SchedulerConfig
from allotment.service.loop import LoopConfig, SchedulerLoop
from allotment.service.notify import Notifier
from allotment.storage.models import NotificationRow
from tests.service.conftest import World


class Receiver:
    """A webhook receiver on loopback that can be made to hang (accept, never answer)."""

    def __init__(self) -> None:
        self.hang = threading.Event()
        self.hung = threading.Event()  # a request is being held unanswered
        self.release = threading.Event()
        self.got: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if outer.hang.is_set():
                    outer.hung.set()
                    outer.release.wait(30)  # a hung receiver: this request is never answered
                    return
                import json

                outer.got.append(json.loads(body))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _preempting(world: World, url: str) -> tuple[SchedulerLoop, FakeBackend]:
    fb = FakeBackend(exit_on_term=False)
    cfg = LoopConfig(scheduler=SchedulerConfig(grace_s=30, min_runtime_s=0), webhook_url=url)
    loop = SchedulerLoop(world.db, fb, cfg, clock=world.clock)
    world.submit("member_own", gpus=16)
    loop.tick()
    world.clock.advance(600)
    world.submit("member_other", team="vision", gpus=8)
    return loop, fb


def test_a_hung_receiver_never_delays_a_tick(world: World, receiver: Receiver) -> None:
    """With the receiver hanging, the loop's ticks stay fast while the worker waits on its
    timeout; once the receiver answers again, the preemption notice arrives exactly once."""
    loop, _ = _preempting(world, receiver.url)
    receiver.hang.set()
    stop = threading.Event()
    notifier = Notifier(world.db, receiver.url, time.time, timeout_s=1.0, backoff_s=0.2,
                        poll_s=0.05)
    worker = notifier.start(stop)
    try:
        loop.tick()  # decides the preemption: its notice is in the outbox
        assert receiver.hung.wait(10), "the worker never tried to send"
        durations = []
        for _ in range(5):
            t = time.perf_counter()
            report = loop.tick()
            durations.append(time.perf_counter() - t)
            world.clock.advance(1)
        assert max(durations) < 0.5, durations  # a send waits 1 s; no tick waited for it
        assert not receiver.got
        with world.db.session() as s:
            row = s.execute(select(NotificationRow)).scalar_one()
            assert row.kind == "preemption" and row.delivered_at is None
        receiver.hang.clear()
        receiver.release.set()
        end = time.time() + 20
        while not receiver.got and time.time() < end:
            time.sleep(0.05)
        time.sleep(1.0)  # a second copy would have come by now
    finally:
        stop.set()
        worker.join(timeout=10)
    assert len(receiver.got) == 1, receiver.got
    got = receiver.got[0]
    assert got["event"] == "preemption" and got["team"] == "llama"
    assert "Allotment preemption: job" in got["text"]
    with world.db.session() as s:
        row = s.execute(select(NotificationRow)).scalar_one()
        assert row.delivered_at is not None and row.attempts >= 2
    assert report.acted


def test_retries_are_bounded(world: World) -> None:
    """A receiver that is down for good: the worker tries max_attempts times, backing off,
    then gives up and keeps the row with the error."""
    loop, _ = _preempting(world, "http://127.0.0.1:9/nowhere")
    loop.tick()
    clock = [world.clock()]
    n = Notifier(world.db, "http://127.0.0.1:9/nowhere", lambda: clock[0], timeout_s=0.5,
                 max_attempts=3, backoff_s=10.0)
    tries = []
    for _ in range(10):
        n.pump()
        if _ == 9:
            n.close()
        with world.db.session() as s:
            row = s.execute(select(NotificationRow)).scalar_one()
            tries.append((row.attempts, row.next_attempt_at - clock[0], row.gave_up_at))
        clock[0] += 100.0
    assert [t[0] for t in tries[:3]] == [1, 2, 3]
    assert tries[0][1] == 10.0 and tries[1][1] == 20.0  # backoff 10 s, then 20 s
    assert tries[2][2] is not None and tries[-1][0] == 3  # gave up after 3, never again


def test_an_idle_warning_is_a_notification(world: World) -> None:
    """The idle rule's warning is logged and queued for the webhook with the job's team and
    user."""
    fb = FakeBackend()
    cfg = LoopConfig(scheduler=SchedulerConfig(min_runtime_s=0), idle_window_s=60,
                     idle_reclaim_after_s=30, webhook_url="http://127.0.0.1:9/x")
    loop = SchedulerLoop(world.db, fb, cfg, clock=world.clock)
    jid = world.submit("member_own", gpus=2)["id"]
    loop.tick()
    t0 = world.clock()
    fb.util[jid] = [GpuSample(t0 + k * 20, 0, 0.0, 100.0, str(jid)) for k in range(5)]
    world.clock.advance(100)
    assert loop.tick().warned == [jid]
    with world.db.session() as s:
        row = s.execute(select(NotificationRow)).scalar_one()
    assert row.kind == "idle_warning"
    assert row.payload["job_id"] == jid and row.payload["user"] == "member_own"
