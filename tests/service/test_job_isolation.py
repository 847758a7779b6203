"""A member's job cannot read what is not its own (issue 11, item 2).

The attack: a job of team llama reads the client config (the admin token), the database, the
other team's run log and work folder, and the service's environment, and prints them into its
own log, which ``GET /v1/jobs/{id}/log`` hands back. Here that job runs for real under
``allot serve`` as root, each team mapped to its own Unix account; the reads must fail and its
log must hold no secret. Tests that switch accounts need root and skip (saying so) otherwise;
the rest run as any user.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from allotment.backends.accounts import DYNAMIC_UIDS, RunAs
from allotment.backends.base import LaunchSpec
from allotment.backends.local import LocalBackend
from allotment.errors import BackendUnavailable
from allotment.service.client import write_config
from allotment.service.loop import LoopConfig, SchedulerLoop
from allotment.storage import repo
from allotment.storage.db import Database
from allotment.storage.models import JobRow
from tests.service.conftest import World, free_port, make_world

ROOT = os.geteuid() == 0
NEEDS_ROOT = "switching a job's Unix account needs root; run the suite as root (CI does)"
ACCOUNTS = {"llama": "allot-t-llama", "vision": "allot-t-vision"}


def mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


@pytest.fixture
def site() -> Iterator[Path]:
    """A folder other accounts may traverse but not list (0711 under /tmp), as /var/lib is:
    job accounts must reach their work folders, and pytest's own tmp folder is root's alone."""
    base = Path(tempfile.mkdtemp(prefix="allot-site-", dir="/tmp"))
    base.chmod(0o711)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def accounts() -> Iterator[dict[str, pwd.struct_passwd]]:
    """Two unprivileged Unix accounts, made with useradd (and removed after) if missing."""
    if not ROOT:
        pytest.skip(NEEDS_ROOT)
    if shutil.which("useradd") is None:
        pytest.skip("useradd is not installed: cannot make test accounts")
    made = []
    for name in ACCOUNTS.values():
        try:
            pwd.getpwnam(name)
        except KeyError:
            for _ in range(20):  # /etc/passwd may be locked by another useradd for a moment
                r = subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                                    "/usr/sbin/nologin", name], capture_output=True, text=True)
                if r.returncode == 0:
                    break
                time.sleep(0.5)
            else:
                pytest.fail(f"useradd {name}: {r.stderr}")
            made.append(name)
    yield {team: pwd.getpwnam(name) for team, name in ACCOUNTS.items()}
    for name in made:
        subprocess.run(["userdel", name], check=False, capture_output=True)


@pytest.fixture
def site_db(db: Database, site: Path) -> Iterator[Database]:
    """The parametrised database; on SQLite, a file in the site's data folder, made the way an
    older install left it (folder 0755, database 0644), which the service must tighten."""
    if not db.url.startswith("sqlite"):
        # the service started on the site's data folder keys the audit chain there too
        (site / "data").mkdir(mode=0o700)
        pg = Database(db.url, site / "data")
        yield pg
        pg.dispose()
        return
    (site / "data").mkdir(mode=0o755)
    (site / "data").chmod(0o755)
    local = Database(f"sqlite:///{site / 'data' / 'allotment.db'}", site / "data")
    local.upgrade()
    (site / "data" / "allotment.db").chmod(0o644)
    yield local
    local.dispose()


@dataclass
class Service:
    url: str
    proc: subprocess.Popen[bytes]
    tokens: dict[str, str]
    data: Path
    work: Path
    config: Path

    def call(self, who: str, method: str, path: str, **kw: Any) -> httpx.Response:
        return httpx.request(method, self.url + path, timeout=30,
                             headers={"Authorization": f"Bearer {self.tokens[who]}"}, **kw)

    def submit(self, who: str, team: str, command: str, gpus: int = 1) -> int:
        r = self.call(who, "POST", "/v1/jobs", json={"team": team, "gpu_type": "fake",
                                                     "gpus": gpus, "command": command})
        assert r.status_code == 201, r.text
        return int(r.json()["id"])

    def wait(self, who: str, job: int, states: set[str], timeout: float = 60) -> dict[str, Any]:
        end = time.time() + timeout
        while True:
            j: dict[str, Any] = self.call(who, "GET", f"/v1/jobs/{job}").json()
            if j["state"] in states or time.time() > end:
                return j
            time.sleep(0.2)

    def log(self, who: str, job: int) -> str:
        r = self.call(who, "GET", f"/v1/jobs/{job}/log")
        return r.text if r.status_code == 200 else ""


def seed(db: Database, teams: list[str]) -> dict[str, str]:
    now = time.time()
    with db.session() as s:
        repo.set_inventory(s, [repo.NodeSpec("local", "fake", 8)], "test", now)
        repo.set_org(s, {"org": [{"name": t, "guaranteed": {"fake": 8 // len(teams)}}
                                 for t in teams]}, "test", now)
        _, admin = repo.create_user(s, "admin", "admin", None, now)
        tokens = {"admin": admin}
        for team, who in zip(teams, ("ann", "bob"), strict=False):
            _, tokens[who] = repo.create_user(s, who, "member", team, now)
    return tokens


@pytest.fixture
def serve(site: Path, site_db: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Start ``allot serve`` (the real CLI, as an operator would) on the site; the service's
    environment holds secrets (the admin token, a config path, a variable of its own)."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(teams: list[str], *args: str) -> Service:
        tokens = seed(site_db, teams)
        (site / "client").mkdir(mode=0o755, exist_ok=True)
        config = site / "client" / "config.json"
        monkeypatch.setenv("ALLOTMENT_CONFIG", str(config))
        write_config("http://127.0.0.1", tokens["admin"])
        port = free_port()
        env = {**os.environ, "ALLOTMENT_CONFIG": str(config), "ALLOTMENT_TOKEN": tokens["admin"],
               "SERVICE_SECRET": "service-secret-value", "ALLOTMENT_DB": site_db.url}
        allot = str(Path(sys.executable).parent / "allot")
        out = site / "serve.out"
        with open(out, "wb") as f:
            proc = subprocess.Popen(
                [allot, "serve", "--db", site_db.url, "--data-dir", str(site / "data"),
                 "--work-dir", str(site / "work"), "--fake-gpus", "--tick-s", "0.2",
                 "--grace-s", "1", "--port", str(port), *args],
                env=env, stdout=f, stderr=subprocess.STDOUT)
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        end = time.time() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"allot serve exited with {proc.returncode}: {out.read_text()}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.time() > end:
                pytest.fail("allot serve did not answer")
            time.sleep(0.2)
        return Service(url, proc, tokens, site / "data", site / "work", config)

    yield start
    for p in procs:
        p.terminate()
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def sections(log: str) -> dict[str, str]:
    """The probe's output by ``== name`` header."""
    out: dict[str, str] = {}
    name = ""
    for line in log.splitlines():
        if line.startswith("== "):
            name = line[3:].strip()
            out[name] = ""
        elif name:
            out[name] += line + "\n"
    return out


def test_a_job_reads_nothing_of_the_service_or_the_other_team(
        serve: Any, accounts: dict[str, pwd.struct_passwd], site: Path, site_db: Database) -> None:
    """Two teams on two accounts (``--run-as``): llama's job tries to read the client config,
    the database and its WAL, vision's run log and work folder, the service's environment;
    every read is refused, its log (as the API serves it) holds no token or secret, and every
    file the service keeps has the mode the README promises."""
    run_as = site / "run-as.yaml"
    run_as.write_text(json.dumps({"teams": ACCOUNTS}))
    svc = serve(["llama", "vision"], "--run-as", str(run_as))
    sqlite = site_db.url.startswith("sqlite")
    db_file = svc.data / "allotment.db"

    v = svc.submit("bob", "vision", "echo vision-log-secret; echo vision-file-secret > mine.txt; "
                   "sleep 60")
    assert svc.wait("bob", v, {"running"})["state"] == "running"
    end = time.time() + 30
    while "vision-log-secret" not in svc.log("bob", v) and time.time() < end:
        time.sleep(0.2)
    assert "vision-log-secret" in svc.log("bob", v)

    targets = {"config": svc.config, "db": db_file, "wal": Path(f"{db_file}-wal"),
               "vision log": svc.data / "runs" / str(v) / "0" / "log",
               "vision file": svc.work / str(v) / "0" / "mine.txt",
               "service environ": Path(f"/proc/{svc.proc.pid}/environ")}
    probe = "".join(f"echo '== {name}'; head -c 400 '{path}' 2>&1; echo; "
                    for name, path in targets.items())
    probe += (f"echo '== ls data'; ls -la '{svc.data}' 2>&1; "
              f"echo '== ls vision work'; ls -la '{svc.work / str(v) / '0'}' 2>&1; "
              f"echo '== env'; env; echo '== id'; id -u; echo '== umask'; umask; "
              f"ln -sf '{svc.config}' \"$ALLOTMENT_UTIL_FILE\"; ln -sf '{svc.config}' log; "
              "echo '== end'")
    a = svc.submit("ann", "llama", probe)
    done = svc.wait("ann", a, {"succeeded", "failed"})
    assert done["state"] == "succeeded", done
    log = svc.log("ann", a)
    got = sections(log)
    assert "end" in got, log

    for name in targets:
        if name == "wal" and not sqlite:
            continue
        assert "Permission denied" in got[name], (name, got[name])
    assert "Permission denied" in got["ls data"] and "allotment.db" not in got["ls data"]
    assert "Permission denied" in got["ls vision work"]
    for secret in (svc.tokens["admin"], svc.tokens["ann"], svc.tokens["bob"],
                   "vision-log-secret", "vision-file-secret", "service-secret-value",
                   "SQLite format", "ALLOTMENT_TOKEN", "ALLOTMENT_CONFIG", "ALLOTMENT_DB",
                   "SERVICE_SECRET"):
        assert secret not in log, secret
    assert str(svc.config) not in got["env"] and site_db.url not in got["env"]
    env = dict(line.split("=", 1) for line in got["env"].splitlines() if "=" in line)
    work = svc.work / str(a) / "0"
    assert env["ALLOTMENT_JOB_ID"] == str(a) and env["ALLOTMENT_RUN_DIR"] == str(work)
    assert env["HOME"] == str(work) and env["ALLOTMENT_UTIL_FILE"] == str(work / "util.jsonl")
    assert env["CUDA_VISIBLE_DEVICES"] in {str(i) for i in range(8)}
    assert got["id"].strip() == str(accounts["llama"].pw_uid)
    assert got["umask"].strip() == "0077"

    # another team's log is a 403; the job's symlinks made the service read nothing else
    assert svc.call("ann", "GET", f"/v1/jobs/{v}/log").status_code == 403
    assert svc.tokens["admin"] not in svc.log("ann", a)

    # modes: the service's files are its own; each run's folder is the job account's
    assert mode(svc.config) == 0o600
    assert mode(svc.data) == 0o700
    if sqlite:
        for p in (db_file, Path(f"{db_file}-wal"), Path(f"{db_file}-shm")):
            assert mode(p) == 0o600, p
    for p in (svc.data / "runs", svc.data / "runs" / str(a), svc.data / "runs" / str(a) / "0"):
        assert mode(p) == 0o700 and os.lstat(p).st_uid == 0, p
    assert mode(svc.data / "runs" / str(a) / "0" / "log") == 0o600
    assert mode(svc.work) == 0o711 and mode(svc.work / str(a)) == 0o711
    assert mode(work) == 0o700 and os.lstat(work).st_uid == accounts["llama"].pw_uid
    assert os.lstat(svc.work / str(v) / "0").st_uid == accounts["vision"].pw_uid
    svc.call("bob", "POST", f"/v1/jobs/{v}/cancel")  # (a run outlives the service)
    assert svc.wait("bob", v, {"cancelled"})["state"] == "cancelled"


def test_without_a_mapping_root_gives_each_team_its_own_dynamic_account(site: Path) -> None:
    """As root with no ``--run-as``, each team gets its own uid from the dynamic range, kept
    across restarts; one team's job cannot read the other's work folder."""
    if not ROOT:
        pytest.skip(NEEDS_ROOT)
    data = site / "data"
    data.mkdir(mode=0o700)

    def backend() -> LocalBackend:
        return LocalBackend(data / "runs", accounts=RunAs(registry=data / "accounts.json"),
                            work_dir=site / "work")

    b = backend()
    b.launch(LaunchSpec(1, 0, "llama", "ann", "echo llama-secret > mine.txt; id -u", 1))
    assert wait_state(b, 1, "exited").exit_code == 0
    other = b.run_dir(1, 0) / "mine.txt"
    b.launch(LaunchSpec(2, 0, "vision", "bob", f"cat '{other}'; rc=$?; id -u; exit $rc", 1))
    assert wait_state(b, 2, "exited").exit_code == 1
    log_1 = (b.control_dir(1, 0) / "log").read_text()
    log_2 = (b.control_dir(2, 0) / "log").read_text()
    assert "Permission denied" in log_2 and "llama-secret" not in log_2
    uid_1, uid_2 = int(log_1.split()[-1]), int(log_2.split()[-1])
    assert uid_1 != uid_2 and {uid_1, uid_2} <= set(range(DYNAMIC_UIDS[0], DYNAMIC_UIDS[1] + 1))
    assert mode(data / "accounts.json") == 0o600
    again = backend()
    again.launch(LaunchSpec(3, 0, "llama", "ann", "id -u", 1))
    assert wait_state(again, 3, "exited").exit_code == 0
    assert int((again.control_dir(3, 0) / "log").read_text().split()[-1]) == uid_1


def wait_state(b: LocalBackend, job: int, state: str, timeout: float = 30) -> Any:
    end = time.time() + timeout
    st = b.status(job, 0)
    while st.state != state and time.time() < end:
        time.sleep(0.05)
        st = b.status(job, 0)
    return st


def test_the_job_environment_is_built_from_scratch(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The service's variables (tokens, config and database paths, anything else) never
    reach a job; the documented ones do, HOME is its work folder and its umask is 077."""
    monkeypatch.setenv("ALLOTMENT_TOKEN", "token-in-the-service-env")
    monkeypatch.setenv("ALLOTMENT_CONFIG", "/secret/config.json")
    monkeypatch.setenv("ALLOTMENT_DB", "postgresql+psycopg://u:pw@h/db")
    monkeypatch.setenv("SOME_SECRET", "some-secret-value")
    b = LocalBackend(tmp_path / "runs", work_dir=tmp_path / "work")
    b.launch(LaunchSpec(1, 0, "llama", "ann", "env; echo \"cwd=$(pwd)\"; umask", 2,
                        {"local": [3, 4]}))
    assert wait_state(b, 1, "exited").exit_code == 0
    log = (b.control_dir(1, 0) / "log").read_text()
    for secret in ("token-in-the-service-env", "/secret/config.json", "u:pw@h", "SOME_SECRET",
                   "ALLOTMENT_TOKEN", "ALLOTMENT_CONFIG", "ALLOTMENT_DB", "VIRTUAL_ENV",
                   "PYTEST"):
        assert secret not in log, secret
    env = dict(line.split("=", 1) for line in log.splitlines() if "=" in line)
    work = b.run_dir(1, 0)
    assert env["CUDA_VISIBLE_DEVICES"] == "3,4" and env["ALLOTMENT_JOB_ID"] == "1"
    assert env["ALLOTMENT_UTIL_FILE"] == str(work / "util.jsonl")
    assert env["HOME"] == str(work) == env["cwd"] == env["ALLOTMENT_RUN_DIR"]
    assert env["PATH"] == "/usr/local/bin:/usr/bin:/bin"
    assert log.strip().endswith("0077")
    assert mode(tmp_path / "runs") == 0o700 and mode(b.control_dir(1, 0)) == 0o700
    assert mode(b.control_dir(1, 0) / "log") == 0o600 and mode(work) == 0o700


def test_util_file_tricks_give_the_service_nothing(tmp_path: Path) -> None:
    """The service reads the job-writable utilisation file without being fooled: a symlink
    (to another file of samples), a FIFO (which would block a plain open), a folder and a
    file of another owner give no samples; a huge file is read only at its end."""
    b = LocalBackend(tmp_path / "runs", work_dir=tmp_path / "work")
    b.launch(LaunchSpec(1, 0, "llama", "ann", "exit 0", 1))
    assert wait_state(b, 1, "exited").state == "exited"
    util = b.run_dir(1, 0) / "util.jsonl"
    line = json.dumps({"time": 100.0, "gpu": 0, "util_pct": 1.0}) + "\n"
    elsewhere = tmp_path / "other.jsonl"
    elsewhere.write_text(line)
    util.symlink_to(elsewhere)
    assert b.samples(1, 0, {}, None) == []
    util.unlink()
    os.mkfifo(util)
    result: list[Any] = []
    t = threading.Thread(target=lambda: result.append(b.samples(1, 0, {}, None)), daemon=True)
    t.start()
    t.join(5)
    if t.is_alive():  # unblock the reader before failing
        os.close(os.open(util, os.O_WRONLY | os.O_NONBLOCK))
        t.join(5)
        pytest.fail("reading a FIFO as the utilisation file blocked the scheduler loop")
    assert result == [[]]
    util.unlink()
    util.mkdir()
    assert b.samples(1, 0, {}, None) == []
    util.rmdir()
    with open(util, "wb") as f:  # a sparse 1 GiB file: only its tail is read
        f.truncate(1 << 30)
        f.seek((1 << 30) - len(line) - 1)
        f.write(b"\n" + line.encode())
    t0 = time.time()
    smp = b.samples(1, 0, {}, None)
    assert [x.util_pct for x in smp] == [1.0] and time.time() - t0 < 2
    if ROOT:
        os.chown(util, 12345, 12345)  # not the job's account: a hard link to another's file
        assert b.samples(1, 0, {}, None) == []


def test_the_log_route_never_follows_a_link(world: World, tmp_path: Path) -> None:
    """GET /v1/jobs/{id}/log serves only a regular file of the service's own: a log
    replaced by a symlink to the config (or to another job's log), a FIFO or a folder gives
    a 404 and no byte of the target; a huge log gives its last 1,000,000 bytes."""
    runs = tmp_path / "runs"
    world.client.app.state.settings["runs_dir"] = str(runs)  # type: ignore[attr-defined]
    job = world.submit("member_own")["id"]
    other = world.submit("member_other", team="vision")["id"]
    log = runs / str(job) / "0" / "log"
    log.parent.mkdir(parents=True)
    (runs / str(other) / "0").mkdir(parents=True)
    (runs / str(other) / "0" / "log").write_text("vision-log-secret\n")
    secret = tmp_path / "config.json"
    secret.write_text('{"token": "admin-token-secret"}')
    for target in (secret, runs / str(other) / "0" / "log"):
        log.symlink_to(target)
        r = world.call("member_own", "GET", f"/v1/jobs/{job}/log")
        assert r.status_code == 404, r.text
        assert "secret" not in r.text
        log.unlink()
    log.mkdir()
    assert world.call("member_own", "GET", f"/v1/jobs/{job}/log").status_code == 404
    log.rmdir()
    os.mkfifo(log)
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(
        world.call("member_own", "GET", f"/v1/jobs/{job}/log").status_code), daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():
        os.close(os.open(log, os.O_WRONLY | os.O_NONBLOCK))
        t.join(5)
        pytest.fail("a FIFO as the log blocked the API")
    assert result == [404]
    log.unlink()
    with open(log, "wb") as f:
        f.truncate(200 << 20)
        f.seek((200 << 20) - 4)
        f.write(b"tail")
    r = world.call("member_own", "GET", f"/v1/jobs/{job}/log")
    assert r.status_code == 200 and len(r.content) == 1_000_000 and r.text.endswith("tail")


def _tick_until(loop: SchedulerLoop, db: Database, job: int, states: set[str]) -> JobRow:
    end = time.time() + 20
    while True:
        loop.tick()
        with db.session() as s:
            row = s.get(JobRow, job)
            assert row is not None
        if row.state in states or time.time() > end:
            return row
        time.sleep(0.1)


def test_a_shared_account_is_refused_for_several_teams_without_the_flag(
        world: World, tmp_path: Path) -> None:
    """When the service cannot switch accounts, an org of several teams gets no job started:
    each waits with a reason naming the fix, the loop goes on; with the explicit flag they
    run, and /health carries the warning."""
    refusing = LocalBackend(tmp_path / "runs", work_dir=tmp_path / "work",
                            accounts=RunAs(can_switch=False, shared_ok=False))
    loop = SchedulerLoop(world.db, refusing, LoopConfig(), clock=world.clock)
    job = world.submit("member_own", command="echo ran")["id"]
    for _ in range(3):  # the loop goes on ticking; the job waits
        assert loop.tick().acted
    j = world.call("member_own", "GET", f"/v1/jobs/{job}").json()
    assert j["state"] == "pending" and "--shared-account" in j["reason"], j
    assert "root" in j["reason"] and "3 teams" in j["reason"]
    assert not (tmp_path / "runs" / str(job)).exists()
    warnings = world.call("admin", "GET", "/health").json()["warnings"]
    assert len(warnings) == 1 and "refused" in warnings[0]
    loop.release()

    allowing = LocalBackend(tmp_path / "runs", work_dir=tmp_path / "work",
                            accounts=RunAs(can_switch=False, shared_ok=True))
    loop = SchedulerLoop(world.db, allowing, LoopConfig(), clock=world.clock)
    row = _tick_until(loop, world.db, job, {"succeeded", "failed"})
    assert row.state == "succeeded"
    warnings = world.call("admin", "GET", "/health").json()["warnings"]
    assert len(warnings) == 1 and "shared" in warnings[0] and "every team" in warnings[0]


def test_an_admitted_job_is_not_launched_once_the_flag_is_gone(world: World,
                                                               tmp_path: Path) -> None:
    """A job admitted while --shared-account was given, by a service restarted without it,
    goes back to pending (nothing launched, no attempt spent), with the reason."""
    class AdmitsButCannotLaunch(LocalBackend):
        def launch(self, spec: LaunchSpec) -> None:
            raise BackendUnavailable("stopped right after the admission was committed")

    allowing = AdmitsButCannotLaunch(tmp_path / "runs", work_dir=tmp_path / "work",
                                     accounts=RunAs(can_switch=False, shared_ok=True))
    job = world.submit("member_own", command="echo ran")["id"]
    before = SchedulerLoop(world.db, allowing, LoopConfig(), clock=world.clock)
    report = before.tick()
    assert report.admitted == [job] and report.backend_error
    before.release()  # the service stops
    with world.db.session() as s:
        assert s.get(JobRow, job).state == "starting"  # type: ignore[union-attr]
    refusing = LocalBackend(tmp_path / "runs", work_dir=tmp_path / "work",
                            accounts=RunAs(can_switch=False, shared_ok=False))
    loop = SchedulerLoop(world.db, refusing, LoopConfig(), clock=world.clock)
    loop.tick()
    with world.db.session() as s:
        row = s.get(JobRow, job)
        assert row is not None
    assert row.state == "pending" and row.attempts == 0 and "--shared-account" in row.reason
    assert not (tmp_path / "runs" / str(job)).exists()


def test_one_team_needs_no_flag(db: Database, tmp_path: Path) -> None:
    """An org of one team (``allot up``'s default) runs on the shared account without the
    flag: nobody else's files are there to read (the warning still shows in /health)."""
    w = make_world(db)
    w.call("admin", "PUT", "/v1/org", json={"org": [{"name": "llama",
                                                       "guaranteed": {"a100": 16}}]})
    b = LocalBackend(tmp_path / "runs", work_dir=tmp_path / "work",
                     accounts=RunAs(can_switch=False, shared_ok=False))
    loop = SchedulerLoop(db, b, LoopConfig(), clock=w.clock)
    job = w.submit("member_own", command="echo ran")["id"]
    assert _tick_until(loop, db, job, {"succeeded", "failed"}).state == "succeeded"
    assert "shared" in w.call("admin", "GET", "/health").json()["warnings"][0]


def _allot(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    allot = str(Path(sys.executable).parent / "allot")
    return subprocess.run([allot, *args], capture_output=True, text=True, timeout=timeout)


def _new_db(tmp_path: Path) -> str:
    """A database that exists (`allot scheduler` refuses one that does not)."""
    db = Database(f"sqlite:///{tmp_path / 'a.db'}", tmp_path / "d")
    db.upgrade()
    db.dispose()
    return db.url


def test_bad_run_as_files_are_refused_naming_the_field(tmp_path: Path) -> None:
    """A run-as file naming an account that does not exist, root, or an unknown key stops
    the service at start with an error naming the field; no traceback."""
    db = _new_db(tmp_path)
    for doc, field in (({"teams": {"llama": "no-such-account-x"}}, "run-as.teams.llama"),
                       ({"users": {"ann": "root"}}, "run-as.users.ann"),
                       ({"team": {"llama": "nobody"}}, "run-as.team"),
                       ({"teams": ["llama"]}, "run-as.teams")):
        f = tmp_path / "run-as.yaml"
        f.write_text(json.dumps(doc))
        r = _allot("scheduler", "--db", db, "--data-dir", str(tmp_path / "d"), "--fake-gpus",
                   "--run-as", str(f))
        assert r.returncode == 2, (doc, r.stdout, r.stderr)
        assert field in r.stderr and "Traceback" not in r.stderr + r.stdout, r.stderr


def test_shared_account_as_root_is_refused(tmp_path: Path) -> None:
    """As root the service never runs jobs as itself: --shared-account is an error that
    says how to make teams share an account (map them with --run-as)."""
    if not ROOT:
        pytest.skip("as root only: a non-root service is where --shared-account applies")
    r = _allot("scheduler", "--db", _new_db(tmp_path), "--data-dir",
               str(tmp_path / "d"), "--fake-gpus", "--shared-account")
    assert r.returncode == 2 and "--run-as" in r.stderr and "root" in r.stderr, r.stderr


def test_client_config_is_private_from_the_first_byte(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`allot up` / `allot login` write the token file 0600 in a folder they make 0700, and
    tighten a file an older version left 0644."""
    path = tmp_path / "new" / "allotment" / "config.json"
    monkeypatch.setenv("ALLOTMENT_CONFIG", str(path))
    write_config("http://x", "tok")
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    path.chmod(0o644)
    write_config("http://x", "tok2")
    assert mode(path) == 0o600 and json.loads(path.read_text())["token"] == "tok2"


def test_service_files_are_private(site: Path, site_db: Database, serve: Any) -> None:
    """`allot serve` tightens an older install's folder and database (0755, 0644) to
    0700 and 0600, and SQLite's -wal and -shm follow (any user; one team needs no flag)."""
    svc = serve(["llama"])
    job = svc.submit("ann", "llama", "echo hi")
    assert svc.wait("ann", job, {"succeeded", "failed"})["state"] == "succeeded"
    assert mode(svc.data) == 0o700 and mode(svc.data / "runs") == 0o700
    if site_db.url.startswith("sqlite"):
        db_file = svc.data / "allotment.db"
        for p in (db_file, Path(f"{db_file}-wal"), Path(f"{db_file}-shm")):
            assert mode(p) == 0o600, p
    assert mode(svc.data / "runs" / str(job) / "0" / "log") == 0o600
    assert "hi" in svc.log("ann", job)


def test_run_as_needs_root(tmp_path: Path) -> None:
    """A service that cannot switch accounts refuses a --run-as mapping at start (it could
    not honour it), saying what it needs."""
    if ROOT:
        pytest.skip("as a non-root user only: root can honour the mapping")
    f = tmp_path / "run-as.yaml"
    f.write_text(json.dumps({"teams": {"llama": "nobody"}}))
    r = _allot("scheduler", "--db", _new_db(tmp_path), "--data-dir",
               str(tmp_path / "d"), "--fake-gpus", "--run-as", str(f))
    assert r.returncode == 2 and "not root" in r.stderr and "nobody" in r.stderr, r.stderr


def _cmdlines_with(marker: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except OSError:
            pass
    return found


def test_a_jobs_command_is_not_in_any_process_arguments(tmp_path: Path) -> None:
    """`ps` shows every account's process arguments; the job's command (which may set a
    secret variable, and which the dashboard hides from other teams) is not among them."""
    b = LocalBackend(tmp_path / "runs", work_dir=tmp_path / "work")
    b.launch(LaunchSpec(1, 0, "llama", "ann", "SECRET_KEY=marker-in-argv-17 sleep 2; echo ok",
                        1))
    assert wait_state(b, 1, "alive").state == "alive"
    time.sleep(0.5)
    assert _cmdlines_with("marker-in-argv-17") == []
    assert wait_state(b, 1, "exited").exit_code == 0
    assert (b.control_dir(1, 0) / "log").read_text().strip() == "ok"


def test_a_job_that_leaves_its_process_group_is_still_stopped(tmp_path: Path) -> None:
    """A job's process that left the run's process group (setsid) still holds the run: it is
    alive while that process lives, and kill() reaches it, so a borrower cannot keep
    preempted GPUs."""
    b = LocalBackend(tmp_path / "runs", work_dir=tmp_path / "work")
    b.launch(LaunchSpec(1, 0, "llama", "ann", "setsid sleep 60 & echo $! > escaped; sleep 0.3",
                        1))
    pid_file = b.run_dir(1, 0) / "escaped"
    end = time.time() + 10
    while not pid_file.exists() and time.time() < end:
        time.sleep(0.05)
    time.sleep(1)
    escaped = int(pid_file.read_text())
    try:
        assert b.status(1, 0).state == "alive"  # its shell is done; the escaped one runs
        b.terminate(1, 0)
        b.kill(1, 0)
        st = wait_state(b, 1, "exited", timeout=10)
        assert st.state == "exited", st
        assert not Path(f"/proc/{escaped}").exists() or \
            Path(f"/proc/{escaped}/stat").read_text().split()[2] == "Z"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(escaped, 9)


def test_a_job_that_releases_its_lock_is_not_started_twice(tmp_path: Path) -> None:
    """A job may unlock the run's lock it inherits; it is still alive (not "gone", which
    would requeue it and start a second copy beside the first) while it runs."""
    b = LocalBackend(tmp_path / "runs", work_dir=tmp_path / "work")
    unlock = ("python3 -c 'import fcntl, os\n"
              "for fd in os.listdir(\"/proc/self/fd\"):\n"
              "    try:\n"
              "        if os.readlink(\"/proc/self/fd/\" + fd).endswith(\"/lock\"):\n"
              "            fcntl.flock(int(fd), fcntl.LOCK_UN); print(\"unlocked\")\n"
              "    except OSError: pass'; sleep 2")
    b.launch(LaunchSpec(1, 0, "llama", "ann", unlock, 1))
    end = time.time() + 10
    log = b.control_dir(1, 0) / "log"
    while "unlocked" not in (log.read_text() if log.exists() else "") and time.time() < end:
        time.sleep(0.05)
    assert "unlocked" in log.read_text()
    assert b.status(1, 0).state == "alive"
    assert wait_state(b, 1, "exited").exit_code == 0


def test_slurm_jobs_get_no_service_environment(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The Slurm backend's sbatch exports only the job's own variables (and Slurm's), never
    the service's environment (``--export=ALL`` gave every Slurm job the service's token)."""
    from allotment.backends.slurm.backend import SlurmBackend
    from allotment.backends.slurm.cmd import Slurm

    monkeypatch.setenv("ALLOTMENT_TOKEN", "token-in-the-service-env")
    calls: list[list[str]] = []

    class Recorder(Slurm):
        def run(self, args: Any, check: bool = True) -> str:
            calls.append(list(args))
            return "4242" if args[0] == "sbatch" else ""

    b = SlurmBackend(Recorder(), tmp_path / "runs")
    b.launch(LaunchSpec(7, 1, "llama", "ann", "python train.py", 2, {"node1": [0, 1]}))
    sbatch = next(c for c in calls if c[0] == "sbatch")
    export = [a for a in sbatch if a.startswith("--export=")]
    assert export == ["--export=PATH=/usr/local/bin:/usr/bin:/bin,ALLOTMENT_JOB_ID=7,"
                      "ALLOTMENT_ATTEMPT=1,ALLOTMENT_GPUS=2"]


def test_admin_create_user_makes_a_private_database(tmp_path: Path) -> None:
    """`allot admin create-user --create-db` on a new SQLite file (the first admin) makes it
    0600, its -wal and -shm too, whatever the caller's umask."""
    old = os.umask(0o022)
    try:
        r = _allot("admin", "create-user", "root", "--db", f"sqlite:///{tmp_path / 'n.db'}",
                   "--create-db")
    finally:
        os.umask(old)
    assert r.returncode == 0, r.stderr
    for p in tmp_path.glob("n.db*"):
        assert mode(p) == 0o600, p


def test_accounts_follow_users_then_teams_then_default_then_a_uid_per_team(
        tmp_path: Path) -> None:
    """The mapping's order: a user's account, else its team's, else the default; without a
    default each unmapped team gets a dynamic uid of its own, never another team's."""
    from allotment.backends.accounts import RunAsMap

    full = RunAs(RunAsMap(default=5001, teams={"llama": 5002}, users={"ann": 5003}),
                 can_switch=True, registry=tmp_path / "accounts.json")
    assert full.account("llama", "ann").uid == 5003
    assert full.account("vision", "ann").uid == 5003
    assert full.account("llama", "bob").uid == 5002
    assert full.account("vision", "bob").uid == 5001
    lo, hi = 1_999_000_000, 1_999_000_001
    part = RunAs(RunAsMap(teams={"llama": 5002}, dynamic_uids=(lo, hi)), can_switch=True,
                 registry=tmp_path / "accounts.json")
    vision, infra = part.account("vision", "bob").uid, part.account("infra", "cy").uid
    assert {vision, infra} == {lo, hi} and part.account("llama", "x").uid == 5002
    why = part.refusal("more", "dy", 4)  # the range is full: it waits, saying so
    assert why is not None and f"dynamic uid range {lo}-{hi} is full" in why
    again = RunAs(RunAsMap(dynamic_uids=(lo, hi)), can_switch=True,
                  registry=tmp_path / "accounts.json")
    assert again.account("vision", "bob").uid == vision  # kept across restarts
