"""The live loop with the fake backend and a test clock: borrowing, reclaim by preemption
with grace, idle reclaim, dispute escalation, plan publishing, accounting."""

from __future__ import annotations

from sqlalchemy import select

from allotment.backends.fake import FakeBackend
from allotment.scheduler.config import SchedulerConfig
from allotment.service.loop import LoopConfig, SchedulerLoop
from allotment.storage.models import JobRow
from tests.service.conftest import World


def loop_for(w: World, fb: FakeBackend, **cfg: float) -> SchedulerLoop:
    sched = SchedulerConfig(grace_s=30, min_runtime_s=0)
    return SchedulerLoop(w.db, fb, LoopConfig(scheduler=sched, **cfg),  # type: ignore[arg-type]
                         clock=w.clock)


def job(w: World, jid: int) -> dict:  # type: ignore[type-arg]
    return dict(w.call("admin", "GET", f"/v1/jobs/{jid}").json())


def test_borrowed_gpus_return_to_owner_with_grace(world: World) -> None:
    """A borrowing job gets SIGTERM, SIGKILL after the grace period, and is requeued; the
    owner's job then runs on the GPUs."""
    fb = FakeBackend(exit_on_term=False)
    loop = loop_for(world, fb)
    big = world.submit("member_own", gpus=16)["id"]
    assert loop.tick().admitted == [big]
    assert job(world, big)["borrowed_gpus"] == 8 and job(world, big)["state"] == "running"
    world.clock.advance(600)
    owner = world.submit("member_other", team="vision", gpus=8)["id"]
    assert loop.tick().preempted == [big]
    assert fb.signals == [(big, 0, "TERM")]
    w = job(world, owner)
    assert w["state"] == "pending" and "reclaiming GPUs by preemption" in w["reason"]
    assert w["reason"].startswith("team vision at 0/8 guaranteed a100 GPUs")
    world.clock.advance(10)
    loop.tick()
    assert fb.signals == [(big, 0, "TERM")]  # still within the grace period
    world.clock.advance(25)
    report = loop.tick()
    assert fb.signals[-1] == (big, 0, "KILL") and report.requeued == [big]
    world.clock.advance(1)
    assert loop.tick().admitted == [owner]
    b = job(world, big)
    assert b["state"] == "pending" and b["preemptions"] == 1 and b["attempts"] == 1
    actions = [a["action"] for a in world.call("admin", "GET", "/v1/audit").json()["items"]]
    assert actions[:4] == ["job.admitted", "job.requeued", "job.preempted", "job.admitted"]


def test_idle_job_warned_then_reclaimed_for_another_team(world: World) -> None:
    """A job pushing 0% utilisation is warned after the window, reclaimed after that, and
    its GPUs go to another team's waiting job."""
    fb = FakeBackend()
    loop = loop_for(world, fb, idle_window_s=60, idle_reclaim_after_s=30)
    # llama holds its 8 guaranteed GPUs; infra (no guarantee) waits for all 16
    hog = world.submit("member_own", gpus=8, preemptible=False)["id"]
    loop.tick()
    assert job(world, hog)["state"] == "running"
    waiting = world.submit("admin", team="infra", gpus=16)["id"]
    for _ in range(4):  # 0% for 90 s: warned at 60 s, reclaimed 30 s later
        r = world.call("member_own", "POST", f"/v1/jobs/{hog}/samples",
                       json={"samples": [{"gpu": g, "util_pct": 0.0} for g in range(8)]})
        assert r.status_code == 202
        report = loop.tick()
        world.clock.advance(30)
    h = job(world, hog)
    assert h["idle_warned_at"] is not None and h["state"] in ("terminating", "pending")
    loop.tick()
    assert job(world, waiting)["state"] == "running"
    h = job(world, hog)
    assert h["state"] == "pending" and "held until" in h["reason"]
    assert h["idle_gpu_hours"] > 0
    actions = [a["action"] for a in world.call("admin", "GET", "/v1/audit").json()["items"]]
    assert "job.idle_warned" in actions and "job.reclaimed" in actions
    del report


def test_busy_job_is_never_warned(world: World) -> None:
    """Utilisation above the threshold keeps a job out of the idle rule."""
    fb = FakeBackend()
    loop = loop_for(world, fb, idle_window_s=60, idle_reclaim_after_s=30)
    busy = world.submit("member_own", gpus=8)["id"]
    loop.tick()
    for _ in range(6):
        world.call("member_own", "POST", f"/v1/jobs/{busy}/samples",
                   json={"samples": [{"gpu": 0, "util_pct": 97.0}]})
        loop.tick()
        world.clock.advance(30)
    assert job(world, busy)["state"] == "running" and job(world, busy)["idle_warned_at"] is None


def test_dispute_escalates_then_admin_adjusts_quota(world: World) -> None:
    """Unanswered, a dispute moves from the parent's lead to the admins; the resolution
    changes the team's guarantee for the period, and both steps are audited."""
    fb = FakeBackend()
    loop = loop_for(world, fb)
    plan = world.call("admin", "POST", "/v1/plans", json={"period": "2026-11"}).json()["id"]
    d = world.call("lead_own", "POST", "/v1/disputes", json={
        "team": "llama", "subject_kind": "plan", "subject_id": str(plan), "wants": "12 GPUs",
        "why": "launch", "gpu_type": "a100", "wanted_gpus": 12, "period": "2026-11"}).json()
    assert d["assigned_to"] == "research" and d["level"] == 0
    world.clock.advance(3601)
    assert loop.tick().escalated == [d["id"]]
    d = world.call("admin", "GET", f"/v1/disputes/{d['id']}").json()
    assert d["assigned_to"] is None and d["level"] == 1
    r = world.call("lead_parent", "POST", f"/v1/disputes/{d['id']}/resolve",
                   json={"decision": "granted", "reason": "ok"})
    assert r.status_code == 403  # it left research's lead
    r = world.call("admin", "POST", f"/v1/disputes/{d['id']}/resolve",
                   json={"decision": "granted", "reason": "launch is real", "guaranteed": 10})
    assert r.status_code == 422 and "more than the cluster's 16" in r.json()["detail"]
    assert world.call("admin", "GET", f"/v1/disputes/{d['id']}").json()["state"] == "open"
    r = world.call("admin", "POST", f"/v1/disputes/{d['id']}/resolve",
                   json={"decision": "partially_granted", "reason": "swap with infra later",
                         "guaranteed": 7})
    assert r.status_code == 200, r.text
    org = world.call("member_own", "GET", "/v1/org").json()
    llama = next(n for n in org["nodes"] if n["name"] == "llama")
    assert org["period"] == "2026-11"
    assert [(q["guaranteed"], q["source"]) for q in llama["quotas"]] == [(7, f"dispute:{d['id']}")]
    actions = [a["action"] for a in world.call("admin", "GET", "/v1/audit").json()["items"][:4]]
    assert actions == ["dispute.resolved", "quota.changed", "dispute.escalated", "dispute.filed"]


def test_publish_sets_quotas_for_the_period(world: World) -> None:
    """Publishing a plan makes its allocations the guarantees the scheduler uses."""
    for team, gpus in (("llama", 12), ("vision", 2)):
        who = "lead_own" if team == "llama" else "lead_other"
        r = world.call(who, "POST", "/v1/requests", json={
            "team": team, "period": "2026-11", "gpu_type": "a100", "gpus": gpus})
        assert r.status_code == 201
    p = world.call("admin", "POST", "/v1/plans", json={"period": "2026-11"}).json()
    assert world.call("admin", "POST", f"/v1/plans/{p['id']}/publish").status_code == 200
    org = world.call("member_own", "GET", "/v1/org").json()
    g = {n["name"]: [q["guaranteed"] for q in n["quotas"]] for n in org["nodes"]}
    assert g["llama"] == [12] and g["vision"] == [2]
    fb = FakeBackend()
    loop = loop_for(world, fb)
    jid = world.submit("member_own", gpus=12)["id"]
    loop.tick()
    assert job(world, jid)["borrowed_gpus"] == 0  # within the new guarantee of 12


def test_accounting_integrates_gpu_time(world: World) -> None:
    """GPU-hours used and borrowed per team follow the clock exactly."""
    fb = FakeBackend()
    loop = loop_for(world, fb)
    jid = world.submit("member_own", gpus=12)["id"]
    loop.tick()
    world.clock.advance(1800)
    loop.tick()
    fb.finish(jid, 0)
    world.clock.advance(1800)
    loop.tick()
    with world.db.session() as s:
        assert s.execute(select(JobRow.state).where(JobRow.id == jid)).scalar() == "succeeded"
    rows = {r["team"]: r for r in world.call("member_own", "GET", "/v1/usage").json()}
    assert rows["llama"]["used_gpu_hours"] == 12.0  # 12 GPUs x 1 h (admitted to finish)
    assert rows["llama"]["borrowed_gpu_hours"] == 4.0
    assert rows["vision"]["lent_gpu_hours"] == 4.0


def test_jobs_on_a_node_marked_down_are_stopped_and_requeued(world: World) -> None:
    """Marking a node down stops its jobs (TERM, grace, KILL) and requeues them, as Slurm
    does for a DOWN node; they run again on the nodes that are up."""
    fb = FakeBackend(exit_on_term=False)
    loop = loop_for(world, fb)
    jid = world.submit("member_own", gpus=8)["id"]
    loop.tick()
    node = job(world, jid)["placement"][0][0]
    other = "n2" if node == "n1" else "n1"
    nodes = [{"name": n, "gpu_type": "a100", "gpus": 8, "rack": k,
              "state": "down" if n == node else "up"} for k, n in enumerate(("n1", "n2"))]
    assert world.call("admin", "PUT", "/v1/inventory", json={"nodes": nodes}).status_code == 200
    report = loop.tick()
    assert report.preempted == [jid] and fb.signals == [(jid, 0, "TERM")]
    assert job(world, jid)["state"] == "terminating"
    world.clock.advance(31)
    loop.tick()
    assert fb.signals[-1] == (jid, 0, "KILL")
    world.clock.advance(1)
    loop.tick()
    j = job(world, jid)
    assert j["state"] == "running" and j["placement"] == [[other, 8]] and j["attempts"] == 1
    actions = [a["action"] for a in world.call("admin", "GET", "/v1/audit").json()["items"]]
    assert "job.requeued" in actions


def test_idle_window_is_set_per_team_in_the_org_file(world: World) -> None:
    """An org node's ``idle_window_s`` applies to the teams under it; other teams keep the
    loop's default window."""
    from tests.service.conftest import ORG

    org = [dict(ORG[0], idle_window_s=60), ORG[1]]
    r = world.call("admin", "PUT", "/v1/org", json={"org": org})
    assert r.status_code == 200, r.text
    windows = {n["name"]: n["idle_window_s"] for n in r.json()["nodes"]}
    assert windows["research"] == 60 and windows["llama"] is None and windows["infra"] is None
    fb = FakeBackend()
    loop = loop_for(world, fb, idle_window_s=3600, idle_reclaim_after_s=3600)
    short = world.submit("member_own", gpus=4)["id"]  # llama, under research: 60 s
    default = world.submit("admin", team="infra", gpus=4)["id"]  # platform: 3600 s
    loop.tick()
    for _ in range(4):
        for jid in (short, default):
            world.call("admin", "POST", f"/v1/jobs/{jid}/samples",
                       json={"samples": [{"gpu": g, "util_pct": 0.0} for g in range(4)]})
        loop.tick()
        world.clock.advance(30)
    assert job(world, short)["idle_warned_at"] is not None
    assert job(world, default)["idle_warned_at"] is None
    bad = [dict(ORG[0], idle_window_s=-5), ORG[1]]
    r = world.call("admin", "PUT", "/v1/org", json={"org": bad})
    assert r.status_code == 422 and "idle_window_s" in r.text


def test_queue_positions_follow_the_order_the_scheduler_used(world: World) -> None:
    """Waiting jobs show their place in the queue (1 = next), from the order of the last
    cycle: the job within its team's guarantee first; a job's place moves up when the one
    ahead starts, without that job's row being rewritten."""
    fb = FakeBackend(exit_on_term=False)
    loop = loop_for(world, fb)
    big = world.submit("member_own", gpus=16)["id"]
    loop.tick()
    world.clock.advance(600)
    mine = world.submit("member_other", team="vision", gpus=8)["id"]
    more = [world.submit("member_other", team="vision", gpus=8)["id"] for _ in range(2)]
    loop.tick()
    positions = {j: job(world, j)["queue_position"] for j in (mine, *more)}
    assert positions == {mine: 1, more[0]: 2, more[1]: 3}
    listed = world.call("member_other", "GET", "/v1/jobs?state=pending").json()["items"]
    assert {j["id"]: j["queue_position"] for j in listed} == positions
    assert job(world, big)["queue_position"] is None  # running: no place in the queue
    world.clock.advance(31)
    loop.tick()  # the borrower is killed after the grace period, and requeued
    world.clock.advance(1)
    assert loop.tick().admitted == [mine, more[0]]  # the second borrows llama's idle half
    assert job(world, more[1])["queue_position"] == 1
    with world.db.session() as s:
        assert s.get(JobRow, more[1]).queue_position is None  # type: ignore[union-attr]
