"""Dispute notifications: filing (assigned), escalation and resolution each become a log
line and an outbox row in their own transaction, delivered by the worker as Slack JSON;
a refused step (a resolution that does not fit) sends nothing."""

from __future__ import annotations

import logging

import pytest

from allotment.backends.fake import FakeBackend
from allotment.service.notify import Notifier
from tests.service.conftest import World
from tests.service.test_loop import loop_for
from tests.service.test_notify import Receiver, receiver  # noqa: F401 (the fixture)


def test_dispute_steps_are_notified_once_each(world: World, receiver: Receiver,  # noqa: F811
                                              caplog: pytest.LogCaptureFixture) -> None:
    """File, escalate (the loop), a refused resolution, then a resolution: the receiver
    gets assigned, escalated and resolved, in that order, once each, with the dispute,
    team, assignee and reason; each step is also a log line."""
    caplog.set_level(logging.WARNING, "allotment.governance")
    loop = loop_for(world, FakeBackend())
    plan = world.call("admin", "POST", "/v1/plans", json={"period": "2026-11"}).json()["id"]
    d = world.call("lead_own", "POST", "/v1/disputes", json={
        "team": "llama", "subject_kind": "plan", "subject_id": str(plan), "wants": "12 GPUs",
        "why": "launch", "gpu_type": "a100", "wanted_gpus": 12, "period": "2026-11"}).json()
    world.clock.advance(3601)
    assert loop.tick().escalated == [d["id"]]
    r = world.call("admin", "POST", f"/v1/disputes/{d['id']}/resolve",
                   json={"decision": "granted", "reason": "too much", "guaranteed": 10})
    assert r.status_code == 422  # refused: rolled back, nothing to send
    r = world.call("admin", "POST", f"/v1/disputes/{d['id']}/resolve",
                   json={"decision": "partially_granted", "reason": "7 now", "guaranteed": 7})
    assert r.status_code == 200, r.text
    sender = Notifier(world.db, receiver.url, world.clock, timeout_s=2.0)
    try:
        assert sender.pump() == 3
        assert sender.pump() == 0
    finally:
        sender.close()
    got = [(m["event"], m["dispute_id"], m["team"], m["assigned_to"]) for m in receiver.got]
    assert got == [("dispute_assigned", d["id"], "llama", "research"),
                   ("dispute_escalated", d["id"], "llama", "admins"),
                   ("dispute_resolved", d["id"], "llama", "admins")]
    assert all(m["text"].startswith("Allotment dispute ") and m["reason"]
               for m in receiver.got)
    assert "7 now" in receiver.got[2]["reason"]
    lines = [r.getMessage() for r in caplog.records if r.name == "allotment.governance"]
    assert [ln.split(":")[0] for ln in lines] == ["dispute_assigned", "dispute_escalated",
                                                  "dispute_resolved"], lines
