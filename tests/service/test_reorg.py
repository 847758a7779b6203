"""Reorganisations that keep history (``governance.reorg``): renames and merges with running
and pending jobs under the live loop, where ``allot jobs``, ``allot usage`` and ``allot audit
verify`` then agree; dry runs; removals refused while a team has work; splits; the periods'
quotas; the org's versions; bad org files refused whole, naming the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from allotment.backends.fake import FakeBackend
from allotment.cli.main import app as cli
from allotment.scheduler.config import SchedulerConfig
from allotment.service.loop import LoopConfig, SchedulerLoop
from allotment.service.loop import live as world_state
from allotment.storage import reorg as reorg_rows
from allotment.storage import repo
from allotment.storage.models import AuditRow, OrgVersionRow, UsageRow
from tests.service.conftest import LiveServer, World

runner = CliRunner()


def loop_for(w: World, fb: FakeBackend) -> SchedulerLoop:
    sched = SchedulerConfig(grace_s=30, min_runtime_s=0)
    return SchedulerLoop(w.db, fb, LoopConfig(scheduler=sched), clock=w.clock)


def org(*top: dict[str, Any]) -> dict[str, Any]:
    return {"org": list(top)}


def put_org(w: World, body: dict[str, Any], who: str = "admin", dry_run: bool = False,
            force: list[str] | None = None) -> Any:
    params: dict[str, Any] = {"dry_run": str(dry_run).lower()}
    if force:
        params["force"] = force
    return w.call(who, "PUT", "/v1/org", json=body, params=params)


def jobs_by_id(w: World) -> dict[int, dict[str, Any]]:
    items = w.call("admin", "GET", "/v1/jobs", params={"limit": 500}).json()["items"]
    return {j["id"]: j for j in items}


def used(w: World) -> dict[str, float]:
    return {r["team"]: r["used_gpu_hours"] for r in w.call("admin", "GET", "/v1/usage").json()}


def memory(w: World) -> dict[str, tuple[float, float]]:
    with w.db.session() as s:
        raw = json.loads(repo.get_setting(s, reorg_rows.MEMORY_KEY) or "{}")
    return {k: (v[0], v[1]) for k, v in raw.get("decayed", {}).items()}


def snapshot(w: World) -> tuple[Any, ...]:
    """Everything a reorganisation may change, to show that a refused one changed none."""
    with w.db.session() as s:
        audit_n = s.execute(select(func.count()).select_from(AuditRow)).scalar_one()
        versions = s.execute(select(func.count()).select_from(OrgVersionRow)).scalar_one()
        usage = sorted((r.team, r.hour, r.used_gpu_s) for r in s.execute(
            select(UsageRow)).scalars())
        mem = repo.get_setting(s, reorg_rows.MEMORY_KEY)
    teams = sorted((j["id"], j["team"]) for j in jobs_by_id(w).values())
    return (w.call("admin", "GET", "/v1/org").json(), teams, usage, audit_n, versions, mem,
            sorted((u["name"], u["org_node"]) for u in
                   w.call("admin", "GET", "/v1/users").json()["items"]))


RESEARCH = {"name": "research", "children": [{"name": "llama", "guaranteed": {"a100": 8}},
                                             {"name": "vision", "guaranteed": {"a100": 8}}]}
PLATFORM = {"name": "platform", "children": [{"name": "infra"}]}
RENAMED = org({"name": "research", "children": [
    {"name": "llm", "renamed_from": "llama", "guaranteed": {"a100": 8}},
    {"name": "vision", "guaranteed": {"a100": 8}}]}, PLATFORM)
MERGED = org({"name": "research", "children": [
    {"name": "foundation", "merged_from": ["llm", "vision"], "guaranteed": {"a100": 16}}]},
    PLATFORM)


def test_rename_then_merge_with_running_and_pending_jobs(world: World, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """Running jobs keep running and belong to the new team, pending ones follow, usage
    and decayed usage move and add up, members keep their jobs, and the CLI's jobs, usage
    and audit verification agree with the API afterwards."""
    w = world
    fb = FakeBackend(exit_on_term=False)
    loop = loop_for(w, fb)
    j1 = w.submit("member_own", gpus=8)["id"]
    j2 = w.submit("member_other", team="vision", gpus=4)["id"]
    assert sorted(loop.tick().admitted) == [j1, j2]
    j3 = w.submit("member_own", gpus=8)["id"]
    j4 = w.submit("member_other", team="vision", gpus=8)["id"]
    loop.tick()
    w.clock.advance(1800)
    loop.tick()
    assert used(w) == {"llama": 4.0, "vision": 2.0}
    before = memory(w)
    assert set(before) == {"llama", "vision", "research"}

    r = put_org(w, RENAMED)
    assert r.status_code == 200, r.text
    got = r.json()
    assert [c["text"] for c in got["changes"]] == ["renamed llama to llm"]
    assert got["moved"]["jobs"] == 2 and got["version"] is not None
    assert {n["name"] for n in got["nodes"]} == {"research", "llm", "vision", "platform",
                                                  "infra"}
    assert set(memory(w)) == {"llm", "vision", "research"}
    report = loop.tick()
    assert report.preempted == [] and report.admitted == [] and fb.signals == []
    jobs = jobs_by_id(w)
    assert [(jobs[j]["team"], jobs[j]["state"], jobs[j]["attempts"]) for j in (j1, j3)] == [
        ("llm", "running", 0), ("llm", "pending", 0)]
    assert [s.job_id for s in fb.launched] == [j1, j2]  # nothing launched again
    assert used(w) == {"llm": 4.0, "vision": 2.0}
    # the member of llama is a member of llm now, and still sees its jobs
    assert w.call("member_own", "GET", f"/v1/jobs/{j1}").status_code == 200
    assert w.call("member_own", "GET", "/v1/me").json()["org_node"] == "llm"

    w.clock.advance(600)
    loop.tick()
    r = put_org(w, MERGED)
    assert r.status_code == 200, r.text
    texts = [c["text"] for c in r.json()["changes"]]
    assert texts == ["merged llm, vision into foundation"]
    mem = memory(w)
    assert set(mem) == {"foundation", "research"}
    assert mem["foundation"][0] == pytest.approx(mem["research"][0])
    report = loop.tick()
    assert report.preempted == [] and fb.signals == []
    jobs = jobs_by_id(w)
    assert {jobs[j]["team"] for j in (j1, j2, j3, j4)} == {"foundation"}
    assert [jobs[j]["state"] for j in (j1, j2, j3, j4)] == ["running", "running", "pending",
                                                            "pending"]
    assert all(jobs[j]["queue_position"] is not None for j in (j3, j4))
    # 12 GPUs for 2,400 s: 8 GPU-hours of llama/llm, 2 + 2/3 of vision, now foundation's
    w.clock.advance(60)
    loop.tick()
    loop.flush()
    u = used(w)
    assert set(u) == {"foundation"} and u["foundation"] == pytest.approx(12 * 2460 / 3600,
                                                                         abs=1e-3)
    # the pending jobs run when the running ones end: they follow the new team
    fb.finish(j1, 0)
    loop.tick()
    loop.tick()
    assert jobs_by_id(w)[j3]["state"] == "running"
    assert jobs_by_id(w)[j3]["team"] == "foundation"

    history = w.call("admin", "GET", "/v1/org/history").json()
    assert history["total"] == 3
    assert [v["changes"][0]["kind"] if v["changes"] else "set" for v in history["items"]] == [
        "merged", "renamed", "set"]
    assert history["items"][0]["moves"] == {"llm": "foundation", "vision": "foundation"}
    actions = [a["action"] for a in w.call("admin", "GET", "/v1/audit",
                                           params={"limit": 500}).json()["items"]]
    assert {"org.renamed", "org.merged", "org.set"} <= set(actions)

    # the CLI, over HTTP like a user, agrees with the API
    with LiveServer(w.client.app) as srv:
        monkeypatch.setenv("ALLOTMENT_URL", srv.url)
        monkeypatch.setenv("ALLOTMENT_TOKEN", w.tokens["admin"])
        out = runner.invoke(cli, ["jobs", "--json"])
        assert out.exit_code == 0, out.output
        assert {j["id"]: j["team"] for j in json.loads(out.output)["items"]} == {
            j1: "foundation", j2: "foundation", j3: "foundation", j4: "foundation"}
        out = runner.invoke(cli, ["usage", "--json"])
        assert out.exit_code == 0, out.output
        assert {r["team"]: r["used_gpu_hours"] for r in json.loads(out.output)} == u
        out = runner.invoke(cli, ["org", "show"])
        assert out.exit_code == 0, out.output
        assert "foundation (team): 16 a100" in out.output
    out = runner.invoke(cli, ["audit", "verify", "--db", w.db.url,
                              "--data-dir", str(tmp_path / "data")])
    assert out.exit_code == 0, out.output
    assert "audit log OK" in out.output


def test_dry_run_changes_nothing(world: World) -> None:
    """A dry run answers the diff and writes nothing: org, jobs, usage, memory, users,
    audit entries and versions stay as they were."""
    loop = loop_for(world, FakeBackend())
    world.submit("member_own", gpus=4)
    world.submit("member_own", gpus=16)
    loop.tick()
    world.clock.advance(120)
    loop.tick()
    loop.flush()
    before = snapshot(world)
    r = put_org(world, RENAMED, dry_run=True)
    assert r.status_code == 200, r.text
    assert r.json()["dry_run"] is True and r.json()["version"] is None
    assert [c["kind"] for c in r.json()["changes"]] == ["renamed"]
    assert snapshot(world) == before


def test_removal_with_work_is_refused_unless_forced(world: World) -> None:
    """Removing a team with a pending job is refused (409, naming --force) and changes
    nothing; ``--force vision=llama`` moves its work; a group as target is refused."""
    job = world.submit("member_other", team="vision", gpus=2)["id"]
    without_vision = org({"name": "research", "children": [
        {"name": "llama", "guaranteed": {"a100": 8}}]}, PLATFORM)
    before = snapshot(world)
    r = put_org(world, without_vision)
    assert r.status_code == 409
    assert "vision" in r.json()["detail"] and "--force vision=" in r.json()["detail"]
    r = put_org(world, without_vision, force=["vision=platform"])
    assert r.status_code == 422 and r.json()["detail"].startswith("force[vision]: ")
    r = put_org(world, without_vision, force=["llama=infra"])
    assert r.status_code == 422 and "not removed" in r.json()["detail"]
    assert snapshot(world) == before
    r = put_org(world, without_vision, force=["vision=llama"])
    assert r.status_code == 200, r.text
    assert [c["text"] for c in r.json()["changes"]] == [
        "removed vision; its 1 running or pending jobs (2 GPUs) and history go to llama"]
    assert jobs_by_id(world)[job]["team"] == "llama"
    # a removed team without work goes without --force; its users keep no team
    r = put_org(world, org(RESEARCH | {"children": [{"name": "llama"}]}))
    assert r.status_code == 200, r.text
    assert "removed team infra" in " ".join(c["text"] for c in r.json()["changes"])


def test_split_sends_work_to_the_first_part_or_the_forced_one(world: World) -> None:
    """A team split into two parts: its jobs go to the first part, or to the part that
    ``--force`` names; a part that is not one is refused."""
    job = world.submit("member_own", gpus=2)["id"]
    split = org({"name": "research", "children": [
        {"name": "llama-pre", "split_from": "llama", "guaranteed": {"a100": 4}},
        {"name": "llama-rl", "split_from": "llama", "guaranteed": {"a100": 4}},
        {"name": "vision", "guaranteed": {"a100": 8}}]}, PLATFORM)
    r = put_org(world, split, dry_run=True)
    assert r.status_code == 200, r.text
    assert r.json()["changes"][0]["text"] == ("split llama into llama-pre, llama-rl; its jobs "
                                              "and history go to llama-pre")
    r = put_org(world, split, force=["llama=vision"])
    assert r.status_code == 422 and "not a part of the split" in r.json()["detail"]
    r = put_org(world, split, force=["llama=llama-rl"])
    assert r.status_code == 200, r.text
    assert jobs_by_id(world)[job]["team"] == "llama-rl"


def test_period_quotas_of_merged_teams_add_up(world: World) -> None:
    """A period's quotas (a dispute's or a plan's) are re-keyed: merged ones add up."""
    with world.db.session() as s:
        repo.set_quota(s, "2026-11", "llama", "a100", 6, "dispute", "root", world.clock(), "x")
        repo.set_quota(s, "2026-11", "vision", "a100", 5, "dispute", "root", world.clock(),
                       "y")
    r = put_org(world, org({"name": "research", "children": [
        {"name": "llama", "merged_from": ["llama", "vision"], "guaranteed": {"a100": 16}}]},
        PLATFORM))
    assert r.status_code == 200, r.text
    assert [c["text"] for c in r.json()["changes"]] == [
        "merged vision into llama (which stays)", "llama: guaranteed 8 a100 -> 16 a100"]
    llama = next(n for n in r.json()["nodes"] if n["name"] == "llama")
    # the period's quota is the one in force (over the org file's 16)
    assert {q["period"]: q["guaranteed"] for q in llama["quotas"]} == {"2026-11": 11}


def test_move_to_another_parent_is_in_the_diff_and_takes_decayed_usage(world: World) -> None:
    """A team moved under another group shows as moved; its decayed usage leaves its old
    group's and joins the new one's."""
    loop = loop_for(world, FakeBackend())
    world.submit("member_own", gpus=8)
    loop.tick()
    world.clock.advance(3600)
    loop.tick()
    r = put_org(world, org({"name": "research", "children": [
        {"name": "vision", "guaranteed": {"a100": 8}}]},
        {"name": "platform", "children": [{"name": "infra"},
                                          {"name": "llama", "guaranteed": {"a100": 8}}]}))
    assert r.status_code == 200, r.text
    assert [c["text"] for c in r.json()["changes"]] == ["moved llama from research to platform"]
    mem = memory(world)
    assert "research" not in mem and mem["platform"][0] == pytest.approx(mem["llama"][0])
    assert mem["llama"][0] > 0


def test_stale_loop_state_cannot_undo_the_rekeyed_memory_or_usage(world: World) -> None:
    """A loop whose state predates a rename (a tick in flight) neither writes its old
    memory over the re-keyed one nor its unwritten usage sums under the old name."""
    loop = loop_for(world, FakeBackend())
    world.submit("member_own", gpus=8)
    loop.tick()
    world.clock.advance(20)  # under the 30 s flush: the sums are only in memory
    loop.tick()
    assert loop.accountant.sums
    assert put_org(world, RENAMED).status_code == 200
    stale = loop.live
    assert stale is not None
    with world.db.session() as s:
        stale.memory_saved = ""
        world_state.save_memory(s, stale)  # what step 10 of that tick would do
    assert set(memory(world)) == {"llm", "research"}
    loop.accountant.flush(world.db)
    u = used(world)
    assert "llama" not in u and u["llm"] == pytest.approx(8 * 20 / 3600, abs=1e-3)
    loop.tick()
    world.clock.advance(40)
    loop.tick()
    loop.flush()
    u = used(world)
    assert "llama" not in u and u["llm"] == pytest.approx(8 * 60 / 3600, abs=1e-3)
    assert set(memory(world)) == {"llm", "research"}


BAD = [  # (org file, field the error names, status)
    (org({"name": "research", "children": [
        {"name": "ml", "merged_from": ["llama", "ghost"]}, {"name": "vision"}]}, PLATFORM),
     "org[0].children[0].merged_from[1]", 422),
    (org({"name": "research", "children": [
        {"name": "vision", "renamed_from": "llama"}]}, PLATFORM),
     "org[0].children[0].renamed_from", 422),
    (org({"name": "research", "children": [
        {"name": "llm", "renamed_from": "llama"}, {"name": "ml", "merged_from": ["llama"]},
        {"name": "vision"}]}, PLATFORM),
     "org[0].children[1].merged_from[0]", 422),
    (org({"name": "research", "children": [
        {"name": "llm", "renamed_from": "llama"}, {"name": "llama"}, {"name": "vision"}]},
        PLATFORM),
     "org[0].children[0].renamed_from", 422),
    (org({"name": "research", "children": [
        {"name": "a", "split_from": "llama"}, {"name": "b", "renamed_from": "llama"},
        {"name": "vision"}]}, PLATFORM),
     "org[0].children[1].renamed_from", 422),
    (org({"name": "research", "children": [  # a swap: each renamed to the other's name
        {"name": "vision", "renamed_from": "llama"}, {"name": "llama", "renamed_from": "vision"}
    ]}, PLATFORM),
     "org[0].children[0].renamed_from", 422),
    (org({"name": "research", "children": [
        {"name": "research", "renamed_from": "llama"}, {"name": "vision"}]}, PLATFORM),
     "org[0].children[0].name", 422),
    (org({"name": "research", "children": [
        {"name": "ml", "merged_from": "llama"}, {"name": "vision"}]}, PLATFORM),
     "org[0].children[0].merged_from", 422),
    (org({"name": "research", "children": [
        {"name": "llm", "renamed_from": "llama", "merged_from": ["vision"]}]}, PLATFORM),
     "org[0].children[0].renamed_from", 422),
    (org({"name": "research", "children": [
        {"name": "llama", "guaranteed": {"a100": 8}},
        {"name": "vision", "guaranteed": {"a100": 9}}]}, PLATFORM),
     "org", 422),
    (org({"name": "research", "children": [
        {"name": "llama", "guaranteed": {"a100": "8"}}, {"name": "vision"}]}, PLATFORM),
     "org[0].children[0].guaranteed", 422),
    (org({"name": "research", "children": [
        {"name": "llama", "weight": -1}, {"name": "vision"}]}, PLATFORM),
     "org[0].children[0].weight", 422),
    (org({"name": "research", "children": [
        {"name": "llama", "guaranteed": {"h100": 8}}, {"name": "vision"}]}, PLATFORM),
     "org[0].children[0].guaranteed", 422),
]


@pytest.mark.parametrize("body,field,status", BAD, ids=[b[1] + f"#{k}"
                                                         for k, b in enumerate(BAD)])
def test_bad_org_file_names_the_field_and_changes_nothing(world: World, body: dict[str, Any],
                                                         field: str, status: int) -> None:
    """Each bad file is refused whole, its error naming the field; nothing changes."""
    world.submit("member_own", gpus=1)
    before = snapshot(world)
    r = put_org(world, body)
    assert r.status_code == status, r.text
    assert r.json()["detail"].startswith(field), r.json()["detail"]
    assert snapshot(world) == before


def test_nan_guarantee_and_oversized_bodies_are_refused(world: World) -> None:
    """A NaN guarantee (JSON's NaN token) is a 422 naming the field; a body over the limit
    a 413; nothing changes."""
    before = snapshot(world)
    raw = ('{"org": [{"name": "research", "children": [{"name": "llama", "guaranteed": '
           '{"a100": NaN}}, {"name": "vision"}]}, {"name": "platform"}]}')
    r = world.client.put("/v1/org", content=raw, headers={**world.h("admin"),
                                                         "content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert "org" in r.json()["detail"]
    big = json.dumps(org(*[{"name": f"t{k}" * 20} for k in range(20_000)]))
    r = world.client.put("/v1/org", content=big, headers={**world.h("admin"),
                                                         "content-type": "application/json"})
    assert r.status_code == 413
    assert snapshot(world) == before


def test_only_admins_reorganise(world: World) -> None:
    """Another team's lead, the parent's lead and members get 403 for PUT /v1/org (dry run
    or not) and for the history; nothing changes."""
    before = snapshot(world)
    for who in ("member_own", "lead_own", "lead_other", "lead_parent"):
        for dry in (True, False):
            assert put_org(world, RENAMED, who=who, dry_run=dry).status_code == 403
        assert world.call(who, "GET", "/v1/org/history").status_code == 403
        r = world.call(who, "PUT", "/v1/inventory", params={"dry_run": "true"},
                       json={"nodes": [{"name": "n1", "gpu_type": "a100", "gpus": 8}]})
        assert r.status_code == 403
    assert snapshot(world) == before


def test_inventory_diff_then_apply(world: World) -> None:
    """The inventory's diff names nodes added, removed and changed; a dry run writes
    nothing; shrinking a node under a running job is refused even in a dry run."""
    loop = loop_for(world, FakeBackend())
    world.submit("member_own", gpus=8)
    loop.tick()
    body = {"nodes": [{"name": "n1", "gpu_type": "a100", "gpus": 8, "rack": 0},
                      {"name": "n3", "gpu_type": "a100", "gpus": 8, "rack": 2}]}
    running_on = next(iter(jobs_by_id(world).values()))["placement"][0][0]
    if running_on == "n2":
        body["nodes"][0]["name"], body["nodes"][1]["name"] = "n2", "n3"
    kept = body["nodes"][0]["name"]
    gone = "n2" if kept == "n1" else "n1"
    r = world.call("admin", "PUT", "/v1/inventory", params={"dry_run": "true"}, json=body)
    assert r.status_code == 200, r.text
    texts = [c["text"] for c in r.json()["changes"]]
    assert texts[-2:] == ["added n3: 8 a100 GPUs, rack 2, pod 0, up",
                          f"removed {gone} (8 a100 GPUs)"]
    assert [n["name"] for n in world.call("admin", "GET", "/v1/inventory").json()["nodes"]] == [
        "n1", "n2"]
    shrunk = {"nodes": [{"name": kept, "gpu_type": "a100", "gpus": 4}]}
    r = world.call("admin", "PUT", "/v1/inventory", params={"dry_run": "true"}, json=shrunk)
    assert r.status_code == 409
    r = world.call("admin", "PUT", "/v1/inventory", json=body)
    assert r.status_code == 200, r.text
    assert sorted(n["name"] for n in r.json()["nodes"]) == sorted([kept, "n3"])


def test_cli_org_and_inventory_over_the_api(world: World, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """``allot org apply --dry-run`` prints the diff and changes nothing; without it the
    org changes; a file that contains itself, a 64 MiB file, a NaN guarantee and a member's
    token are one-line errors (exit 2) that change nothing; ``allot inventory`` likewise."""
    new = tmp_path / "org.yaml"
    new.write_text("org:\n  - name: research\n    children:\n"
                   "      - {name: llm, renamed_from: llama, guaranteed: 8}\n"
                   "      - {name: vision, guaranteed: 8}\n"
                   "  - {name: platform, children: [{name: infra}]}\n")
    loop_file = tmp_path / "loop.yaml"
    loop_file.write_text("org: &a\n  - name: x\n    children: *a\n")
    huge = tmp_path / "huge.yaml"
    with huge.open("wb") as f:
        f.truncate(64 * 2**20)
    deep = tmp_path / "deep.yaml"
    deep.write_text("org: " + "[" * 5000 + "]" * 5000 + "\n")
    bomb = tmp_path / "bomb.yaml"  # a billion laughs: 10^8 values once aliases expand
    levels = zip("abcdef", "bcdefg", strict=True)
    bomb.write_text("a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{n}: &{n} [{', '.join(['*' + p] * 10)}]\n" for p, n in levels) + "org: [*g, *g]\n")
    nan = tmp_path / "nan.yaml"
    nan.write_text("org:\n  - {name: llama, guaranteed: {a100: .nan}}\n")
    inv = tmp_path / "inv.yaml"
    inv.write_text("nodes:\n  - {name: n1, gpu_type: a100, gpus: 8}\n"
                   "  - {name: n2, gpu_type: a100, gpus: 8, rack: 1}\n"
                   "  - {name: n3, gpu_type: a100, gpus: 8, rack: 2}\n")
    with LiveServer(world.client.app) as srv:
        monkeypatch.setenv("ALLOTMENT_URL", srv.url)
        monkeypatch.setenv("ALLOTMENT_TOKEN", world.tokens["admin"])
        before = snapshot(world)
        out = runner.invoke(cli, ["org", "apply", str(new), "--dry-run"])
        assert out.exit_code == 0, out.output
        assert "would change:" in out.output and "renamed llama to llm" in out.output
        for bad, words in ((loop_file, "contains itself"), (huge, "64.0 MiB"),
                           (nan, "file.org[0].guaranteed.a100: must be a finite number"),
                           (tmp_path / "missing.yaml", "cannot read"),
                           (deep, "nested too deeply"), (bomb, "more than 1,000,000 values")):
            out = runner.invoke(cli, ["org", "apply", str(bad)])
            said = " ".join(out.output.split())  # the console wraps long lines
            assert out.exit_code == 2, out.output
            assert words in said and "Traceback" not in said, said
        monkeypatch.setenv("ALLOTMENT_TOKEN", world.tokens["lead_other"])
        out = runner.invoke(cli, ["org", "apply", str(new)])
        assert out.exit_code == 2 and "403" in out.output
        out = runner.invoke(cli, ["inventory", "apply", str(inv)])
        assert out.exit_code == 2 and "403" in out.output
        assert snapshot(world) == before
        monkeypatch.setenv("ALLOTMENT_TOKEN", world.tokens["admin"])
        out = runner.invoke(cli, ["org", "apply", str(new)])
        assert out.exit_code == 0, out.output
        assert "renamed llama to llm" in out.output and "applied as org version" in out.output
        out = runner.invoke(cli, ["org", "history"])
        assert out.exit_code == 0 and "renamed llama to llm" in out.output
        out = runner.invoke(cli, ["inventory", "apply", str(inv), "--dry-run"])
        assert out.exit_code == 0 and "added n3" in out.output
        assert len(world.call("admin", "GET", "/v1/inventory").json()["nodes"]) == 2
        out = runner.invoke(cli, ["inventory", "apply", str(inv)])
        assert out.exit_code == 0 and "24 a100 GPUs" in out.output
        out = runner.invoke(cli, ["inventory", "show"])
        assert out.exit_code == 0 and "n3" in out.output


def test_same_org_again_writes_nothing_and_limits_are_in_the_diff(world: World) -> None:
    """Applying the stored org again changes nothing and makes no version; a weight, a
    borrow limit or an idle window changed shows as ``changed``."""
    before = snapshot(world)
    r = put_org(world, org(RESEARCH, PLATFORM))
    assert r.status_code == 200, r.text
    assert r.json()["changes"] == [] and r.json()["version"] is None
    assert snapshot(world) == before
    r = put_org(world, org({"name": "research", "weight": 2, "children": [
        {"name": "llama", "guaranteed": {"a100": 8}, "borrow_limit": {"a100": 4}},
        {"name": "vision", "guaranteed": {"a100": 8}, "idle_window_s": 600}]}, PLATFORM))
    assert r.status_code == 200, r.text
    assert [c["text"] for c in r.json()["changes"]] == [
        "research: weight - -> 2.0", "llama: borrow_limit.a100 - -> 4",
        "vision: idle_window_s - -> 600.0"]


def test_audit_entries_of_former_names_stay_readable_by_the_team(world: World) -> None:
    """After llama is renamed llm and merged into foundation, its members still read the
    audit entries of their jobs written under the old names; vision's members read those
    of llama only once the two are one team."""
    loop = loop_for(world, FakeBackend())
    job = world.submit("member_own", gpus=1)["id"]
    loop.tick()

    def sees(who: str) -> bool:
        items = world.call(who, "GET", "/v1/audit", params={"subject": f"job:{job}"}).json()
        return bool(items["total"])

    assert sees("member_own") and not sees("member_other")
    assert put_org(world, RENAMED).status_code == 200
    assert sees("member_own") and not sees("member_other")
    assert put_org(world, MERGED).status_code == 200
    assert sees("member_own") and sees("member_other")


def test_requests_and_disputes_follow_a_merge(world: World) -> None:
    """Two teams' requests for one period and GPU type become one of the merged team, with
    their GPUs added; a dispute of a merged team is the new team's."""
    for team, gpus in (("llama", 6), ("vision", 3)):
        r = world.call("admin", "POST", "/v1/requests", json={
            "team": team, "period": "2027-01", "gpu_type": "a100", "gpus": gpus,
            "min_gpus": 1})
        assert r.status_code == 201, r.text
    job = world.submit("member_own", gpus=1)["id"]
    d = world.call("lead_own", "POST", "/v1/disputes", json={
        "team": "llama", "subject_kind": "preemption", "subject_id": str(job), "wants": "x",
        "why": "y"})
    assert d.status_code == 201, d.text
    r = put_org(world, org({"name": "research", "children": [
        {"name": "foundation", "merged_from": ["llama", "vision"],
         "guaranteed": {"a100": 16}}]}, PLATFORM))
    assert r.status_code == 200, r.text
    reqs = world.call("admin", "GET", "/v1/requests").json()["items"]
    assert [(q["team"], q["period"], q["gpus"], q["min_gpus"]) for q in reqs] == [
        ("foundation", "2027-01", 9, 2)]
    got = world.call("admin", "GET", f"/v1/disputes/{d.json()['id']}").json()
    assert got["team"] == "foundation"


def test_budgets_and_the_ledger_follow_a_merge(world: World) -> None:
    """Budgets of merged teams add up per period and GPU type; the scheduler memory's
    ledger (GPU-hours used, credit, warnings) moves with them and keeps its other fields."""
    from allotment.domain.cluster import GpuType
    from allotment.storage import budgets as budget_rows
    a100 = GpuType("a100")
    with world.db.session() as s:
        budget_rows.set_period(s, "2026-11", {("llama", a100): 100.0, ("vision", a100): 50.0},
                               "plan")
        ledger = {"period": "2026-11", "time": world.clock(),
                  "used": [["llama", "a100", 7200.0], ["vision", "a100", 3600.0]],
                  "over_since": [["vision", "a100", 5.0]], "warned": [["vision", "a100", 80]],
                  "credit": {"llama": 10.0, "vision": 5.0}}
        repo.set_setting(s, reorg_rows.MEMORY_KEY, json.dumps(
            {"decayed": {}, "reservations": {}, "ledger": ledger}))
    r = put_org(world, org({"name": "research", "children": [
        {"name": "llama", "merged_from": ["llama", "vision"], "guaranteed": {"a100": 16}}]},
        PLATFORM))
    assert r.status_code == 200, r.text
    with world.db.session() as s:
        assert budget_rows.of_period(s, "2026-11") == {("llama", a100): 150.0}
        raw = json.loads(repo.get_setting(s, reorg_rows.MEMORY_KEY) or "{}")
    assert raw["ledger"]["used"] == [["llama", "a100", 10800.0]]
    assert raw["ledger"]["over_since"] == [["llama", "a100", 5.0]]
    assert raw["ledger"]["warned"] == [["llama", "a100", 80]]
    assert raw["ledger"]["credit"] == {"llama": 15.0}
    assert raw["ledger"]["period"] == "2026-11"
