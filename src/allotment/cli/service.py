"""``allot up``, ``serve`` and ``scheduler``: start the service (REST API, dashboard,
scheduler loop and its executor), on SQLite or PostgreSQL, with the local or Slurm backend.

Every command that opens the database takes ``--data-dir`` (``$ALLOTMENT_DATA_DIR``, default
``.allotment``): the audit key and head file live there, so give all processes of one
database the same one."""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from allotment.cli.app import DataDir, DbOpt, _fail, app, console, database_at, err_console
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
                 checkpoint_s: float | None = None, las_preemption: str | None = None,
                 credit_half_life_s: float | None = None,
                 credit_cap: float | None = None) -> Any:
    """The loop's settings around one ``SchedulerConfig`` (the defaults of
    ``scheduler.config``, as ``allot simulate`` has them, unless an option says otherwise)."""
    from allotment.scheduler.config import DEFAULTS, LasPreemption
    from allotment.service.loop import LoopConfig

    sched = dataclasses.replace(
        DEFAULTS, policy=policy, grace_s=grace_s,
        min_runtime_s=DEFAULTS.min_runtime_s if min_runtime_s is None else min_runtime_s,
        checkpoint_s=DEFAULTS.checkpoint_s if checkpoint_s is None else checkpoint_s,
        las_preemption=DEFAULTS.las_preemption if las_preemption is None
        else LasPreemption.parse(las_preemption, "las-preemption"),
        credit_half_life_s=credit_half_life_s,
        credit_cap=DEFAULTS.credit_cap if credit_cap is None else credit_cap)
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
           accounts: JobAccounts | None = None,
           metrics: tuple[str, int | None] = ("127.0.0.1", None)) -> None:
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
    if database.engine.dialect.name == "sqlite":  # local files: cheap to hold open
        database.open_pool(50)
    runs = data_dir / "runs"
    loop = None
    if with_scheduler:  # the API alone runs no jobs: no executor, no accounts to check
        executor = _backend(backend, data_dir, fake, slurm_conf, database, accounts)
        loop = SchedulerLoop(database, executor, cfg)
    api = create_app(database, loop, {"escalation_s": escalation_s, "runs_dir": str(runs),
                                     "reports_dir": str(data_dir / "reports"),
                                     "max_body_bytes": max_body_bytes, **(web or {})})
    from allotment.service.client import SERVER_KEEPALIVE_S

    # idle connections are closed by the clients first (see service.client)
    stop_metrics = _metrics(metrics, database, loop)
    # logging is ours (allotment.logs: one format); requests are logged by RequestLog
    server = _server_class()(uvicorn.Config(api, host=host, port=port, log_config=None,
                                            access_log=False,
                                            timeout_keep_alive=SERVER_KEEPALIVE_S))
    if on_ready is not None:
        def ready() -> None:
            while not server.started:
                if server.should_exit:
                    return
                time.sleep(0.05)
            on_ready(server)
        threading.Thread(target=ready, daemon=True).start()
    try:
        server.run()
    finally:
        stop_metrics()


def _metrics(where: tuple[str, int | None], database: Any, loop: Any) -> Any:
    """Serve ``/metrics`` on ``where`` (host, port), if a port is given: the database's
    series (with ``database``) and the loop's (with ``loop``). Returns ``stop``."""
    host, port = where
    if port is None:
        return lambda: None
    from allotment.service.metrics import registry_for, serve_metrics

    try:
        stop = serve_metrics(registry_for(database, loop), host, port)
    except OSError as exc:
        raise AllotmentError(f"--metrics-port {port}: cannot listen on {host}: "
                             f"{exc.strerror}") from None
    console.print(f"metrics on http://{host}:{port}/metrics", highlight=False)
    return stop


def _server_class() -> Any:
    import uvicorn

    class StopCleanly(uvicorn.Server):
        """uvicorn's server, except that a stop asked for with Ctrl-C or SIGTERM ends the
        process with status 0: uvicorn re-raises the signal after its shutdown, which
        ends the process as killed by it (status 130 for Ctrl-C)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            handled = (signal.SIGINT, signal.SIGTERM)
            before = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in before.items():
                    signal.signal(sig, handler)

    return StopCleanly


Policy = Annotated[str, typer.Option(help="scheduling policy")]
FakeGpus = Annotated[bool, typer.Option(help="jobs get fake GPUs (no NVML)")]
TickS = Annotated[float, typer.Option(help="seconds between scheduling cycles")]
GraceS = Annotated[float, typer.Option(help="SIGTERM to SIGKILL on preemption")]
MinRuntimeS = Annotated[float, typer.Option(help="never preempt a job younger than this (s)")]
CheckpointS = Annotated[float, typer.Option(
    help="a job's checkpoint interval (s), assumed when it reports none (lost-work estimates)")]
LasPreemptionOpt = Annotated[str, typer.Option(
    help="fairshare: queue-2 jobs a queue-1 job may preempt: none, team or surplus")]
CreditHalfLifeS = Annotated[float | None, typer.Option(
    help="credit for lending: its half-life in s (off without it)")]
CreditCap = Annotated[float, typer.Option(
    help="credit cap: this many x guarantee x credit half-life")]
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
MetricsPort = Annotated[int | None, typer.Option(
    min=1, max=65535, help="serve Prometheus metrics, unauthenticated, at "
    "http://METRICS_HOST:PORT/metrics (default: none)")]
MetricsHost = Annotated[str, typer.Option(help="the address of --metrics-port")]
LogFormat = Annotated[str | None, typer.Option(
    help="log lines for people (text) or JSON lines (json); default $ALLOTMENT_LOG_FORMAT, "
    "else text")]


def _logging(fmt: str | None, quiet: bool = False) -> None:
    """The one logging setup of every service process (``allotment.logs``); ``quiet``
    (``allot up``, whose console is the user's): warnings and errors only."""
    import logging

    from allotment.logs import setup_logging

    try:
        setup_logging(fmt, logging.WARNING if quiet else logging.INFO)
    except ValueError as exc:
        _fail(AllotmentError(str(exc)))


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
    credit_half_life_s: CreditHalfLifeS = DEFAULTS.credit_half_life_s,
    credit_cap: CreditCap = DEFAULTS.credit_cap,
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
    create_db: Annotated[bool, typer.Option(
        "--create-db", help="make the SQLite database if it does not exist (else a missing "
        "one is refused)")] = False,
    metrics_port: MetricsPort = None,
    metrics_host: MetricsHost = "127.0.0.1",
    log_format: LogFormat = None,
) -> None:
    """Run the REST API (and, by default, the scheduler loop with the local executor)."""
    _logging(log_format)
    try:
        db = database_at(db, data_dir, create=create_db)
        cfg = dataclasses.replace(_loop_config(
            policy, tick_s, grace_s, idle_window_s, idle_reclaim_after_s, idle_threshold,
            escalation_s, webhook, min_runtime_s, checkpoint_s, las_preemption,
            credit_half_life_s, credit_cap),
            lease_ttl_s=lease_ttl_s)
        web = {"session_ttl_s": session_ttl_s, "auth_fail_limit": auth_fail_limit,
               "auth_fail_window_s": auth_fail_window_s,
               "public_origins": [o.rstrip("/") for o in public_origin or []]}
        _serve(db, host, port, data_dir, fake_gpus, scheduler, cfg, escalation_s,
               backend=backend, slurm_conf=slurm_conf, web=web,
               max_body_bytes=max_body_bytes,
               accounts=JobAccounts(run_as, shared_account, work_dir),
               metrics=(metrics_host, metrics_port))
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
    credit_half_life_s: CreditHalfLifeS = DEFAULTS.credit_half_life_s,
    credit_cap: CreditCap = DEFAULTS.credit_cap,
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
    metrics_port: MetricsPort = None,
    metrics_host: MetricsHost = "127.0.0.1",
    log_format: LogFormat = None,
) -> None:
    """Run only the scheduler loop and its executor (the API runs elsewhere)."""
    _logging(log_format)
    from allotment.service.loop import SchedulerLoop
    from allotment.service.private import private_service_files
    from allotment.storage.db import Database

    try:
        cfg = dataclasses.replace(_loop_config(
            policy, tick_s, grace_s, idle_window_s, idle_reclaim_after_s, idle_threshold,
            escalation_s, webhook, min_runtime_s, checkpoint_s, las_preemption,
            credit_half_life_s, credit_cap),
            lease_ttl_s=lease_ttl_s)
        database = Database(database_at(db, data_dir), data_dir)
        private_service_files(data_dir, database.url)
        database.upgrade()
        database.check_audit_key()
        executor = _backend(backend, data_dir, fake_gpus, slurm_conf, database,
                            JobAccounts(run_as, shared_account, work_dir))
        loop = SchedulerLoop(database, executor, cfg)
        # the loop's own series (the API's process serves the database's)
        stop_metrics = _metrics((metrics_host, metrics_port), None, loop)
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
    stop_metrics()


@app.command()
def up(
    port: Annotated[int, typer.Option(help="port")] = 8787,
    db: DbOpt = None,
    data_dir: DataDir = Path(".allotment"),
    fake_gpus: Annotated[int | None, typer.Option(
        help="pretend this machine has N GPUs (default: its NVIDIA GPUs, else 8 fake)")] = None,
    gpu_type: Annotated[str | None, typer.Option(help="GPU type name of this machine")] = None,
    demo: Annotated[bool, typer.Option(help="run the scripted demo, then keep serving")] = False,
    exit_after_demo: Annotated[bool, typer.Option(
        help="with --demo: stop once the demo is done")] = False,
    policy: Policy = DEFAULTS.policy,
    grace_s: GraceS = DEFAULTS.grace_s,
    min_runtime_s: MinRuntimeS = DEFAULTS.min_runtime_s,
    max_body_bytes: MaxBodyBytes = MAX_BODY_BYTES,
    run_as: RunAsOpt = None,
    shared_account: SharedAccount = False,
    work_dir: WorkDir = None,
    metrics_port: MetricsPort = None,
    metrics_host: MetricsHost = "127.0.0.1",
    log_format: LogFormat = None,
) -> None:
    """Start the service, scheduler and local executor on SQLite, on this machine.

    The first start creates an admin (its token goes to the client config file), this
    machine as the inventory and a one-team org; ``--demo`` then plays a short scenario.
    """
    _logging(log_format, quiet=True)
    from allotment.backends.accounts import can_switch_accounts, service_account
    from allotment.service.client import config_path, write_config
    from allotment.service.private import private_service_files
    from allotment.storage import repo
    from allotment.storage.db import Database

    url = f"http://127.0.0.1:{port}"
    if demo and not shared_account and run_as is None and not can_switch_accounts():
        shared_account = True  # the demo's two teams, on a machine where we are not root
        console.print(f"demo: not root, so the jobs of both demo teams run as your own user "
                      f"{service_account().name} (--shared-account); as root each team's "
                      "jobs run as an account of its own", highlight=False)
    accounts = JobAccounts(run_as, shared_account, work_dir)
    try:
        db = database_at(db, data_dir, create=True)  # the first start makes it
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
                       min_runtime_s=0.0 if demo else min_runtime_s)
    console.print(f"Allotment on {url} (dashboard {url}/ui, API docs {url}/docs), "
                  f"database {db}")
    if not demo:
        try:
            _serve(db, "127.0.0.1", port, data_dir, fake, True, cfg, 172800.0,
                   max_body_bytes=max_body_bytes, accounts=accounts,
                   metrics=(metrics_host, metrics_port))
        except AllotmentError as exc:
            _fail(exc)
        return
    from allotment.service.demo import run_demo

    holder: dict[str, Any] = {}

    def go(server: Any) -> None:
        try:
            holder["ok"] = run_demo(url, data_dir, console)
        except Exception as exc:  # shown, then the server stops
            holder["error"] = exc
        if "error" in holder or exit_after_demo:
            server.should_exit = True
            return
        where = f" (the admin's token is in {config_path()})" if config_path().exists() else ""
        console.print(f"the service keeps running: dashboard {url}/ui{where}, API docs "
                      f"{url}/docs; Ctrl-C stops it", highlight=False, soft_wrap=True)

    try:
        _serve(db, "127.0.0.1", port, data_dir, fake, True, cfg, 172800.0, on_ready=go,
               max_body_bytes=max_body_bytes, accounts=accounts,
               metrics=(metrics_host, metrics_port))
    except AllotmentError as exc:
        _fail(exc)
    if "error" in holder:
        err_console.print(f"[bold red]demo failed:[/] {holder['error']}")
        raise typer.Exit(1)
