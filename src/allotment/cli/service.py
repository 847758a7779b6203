"""CLI commands for the service: start it (``up``, ``serve``, ``scheduler``), administer the
database (``admin create-user|list-tokens|issue-token|revoke-token|disable-user|enable-user``,
``audit verify``), and talk to it over HTTP (``submit``, ``jobs``, ``why``, ``cancel``,
``usage``, ``dispute``, ``login``).

Every command that opens the database takes ``--data-dir`` (``$ALLOTMENT_DATA_DIR``, default
``.allotment``): the audit key and head file live there, so give all processes of one
database the same one."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import signal
import sys
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
DataDir = Annotated[Path, typer.Option(
    envvar="ALLOTMENT_DATA_DIR", help="data directory: the audit key and head file, run "
    "folders and logs, simulator reports ($ALLOTMENT_DATA_DIR)")]

MAX_BODY_BYTES = 1 << 20  # = service.bounds.MAX_BODY_BYTES (not imported: the CLI stays light)


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
    data_dir: DataDir = Path(".allotment"),
) -> None:
    """Create a user (the first admin, typically) and print its API token once."""
    from allotment.storage import repo

    def act(s: Any) -> str:
        return repo.create_user(s, name, role, team, time.time(), "cli")[1]

    token = _admin(db, data_dir, act)
    console.print(f"created {role} {name}; API token (shown once):")
    print(token)


def _admin(db: str | None, data_dir: Path, act: Any) -> Any:
    """Run ``act(session)`` in one transaction on the database; errors end the command."""
    from allotment.service.private import private_database
    from allotment.storage.db import Database

    try:
        database = Database(db, data_dir)
        private_database(database.url)
        database.upgrade()
        database.check_audit_key()
        with database.session() as s:
            return act(s)
    except AllotmentError as exc:
        _fail(exc)


@admin_app.command("list-tokens")
def list_tokens(name: Annotated[str, typer.Argument(help="user name")], db: DbOpt = None,
                data_dir: DataDir = Path(".allotment")) -> None:
    """A user's API tokens: id, when made, whether revoked (never the token itself)."""
    from allotment.storage import repo

    def act(s: Any) -> list[tuple[int, float, float | None]]:
        user = repo.user_named(s, name)
        return [(t.id, t.created_at, t.revoked_at) for t in repo.tokens_of(s, user)]

    t = Table(title=f"tokens of {name}")
    for col in ("id", "created", "revoked"):
        t.add_column(col)
    for tid, created, revoked in _admin(db, data_dir, act):
        t.add_row(str(tid), _when(created), _when(revoked))
    console.print(t)


@admin_app.command("issue-token")
def issue_token(name: Annotated[str, typer.Argument(help="user name")], db: DbOpt = None,
                data_dir: DataDir = Path(".allotment")) -> None:
    """Give a user a new API token and print it once."""
    from allotment.storage import repo

    def act(s: Any) -> tuple[int, str]:
        row, token = repo.issue_token(s, repo.user_named(s, name), time.time(), "cli")
        return row.id, token

    tid, token = _admin(db, data_dir, act)
    console.print(f"token {tid} of {name} (shown once):")
    print(token)


@admin_app.command("revoke-token")
def revoke_token(
    token_id: Annotated[int | None, typer.Argument(help="token id (allot admin list-tokens)")]
    = None,
    user: Annotated[str | None, typer.Option(help="revoke every token of this user")] = None,
    db: DbOpt = None,
    data_dir: DataDir = Path(".allotment"),
) -> None:
    """Revoke a token (or all of a user's): refused at once, its dashboard sessions end."""
    from allotment.storage import repo

    if (token_id is None) == (user is None):
        _fail(AllotmentError("revoke-token: give a token id or --user NAME"))

    def act(s: Any) -> list[int]:
        now = time.time()
        ids = [token_id] if token_id is not None else [
            t.id for t in repo.tokens_of(s, repo.user_named(s, user or ""))
            if t.revoked_at is None]
        for tid in ids:
            repo.revoke_token(s, tid, "cli", now)
        return [int(t) for t in ids if t is not None]

    ids = _admin(db, data_dir, act)
    console.print(f"revoked token(s) {', '.join(map(str, ids)) or '(none left)'}")


@admin_app.command("disable-user")
def disable_user(name: Annotated[str, typer.Argument(help="user name")], db: DbOpt = None,
                 data_dir: DataDir = Path(".allotment")) -> None:
    """Disable a user: its tokens and dashboard sessions are refused at once."""
    from allotment.storage import repo

    _admin(db, data_dir, lambda s: repo.set_disabled(s, repo.user_named(s, name), True, "cli",
                                                     time.time()))
    console.print(f"user {name} disabled")


@admin_app.command("enable-user")
def enable_user(name: Annotated[str, typer.Argument(help="user name")], db: DbOpt = None,
                data_dir: DataDir = Path(".allotment")) -> None:
    """Enable a disabled user again (its tokens that were not revoked work again)."""
    from allotment.storage import repo

    _admin(db, data_dir, lambda s: repo.set_disabled(s, repo.user_named(s, name), False,
                                                     "cli", time.time()))
    console.print(f"user {name} enabled")


@audit_app.command("verify")
def audit_verify(db: DbOpt = None, data_dir: DataDir = Path(".allotment")) -> None:
    """Recompute the audit chain under the key of DATA_DIR, and compare the head row and the
    head file with it; exit 1 if any entry was edited or deleted, naming it."""
    from sqlalchemy.exc import SQLAlchemyError

    from allotment.storage import audit
    from allotment.storage.db import Database

    try:
        database = Database(db, data_dir)
        database.require_current_schema()
        with database.session() as s:
            result = audit.verify(s)
    except AllotmentError as exc:
        _fail(exc)
        return
    except SQLAlchemyError as exc:
        _fail(AllotmentError(f"database {db or 'default'}: {exc.__class__.__name__}: "
                             f"{str(exc).splitlines()[0]}"))
        return
    if result.ok:
        how = (f"keyed from entry {result.keyed_from}, head file agrees"
               if result.keyed_from is not None else
               "not keyed yet (the service keys it at its next append)")
        console.print(f"audit log OK: {result.entries} entries, chain intact; {how}")
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
            escalation_s, webhook), lease_ttl_s=lease_ttl_s)
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
            escalation_s, webhook), lease_ttl_s=lease_ttl_s)
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
    policy: Policy = "fairshare",
    grace_s: GraceS = 60.0,
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
    cfg = _loop_config(policy, 1.0 if demo else 2.0, 3.0 if demo else grace_s,
                       20.0 if demo else 1800.0, 10.0 if demo else 600.0, 5.0, 172800.0, None)
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
