"""CLI commands for the service: start it (``up``, ``serve``, ``scheduler``), administer the
database (``admin create-user``, ``audit verify``), and talk to it over HTTP (``submit``,
``jobs``, ``why``, ``cancel``, ``usage``, ``dispute``, ``login``)."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import signal
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from allotment.cli.main import _fail, app, console, err_console
from allotment.errors import AllotmentError

admin_app = typer.Typer(no_args_is_help=True, help="Administer the database directly.")
audit_app = typer.Typer(no_args_is_help=True, help="The hash-chained audit log.")
dispute_app = typer.Typer(no_args_is_help=True, help="File, list and resolve disputes.")
app.add_typer(admin_app, name="admin")
app.add_typer(audit_app, name="audit")
app.add_typer(dispute_app, name="dispute")

DbOpt = Annotated[str | None, typer.Option("--db", help="database URL (default $ALLOTMENT_DB "
                                           "or sqlite:///./allotment.db)")]


def _client() -> Any:
    from allotment.service.client import Client

    return Client()


def _call(method: str, path: str, **kw: Any) -> Any:
    try:
        return _client().call(method, path, **kw)
    except AllotmentError as exc:
        _fail(exc)


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


# -- database administration ----------------------------------------------------------
@admin_app.command("create-user")
def create_user(
    name: Annotated[str, typer.Argument(help="user name")],
    role: Annotated[str, typer.Option(help="member, lead or admin")] = "admin",
    team: Annotated[str | None, typer.Option(help="team or org node (not for admins)")] = None,
    db: DbOpt = None,
) -> None:
    """Create a user (the first admin, typically) and print its API token once."""
    from allotment.storage import repo
    from allotment.storage.db import Database

    try:
        database = Database(db)
        database.upgrade()
        with database.session() as s:
            _, token = repo.create_user(s, name, role, team, time.time(), "cli")
    except AllotmentError as exc:
        _fail(exc)
        return
    console.print(f"created {role} {name}; API token (shown once):")
    print(token)


@audit_app.command("verify")
def audit_verify(db: DbOpt = None) -> None:
    """Recompute the audit chain; exit 1 if any entry was edited or deleted."""
    from allotment.storage import audit
    from allotment.storage.db import Database

    try:
        database = Database(db)
        with database.session() as s:
            result = audit.verify(s)
    except AllotmentError as exc:
        _fail(exc)
        return
    if result.ok:
        console.print(f"audit log OK: {result.entries} entries, chain intact")
        return
    for p in result.problems:
        err_console.print(f"[bold red]audit:[/] {p}", highlight=False)
    raise typer.Exit(1)


# -- running the service --------------------------------------------------------------
def _inventory_here(fake_gpus: int | None, gpu_type: str | None) -> list[dict[str, Any]]:
    """This machine as one node: its NVIDIA GPUs, or ``fake_gpus`` fake ones."""
    if fake_gpus is None:
        from allotment.reclaim.nvml import NvmlSampler

        nv = NvmlSampler()
        if nv.available():
            n = nv.device_count()
            name = gpu_type or "gpu"
            if gpu_type is None:
                try:
                    raw = nv._nvml.nvmlDeviceGetName(nv._nvml.nvmlDeviceGetHandleByIndex(0))
                    raw = raw.decode() if isinstance(raw, bytes) else str(raw)
                    name = raw.replace("NVIDIA", "").strip().split()[0].lower() or "gpu"
                except Exception:
                    name = "gpu"
            nv.close()
            return [{"name": "local", "gpu_type": name, "gpus": n}]
        fake_gpus = 8
        err_console.print("no NVIDIA GPU here: running with --fake-gpus 8")
    return [{"name": "local", "gpu_type": gpu_type or "fake", "gpus": fake_gpus}]


def _loop_config(policy: str, tick_s: float, grace_s: float, idle_window_s: float,
                 idle_reclaim_after_s: float, idle_threshold: float, escalation_s: float,
                 webhook: str | None) -> Any:
    from allotment.scheduler.config import DEFAULTS
    from allotment.service.loop import LoopConfig

    sched = dataclasses.replace(DEFAULTS, policy=policy, grace_s=grace_s)
    return LoopConfig(scheduler=sched, tick_s=tick_s,
                      idle_window_s=idle_window_s, idle_reclaim_after_s=idle_reclaim_after_s,
                      idle_threshold_pct=idle_threshold, escalation_s=escalation_s,
                      webhook_url=webhook)


def _backend(kind: str, data_dir: Path, fake: bool, slurm_conf: str | None,
             database: Any) -> Any:
    runs = data_dir / "runs"
    if kind == "slurm":
        from allotment.backends.slurm.backend import SlurmBackend
        from allotment.backends.slurm.cmd import Slurm
        from allotment.storage import repo

        with database.session() as s:
            prefix = f"allot{repo.install_id(s)}"
        return SlurmBackend(Slurm(slurm_conf), runs, prefix=prefix)
    if kind != "local":
        raise AllotmentError(f"--backend: {kind!r} is not a backend (local or slurm)")
    from allotment.backends.local import LocalBackend

    return LocalBackend(runs, fake_gpus=fake)


def _serve(db: str | None, host: str, port: int, data_dir: Path, fake: bool,
           with_scheduler: bool, cfg: Any, escalation_s: float,
           on_ready: Any = None, backend: str = "local", slurm_conf: str | None = None) -> None:
    import uvicorn

    from allotment.service.app import create_app
    from allotment.service.loop import SchedulerLoop
    from allotment.storage.db import Database

    database = Database(db)
    database.upgrade()
    runs = data_dir / "runs"
    executor = _backend(backend, data_dir, fake, slurm_conf, database)
    loop = SchedulerLoop(database, executor, cfg) if with_scheduler else None
    api = create_app(database, loop, {"escalation_s": escalation_s, "runs_dir": str(runs),
                                     "reports_dir": str(data_dir / "reports")})
    server = uvicorn.Server(uvicorn.Config(api, host=host, port=port, log_level="warning"))
    if on_ready is not None:
        def ready() -> None:
            while not server.started:
                time.sleep(0.05)
            on_ready()
        threading.Thread(target=ready, daemon=True).start()
    server.run()


Policy = Annotated[str, typer.Option(help="scheduling policy")]
DataDir = Annotated[Path, typer.Option(help="logs and run folders")]
FakeGpus = Annotated[bool, typer.Option(help="jobs get fake GPUs (no NVML)")]
TickS = Annotated[float, typer.Option(help="seconds between scheduling cycles")]
GraceS = Annotated[float, typer.Option(help="SIGTERM to SIGKILL on preemption")]
IdleWindowS = Annotated[float, typer.Option(help="idle this long: warned")]
IdleReclaimAfterS = Annotated[float, typer.Option(help="then reclaimed after")]
IdleThreshold = Annotated[float, typer.Option(help="idle below this % utilisation")]
EscalationS = Annotated[float, typer.Option(help="dispute escalates after")]
Webhook = Annotated[str | None, typer.Option(help="URL to POST idle warnings to")]
BackendOpt = Annotated[str, typer.Option("--backend", help="where jobs run: local or slurm")]
SlurmConf = Annotated[str | None, typer.Option(help="slurm.conf for the slurm backend "
                                               "(default $SLURM_CONF)")]
LeaseTtlS = Annotated[float, typer.Option(help="another scheduler may take over after this "
                                          "long without a tick")]


@app.command()
def serve(
    db: DbOpt = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8787,
    data_dir: DataDir = Path(".allotment"),
    scheduler: Annotated[bool, typer.Option(help="run the scheduler loop in this process")] = True,
    fake_gpus: FakeGpus = False,
    policy: Policy = "fairshare",
    tick_s: TickS = 2.0,
    grace_s: GraceS = 60.0,
    idle_window_s: IdleWindowS = 1800.0,
    idle_reclaim_after_s: IdleReclaimAfterS = 600.0,
    idle_threshold: IdleThreshold = 5.0,
    escalation_s: EscalationS = 172800.0,
    webhook: Webhook = None,
    lease_ttl_s: LeaseTtlS = 10.0,
    backend: BackendOpt = "local",
    slurm_conf: SlurmConf = None,
) -> None:
    """Run the REST API (and, by default, the scheduler loop with the local executor)."""
    try:
        cfg = dataclasses.replace(_loop_config(
            policy, tick_s, grace_s, idle_window_s, idle_reclaim_after_s, idle_threshold,
            escalation_s, webhook), lease_ttl_s=lease_ttl_s)
        _serve(db, host, port, data_dir, fake_gpus, scheduler, cfg, escalation_s,
               backend=backend, slurm_conf=slurm_conf)
    except AllotmentError as exc:
        _fail(exc)


@app.command("scheduler")
def scheduler_cmd(
    db: DbOpt = None,
    data_dir: DataDir = Path(".allotment"),
    fake_gpus: FakeGpus = False,
    policy: Policy = "fairshare",
    tick_s: TickS = 2.0,
    grace_s: GraceS = 60.0,
    idle_window_s: IdleWindowS = 1800.0,
    idle_reclaim_after_s: IdleReclaimAfterS = 600.0,
    idle_threshold: IdleThreshold = 5.0,
    escalation_s: EscalationS = 172800.0,
    webhook: Webhook = None,
    lease_ttl_s: LeaseTtlS = 10.0,
    backend: BackendOpt = "local",
    slurm_conf: SlurmConf = None,
) -> None:
    """Run only the scheduler loop and its executor (the API runs elsewhere)."""
    from allotment.service.loop import SchedulerLoop
    from allotment.storage.db import Database

    try:
        cfg = dataclasses.replace(_loop_config(
            policy, tick_s, grace_s, idle_window_s, idle_reclaim_after_s, idle_threshold,
            escalation_s, webhook), lease_ttl_s=lease_ttl_s)
        database = Database(db)
        database.upgrade()
        executor = _backend(backend, data_dir, fake_gpus, slurm_conf, database)
        loop = SchedulerLoop(database, executor, cfg)
    except AllotmentError as exc:
        _fail(exc)
        return
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    console.print(f"scheduler {loop.holder} running ({cfg.scheduler.policy}, "
                  f"every {cfg.tick_s:g} s)")
    loop.run(stop)
    loop.release()


@app.command()
def up(
    port: Annotated[int, typer.Option(help="port")] = 8787,
    db: DbOpt = None,
    data_dir: DataDir = Path(".allotment"),
    fake_gpus: Annotated[int | None, typer.Option(
        help="pretend this machine has N GPUs (default: its NVIDIA GPUs, else 8 fake)")] = None,
    gpu_type: Annotated[str | None, typer.Option(help="GPU type name of this machine")] = None,
    demo: Annotated[bool, typer.Option(help="run the scripted demo, then stop")] = False,
    policy: Policy = "fairshare",
    grace_s: GraceS = 60.0,
) -> None:
    """Start the service, scheduler and local executor on SQLite, on this machine.

    The first start creates an admin (its token goes to the client config file), this
    machine as the inventory and a one-team org; ``--demo`` then plays a short scenario.
    """
    from allotment.service.client import write_config
    from allotment.storage import repo
    from allotment.storage.db import Database

    url = f"http://127.0.0.1:{port}"
    data_dir.mkdir(parents=True, exist_ok=True)
    db = db or os.environ.get("ALLOTMENT_DB") or (
        f"sqlite:///{(data_dir / 'allotment.db').resolve()}")
    try:
        database = Database(db)
        database.upgrade()
        nodes = _inventory_here(fake_gpus, gpu_type)
        with database.session() as s:
            now = time.time()
            if not repo.node_rows(s):
                repo.set_inventory(s, [repo.NodeSpec(**n) for n in nodes], "allot-up", now)
            if not repo.org_rows(s):
                repo.set_org(s, {"org": [{"name": "default"}]}, "allot-up", now)
            token = None
            if repo.count_users(s) == 0:
                _, token = repo.create_user(s, "admin", "admin", None, now, "allot-up")
        database.dispose()
    except AllotmentError as exc:
        _fail(exc)
        return
    if token is not None:
        path = write_config(url, token)
        console.print(f"created user admin; token saved to {path}")
    fake = fake_gpus is not None or nodes[0]["gpu_type"] == (gpu_type or "fake")
    cfg = _loop_config(policy, 1.0 if demo else 2.0, 3.0 if demo else grace_s,
                       20.0 if demo else 1800.0, 10.0 if demo else 600.0, 5.0, 172800.0, None)
    console.print(f"Allotment on {url} (dashboard {url}/ui, API docs {url}/docs), "
                  f"database {db}")
    if not demo:
        _serve(db, "127.0.0.1", port, data_dir, fake, True, cfg, 172800.0)
        return
    from allotment.service.demo import run_demo

    holder: dict[str, Any] = {}

    def go() -> None:
        try:
            holder["ok"] = run_demo(url, data_dir, console)
        except Exception as exc:  # shown, then the server stops
            holder["error"] = exc
        finally:
            os.kill(os.getpid(), signal.SIGINT)

    _serve(db, "127.0.0.1", port, data_dir, fake, True, cfg, 172800.0, on_ready=go)
    if "error" in holder:
        err_console.print(f"[bold red]demo failed:[/] {holder['error']}")
        raise typer.Exit(1)


# -- client commands ------------------------------------------------------------------
@app.command()
def login(url: Annotated[str, typer.Option(help="service URL")],
          token: Annotated[str, typer.Option(help="API token")]) -> None:
    """Save the service URL and token for the other commands."""
    from allotment.service.client import write_config

    path = write_config(url, token)
    me = _call("GET", "/v1/me")
    console.print(f"logged in as {me['name']} ({me['role']}); saved to {path}")


@app.command()
def submit(
    command: Annotated[list[str], typer.Argument(help="the command (after --)")],
    team: Annotated[str, typer.Option(help="team")],
    gpus: Annotated[int, typer.Option(help="GPUs (gang, all-or-nothing)")] = 1,
    gpu_type: Annotated[str | None, typer.Option(help="GPU type (default: the only one)")]
    = None,
    name: Annotated[str, typer.Option(help="job name")] = "",
    priority: Annotated[str, typer.Option(help="low, normal or high")] = "normal",
    preemptible: Annotated[bool, typer.Option(help="may be preempted when borrowing")] = True,
    time_limit_s: Annotated[float | None, typer.Option(help="time limit (estimates)")] = None,
) -> None:
    """Submit a job: allot submit --team llama --gpus 8 -- python train.py"""
    if gpu_type is None:
        inv = _call("GET", "/v1/inventory")
        types = sorted(inv["gpus_by_type"])
        if len(types) != 1:
            _fail(AllotmentError(f"gpu_type: choose one of {types} with --gpu-type"))
        gpu_type = types[0]
    job = _call("POST", "/v1/jobs", json={
        "team": team, "gpu_type": gpu_type, "gpus": gpus, "command": shlex.join(command),
        "name": name, "priority_class": priority, "preemptible": preemptible,
        "time_limit_s": time_limit_s})
    console.print(f"submitted job {job['id']} ({gpus} {gpu_type} GPUs for team {team})")


@app.command()
def jobs(state: Annotated[list[str] | None, typer.Option(help="filter by state")] = None,
         team: Annotated[str | None, typer.Option(help="filter by team")] = None,
         limit: Annotated[int, typer.Option(help="at most this many")] = 50,
         as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Your teams' jobs, newest first, with their state and why they wait."""
    params: dict[str, Any] = {"limit": limit}
    if state:
        params["state"] = state
    if team:
        params["team"] = team
    page = _call("GET", "/v1/jobs", params=params)
    if as_json:
        print(json.dumps(page, indent=2))
        return
    t = Table(title=f"{len(page['items'])} of {page['total']} jobs")
    for col in ("id", "team", "user", "gpus", "state", "queue", "est. start", "why"):
        t.add_column(col, overflow="fold")
    for j in page["items"]:
        t.add_row(str(j["id"]), j["team"], j["user"], f"{j['gpus']} {j['gpu_type']}", j["state"],
                  str(j["queue_position"] or "-"), _when(j["estimated_start"]), j["reason"])
    console.print(t)


@app.command()
def why(job_id: Annotated[int, typer.Argument(help="job id")]) -> None:
    """Where a job stands and why, in words."""
    j = _call("GET", f"/v1/jobs/{job_id}")
    console.print(f"job {j['id']} of team {j['team']}: [bold]{j['state']}[/]")
    if j["state"] == "pending":
        console.print(f"  queue position {j['queue_position'] or '-'} among "
                      f"{j['gpu_type']} jobs; estimated start {_when(j['estimated_start'])}")
    console.print(f"  why: {j['reason']}", highlight=False)
    if j["placement"]:
        console.print(f"  on {j['placement']}, {j['borrowed_gpus']} GPUs borrowed")
    if j["preemptions"]:
        console.print(f"  preempted {j['preemptions']} time(s); last: {j['stop_reason']}")


@app.command()
def cancel(job_id: Annotated[int, typer.Argument(help="job id")]) -> None:
    """Cancel a job (a running one gets SIGTERM, then SIGKILL after the grace period)."""
    j = _call("POST", f"/v1/jobs/{job_id}/cancel")
    console.print(f"job {j['id']}: {j['state']}")


@app.command()
def usage(period: Annotated[str | None, typer.Option(help="YYYY-MM (default: now)")] = None,
          as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """GPU-hours per team: used, borrowed, lent, idle-allocated, and the hoarding score."""
    rows = _call("GET", "/v1/usage", params={"period": period} if period else {})
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    t = Table(title=f"Usage {period or 'this month'} (GPU-hours)")
    for col in ("team", "type", "used", "borrowed", "lent", "idle-allocated", "guaranteed",
                "hoarding"):
        t.add_column(col, justify="left" if col in ("team", "type") else "right")
    for r in rows:
        t.add_row(r["team"], r["gpu_type"], f"{r['used_gpu_hours']:.2f}",
                  f"{r['borrowed_gpu_hours']:.2f}", f"{r['lent_gpu_hours']:.2f}",
                  f"{r['idle_allocated_gpu_hours']:.2f}", f"{r['guaranteed_gpu_hours']:.2f}",
                  f"{r['hoarding_score']:.2f}")
    console.print(t)


@dispute_app.command("file")
def dispute_file(
    team: Annotated[str, typer.Option(help="your team")],
    wants: Annotated[str, typer.Option(help="what the team wants")],
    why_: Annotated[str, typer.Option("--why", help="why")],
    plan: Annotated[int | None, typer.Option(help="the plan disputed")] = None,
    preemption: Annotated[int | None, typer.Option(help="the preempted job disputed")] = None,
    gpu_type: Annotated[str | None, typer.Option(help="GPU type of the quota asked")] = None,
    gpus: Annotated[int | None, typer.Option(help="guaranteed GPUs asked")] = None,
    period: Annotated[str | None, typer.Option(help="period YYYY-MM of the quota")] = None,
) -> None:
    """File a dispute about a plan or a preemption (leads)."""
    if (plan is None) == (preemption is None):
        _fail(AllotmentError("subject: give exactly one of --plan or --preemption"))
    d = _call("POST", "/v1/disputes", json={
        "team": team, "subject_kind": "plan" if plan is not None else "preemption",
        "subject_id": str(plan if plan is not None else preemption), "wants": wants,
        "why": why_, "gpu_type": gpu_type, "wanted_gpus": gpus, "period": period})
    console.print(f"dispute {d['id']} filed; assigned to {d['assigned_to'] or 'the admins'}")


@dispute_app.command("list")
def dispute_list() -> None:
    """Disputes you can see, with their escalation level."""
    page = _call("GET", "/v1/disputes")
    t = Table(title="Disputes")
    for col in ("id", "team", "subject", "state", "assigned to", "level", "wants", "decision"):
        t.add_column(col, overflow="fold")
    for d in page["items"]:
        t.add_row(str(d["id"]), d["team"], f"{d['subject_kind']} {d['subject_id']}", d["state"],
                  d["assigned_to"] or "admins", str(d["level"]), d["wants"],
                  f"{d['decision'] or '-'}: {d['decision_reason'] or ''}")
    console.print(t)


@dispute_app.command("resolve")
def dispute_resolve(
    dispute_id: Annotated[int, typer.Argument(help="dispute id")],
    decision: Annotated[str, typer.Option(help="granted, partially_granted or denied")],
    reason: Annotated[str, typer.Option(help="why")],
    guaranteed: Annotated[int | None, typer.Option(help="new guarantee for the period")] = None,
) -> None:
    """Resolve a dispute assigned to you (or any, as admin)."""
    d = _call("POST", f"/v1/disputes/{dispute_id}/resolve", json={
        "decision": decision, "reason": reason, "guaranteed": guaranteed})
    console.print(f"dispute {d['id']}: {d['decision']}")


def plan_publish(scenario: Path | None, plan_id: int | None) -> None:
    """``allot plan publish FILE`` (run and publish) or ``allot plan publish --id N``."""
    from allotment.cli.main import load_yaml

    if plan_id is None:
        if scenario is None:
            _fail(AllotmentError("scenario: give a scenario file or --id of a draft plan"))
            return
        try:
            data = load_yaml(scenario, "scenario")
        except AllotmentError as exc:
            _fail(exc)
            return
        draft = _call("POST", "/v1/plans", json={"scenario": json.loads(
            json.dumps(data, default=str))})
        plan_id = draft["id"]
    p = _call("POST", f"/v1/plans/{plan_id}/publish")
    console.print(f"plan {p['id']} published for {p['period']}: "
                  + ", ".join(f"{a['team']} {a['allocated']} {a['gpu_type']}"
                              for a in p["result"]["teams"].values()))
