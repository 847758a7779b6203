"""``allot up``, ``serve`` and ``scheduler``: start the service (REST API, dashboard,
scheduler loop and its executor), on SQLite or PostgreSQL, with the local or Slurm backend.

Every command that opens the database takes ``--data-dir`` (``$ALLOTMENT_DATA_DIR``, default
``.allotment``): the audit key and head file live there, so give all processes of one
database the same one."""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from allotment.cli.app import DataDir, DbOpt, _fail, app, console, err_console
from allotment.errors import AllotmentError
from allotment.scheduler.config import DEFAULTS

MAX_BODY_BYTES = 1 << 20  # = service.bounds.MAX_BODY_BYTES (not imported: the CLI stays light)


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
                 webhook: str | None, min_runtime_s: float | None = None,
                 checkpoint_s: float | None = None, las_preemption: str | None = None) -> Any:
    """The loop's settings around one ``SchedulerConfig`` (the defaults of
    ``scheduler.config``, as ``allot simulate`` has them, unless an option says otherwise)."""
    from allotment.scheduler.config import DEFAULTS, LasPreemption
    from allotment.service.loop import LoopConfig

    sched = dataclasses.replace(
        DEFAULTS, policy=policy, grace_s=grace_s,
        min_runtime_s=DEFAULTS.min_runtime_s if min_runtime_s is None else min_runtime_s,
        checkpoint_s=DEFAULTS.checkpoint_s if checkpoint_s is None else checkpoint_s,
        las_preemption=DEFAULTS.las_preemption if las_preemption is None
        else LasPreemption.parse(las_preemption, "las-preemption"))
    return LoopConfig(scheduler=sched, tick_s=tick_s,
                      idle_window_s=idle_window_s, idle_reclaim_after_s=idle_reclaim_after_s,
                      idle_threshold_pct=idle_threshold, escalation_s=escalation_s,
                      webhook_url=webhook)


@dataclasses.dataclass(frozen=True)
class JobAccounts:
    """How the local executor picks a job's Unix account (``backends/accounts.py``)."""

    run_as: Path | None = None
    shared_account: bool = False
    work_dir: Path | None = None  # default: DATA_DIR-work beside the data folder


def _backend(kind: str, data_dir: Path, fake: bool, slurm_conf: str | None,
             database: Any, accounts: JobAccounts | None = None) -> Any:
    runs = data_dir / "runs"
    accounts = accounts or JobAccounts()
    if kind != "local" and accounts.run_as is not None:
        raise AllotmentError("--run-as: only for --backend local (Slurm runs each job as "
                             "the user that submits it)")
    if kind == "slurm":
        from allotment.backends.slurm.backend import SlurmBackend
        from allotment.backends.slurm.cmd import Slurm
        from allotment.storage import repo

        with database.session() as s:
            prefix = f"allot{repo.install_id(s)}"
        return SlurmBackend(Slurm(slurm_conf), runs, prefix=prefix)
    if kind != "local":
        raise AllotmentError(f"--backend: {kind!r} is not a backend (local or slurm)")
    from allotment.backends.accounts import RunAs, load_run_as
    from allotment.backends.local import LocalBackend

    mapping = load_run_as(accounts.run_as) if accounts.run_as is not None else None
    policy = RunAs(mapping, registry=data_dir / "accounts.json",
                   shared_ok=accounts.shared_account)
    work = accounts.work_dir or data_dir.resolve().with_name(data_dir.resolve().name + "-work")
    backend = LocalBackend(runs, fake_gpus=fake, accounts=policy, work_dir=work)
    warning = policy.warning()
    if warning:
        err_console.print(f"[bold yellow]warning:[/] {warning}", highlight=False)
    else:
        how = (f"as mapped in {accounts.run_as}, else " if mapping is not None else "") + (
            "as a uid of each team's own (kept in " f"{data_dir / 'accounts.json'})")
        console.print(f"jobs run {how}, in work folders under {work}", highlight=False)
    return backend


def _serve(db: str | None, host: str, port: int, data_dir: Path, fake: bool,
           with_scheduler: bool, cfg: Any, escalation_s: float,
           on_ready: Any = None, backend: str = "local", slurm_conf: str | None = None,
           web: dict[str, Any] | None = None, max_body_bytes: int = MAX_BODY_BYTES,
           accounts: JobAccounts | None = None) -> None:
    import uvicorn

    from allotment.service.app import create_app
    from allotment.service.loop import SchedulerLoop
    from allotment.service.private import private_service_files
    from allotment.storage.db import Database

    # Many request threads and the scheduler's share one interpreter: hand the GIL over
    # every millisecond instead of every 5, so a thread that holds the database's write
    # lock gets back to work quickly after each call into SQLite (measured: p99 submit
    # latency with 50 clients, benchmarks/submit_load.py)
    sys.setswitchinterval(0.001)
    database = Database(db, data_dir)
    private_service_files(data_dir, database.url)
    database.upgrade()
    database.check_audit_key()
    runs = data_dir / "runs"
    loop = None
    if with_scheduler:  # the API alone runs no jobs: no executor, no accounts to check
        executor = _backend(backend, data_dir, fake, slurm_conf, database, accounts)
        loop = SchedulerLoop(database, executor, cfg)
    api = create_app(database, loop, {"escalation_s": escalation_s, "runs_dir": str(runs),
                                     "reports_dir": str(data_dir / "reports"),
                                     "max_body_bytes": max_body_bytes, **(web or {})})
    server = uvicorn.Server(uvicorn.Config(api, host=host, port=port, log_level="warning"))
    if on_ready is not None:
        def ready() -> None:
            while not server.started:
                time.sleep(0.05)
            on_ready()
        threading.Thread(target=ready, daemon=True).start()
    server.run()


Policy = Annotated[str, typer.Option(help="scheduling policy")]
FakeGpus = Annotated[bool, typer.Option(help="jobs get fake GPUs (no NVML)")]
TickS = Annotated[float, typer.Option(help="seconds between scheduling cycles")]
GraceS = Annotated[float, typer.Option(help="SIGTERM to SIGKILL on preemption")]
MinRuntimeS = Annotated[float, typer.Option(help="never preempt a job younger than this (s)")]
CheckpointS = Annotated[float, typer.Option(
    help="a job's checkpoint interval (s), assumed when it reports none (lost-work estimates)")]
LasPreemptionOpt = Annotated[str, typer.Option(
    help="fairshare: queue-2 jobs a queue-1 job may preempt: none, team or surplus")]
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
SessionTtlS = Annotated[float, typer.Option(min=60, help="a dashboard login lasts this long")]
AuthFailLimit = Annotated[int, typer.Option(min=1, help="failed authentications per client "
                                            "address per window before it gets 429")]
AuthFailWindowS = Annotated[float, typer.Option(min=1, help="the window of --auth-fail-limit")]
PublicOrigin = Annotated[list[str] | None, typer.Option(
    help="origin(s) the dashboard is reached at, e.g. https://gpus.example.org behind a TLS "
    "proxy (form posts must come from one; default: the Host it is reached at)")]
MaxBodyBytes = Annotated[int, typer.Option(
    min=1024, help="largest request body accepted; bigger ones get a 413 before they are "
    "read or authenticated")]
RunAsOpt = Annotated[Path | None, typer.Option(
    "--run-as", help="YAML mapping teams and users to the Unix accounts their jobs run as "
    "(default as root: a uid of each team's own)")]
SharedAccount = Annotated[bool, typer.Option(
    "--shared-account", help="not root: run every team's jobs as this service's own user, "
    "which lets any job read the service's files and other teams' runs")]
WorkDir = Annotated[Path | None, typer.Option(
    help="the jobs' work folders (default DATA_DIR-work, beside the data folder)")]


@app.command()
def serve(
    db: DbOpt = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8787,
    data_dir: DataDir = Path(".allotment"),
    scheduler: Annotated[bool, typer.Option(help="run the scheduler loop in this process")] = True,
    fake_gpus: FakeGpus = False,
    policy: Policy = DEFAULTS.policy,
    tick_s: TickS = 2.0,
    grace_s: GraceS = DEFAULTS.grace_s,
    min_runtime_s: MinRuntimeS = DEFAULTS.min_runtime_s,
    checkpoint_s: CheckpointS = DEFAULTS.checkpoint_s or 1800.0,
    las_preemption: LasPreemptionOpt = str(DEFAULTS.las_preemption),
    idle_window_s: IdleWindowS = 1800.0,
    idle_reclaim_after_s: IdleReclaimAfterS = 600.0,
    idle_threshold: IdleThreshold = 5.0,
    escalation_s: EscalationS = 172800.0,
    webhook: Webhook = None,
    lease_ttl_s: LeaseTtlS = 10.0,
    backend: BackendOpt = "local",
    slurm_conf: SlurmConf = None,
    session_ttl_s: SessionTtlS = 12 * 3600.0,
    auth_fail_limit: AuthFailLimit = 20,
    auth_fail_window_s: AuthFailWindowS = 60.0,
    public_origin: PublicOrigin = None,
    max_body_bytes: MaxBodyBytes = MAX_BODY_BYTES,
    run_as: RunAsOpt = None,
    shared_account: SharedAccount = False,
    work_dir: WorkDir = None,
) -> None:
    """Run the REST API (and, by default, the scheduler loop with the local executor)."""
    try:
        cfg = dataclasses.replace(_loop_config(
            policy, tick_s, grace_s, idle_window_s, idle_reclaim_after_s, idle_threshold,
            escalation_s, webhook, min_runtime_s, checkpoint_s, las_preemption),
            lease_ttl_s=lease_ttl_s)
        web = {"session_ttl_s": session_ttl_s, "auth_fail_limit": auth_fail_limit,
               "auth_fail_window_s": auth_fail_window_s,
               "public_origins": [o.rstrip("/") for o in public_origin or []]}
        _serve(db, host, port, data_dir, fake_gpus, scheduler, cfg, escalation_s,
               backend=backend, slurm_conf=slurm_conf, web=web,
               max_body_bytes=max_body_bytes,
               accounts=JobAccounts(run_as, shared_account, work_dir))
    except AllotmentError as exc:
        _fail(exc)


@app.command("scheduler")
def scheduler_cmd(
    db: DbOpt = None,
    data_dir: DataDir = Path(".allotment"),
    fake_gpus: FakeGpus = False,
    policy: Policy = DEFAULTS.policy,
    tick_s: TickS = 2.0,
    grace_s: GraceS = DEFAULTS.grace_s,
    min_runtime_s: MinRuntimeS = DEFAULTS.min_runtime_s,
    checkpoint_s: CheckpointS = DEFAULTS.checkpoint_s or 1800.0,
    las_preemption: LasPreemptionOpt = str(DEFAULTS.las_preemption),
    idle_window_s: IdleWindowS = 1800.0,
    idle_reclaim_after_s: IdleReclaimAfterS = 600.0,
    idle_threshold: IdleThreshold = 5.0,
    escalation_s: EscalationS = 172800.0,
    webhook: Webhook = None,
    lease_ttl_s: LeaseTtlS = 10.0,
    backend: BackendOpt = "local",
    slurm_conf: SlurmConf = None,
    run_as: RunAsOpt = None,
    shared_account: SharedAccount = False,
    work_dir: WorkDir = None,
) -> None:
    """Run only the scheduler loop and its executor (the API runs elsewhere)."""
    from allotment.service.loop import SchedulerLoop
    from allotment.service.private import private_service_files
    from allotment.storage.db import Database

    try:
        cfg = dataclasses.replace(_loop_config(
            policy, tick_s, grace_s, idle_window_s, idle_reclaim_after_s, idle_threshold,
            escalation_s, webhook, min_runtime_s, checkpoint_s, las_preemption),
            lease_ttl_s=lease_ttl_s)
        database = Database(db, data_dir)
        private_service_files(data_dir, database.url)
        database.upgrade()
        database.check_audit_key()
        executor = _backend(backend, data_dir, fake_gpus, slurm_conf, database,
                            JobAccounts(run_as, shared_account, work_dir))
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
    policy: Policy = DEFAULTS.policy,
    grace_s: GraceS = DEFAULTS.grace_s,
    max_body_bytes: MaxBodyBytes = MAX_BODY_BYTES,
    run_as: RunAsOpt = None,
    shared_account: SharedAccount = False,
    work_dir: WorkDir = None,
) -> None:
    """Start the service, scheduler and local executor on SQLite, on this machine.

    The first start creates an admin (its token goes to the client config file), this
    machine as the inventory and a one-team org; ``--demo`` then plays a short scenario.
    """
    from allotment.backends.accounts import can_switch_accounts, service_account
    from allotment.service.client import write_config
    from allotment.service.private import private_service_files
    from allotment.storage import repo
    from allotment.storage.db import Database

    url = f"http://127.0.0.1:{port}"
    db = db or os.environ.get("ALLOTMENT_DB") or (
        f"sqlite:///{(data_dir / 'allotment.db').resolve()}")
    if demo and not shared_account and run_as is None and not can_switch_accounts():
        shared_account = True  # the demo's two teams, on a machine where we are not root
        console.print(f"demo: not root, so the jobs of both demo teams run as your own user "
                      f"{service_account().name} (--shared-account); as root each team's "
                      "jobs run as an account of its own", highlight=False)
    accounts = JobAccounts(run_as, shared_account, work_dir)
    try:
        private_service_files(data_dir, db)
        database = Database(db, data_dir)
        database.upgrade()
        database.check_audit_key()
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
    # the demo plays in seconds what takes minutes: a job it reclaims is seconds old
    cfg = _loop_config(policy, 1.0 if demo else 2.0, 3.0 if demo else grace_s,
                       20.0 if demo else 1800.0, 10.0 if demo else 600.0, 5.0, 172800.0, None,
                       min_runtime_s=0.0 if demo else None)
    console.print(f"Allotment on {url} (dashboard {url}/ui, API docs {url}/docs), "
                  f"database {db}")
    if not demo:
        try:
            _serve(db, "127.0.0.1", port, data_dir, fake, True, cfg, 172800.0,
                   max_body_bytes=max_body_bytes, accounts=accounts)
        except AllotmentError as exc:
            _fail(exc)
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

    try:
        _serve(db, "127.0.0.1", port, data_dir, fake, True, cfg, 172800.0, on_ready=go,
               max_body_bytes=max_body_bytes, accounts=accounts)
    except AllotmentError as exc:
        _fail(exc)
    if "error" in holder:
        err_console.print(f"[bold red]demo failed:[/] {holder['error']}")
        raise typer.Exit(1)
