"""The local backend: runs admitted jobs as processes on this machine, each as the Unix
account of its team (``backends/accounts.py``).

Each run ``(job, attempt)`` has two folders:
- its *control folder* ``RUNS/<job>/<attempt>/`` (``RUNS`` is ``DATA_DIR/runs``), the
  service's own (folders 0700, files 0600): ``lock`` (held by the runner and the command for
  as long as they live), ``spec.json`` (what the runner starts, as whom), ``pid``,
  ``launched``, ``exit`` (written when the command ends) and ``log`` (stdout and stderr: the
  service opens it and hands the job only the file descriptor). A job can write none of them:
  if it could rewrite ``pid``, the service would signal whatever process group it named.
- its *work folder* ``WORK/<job>/<attempt>/`` (``--work-dir``), owned by the job's account
  and 0700: the job's cwd, ``HOME`` and ``$ALLOTMENT_RUN_DIR``, holding ``util.jsonl``
  (``$ALLOTMENT_UTIL_FILE``: utilisation the job pushes, see ``reclaim.samples``), which the
  service reads only through ``files.read_tail``. ``WORK`` and ``WORK/<job>`` are the
  service's, 0711: an account reaches its own folder by path but can list nothing.
The launcher takes the lock *before* it starts the runner and hands it over, so "lock held"
means "the run is alive" at every instant, and a restarted service adopts live runs instead
of starting them twice.

The job's environment is built from scratch, never copied from the service's: ``PATH`` (the
fixed ``JOB_PATH``), ``HOME`` (its work folder), ``LANG`` and ``TZ`` (if the service has
them), ``USER`` and ``LOGNAME`` (for a named account), and its own documented variables:
``CUDA_VISIBLE_DEVICES`` (the GPU indices the scheduler placed it on), ``ALLOTMENT_JOB_ID``,
``ALLOTMENT_ATTEMPT``, ``ALLOTMENT_TEAM``, ``ALLOTMENT_GPUS``, ``ALLOTMENT_RUN_DIR`` and
``ALLOTMENT_UTIL_FILE``. Its umask is 077. With ``fake_gpus`` the same path runs on a machine
without GPUs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

from allotment.backends.accounts import Account, RunAs
from allotment.backends.base import JOB_PATH, LaunchSpec, RunStatus
from allotment.backends.files import private_dir, read_tail
from allotment.domain.jobstate import RunState
from allotment.errors import ConfigurationError
from allotment.reclaim.nvml import NvmlSampler
from allotment.reclaim.samples import GpuSample

PASSED_ENV = ("LANG", "TZ")  # the only variables of the service a job gets
UTIL_LIMIT = 1 << 20  # bytes of util.jsonl read per tick (its end)


def _run_pid(d: Path) -> int | None:
    """The runner's process id from a run's control folder (None if none was written)."""
    try:
        return int((d / "pid").read_text())
    except (OSError, ValueError):
        return None


class LocalBackend:
    """``accounts`` is the operator's account policy (the CLI always passes one); without it
    jobs run as this process's own user, as a library caller or a test wants. ``work_dir``
    defaults to ``RUNS/work``, which only the service's own user can reach."""

    name = "local"

    def __init__(self, runs_dir: Path, fake_gpus: bool = True, accounts: RunAs | None = None,
                 work_dir: Path | None = None) -> None:
        self.runs_dir = Path(runs_dir).resolve()  # the runner runs in the run folder
        self.work_root = (Path(work_dir).resolve() if work_dir is not None
                          else self.runs_dir / "work")
        self.fake_gpus = fake_gpus
        self.accounts = accounts or RunAs(can_switch=False, shared_ok=True)
        self._work_mode = 0o711 if self.accounts.can_switch else 0o700
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._nvml: NvmlSampler | None = None
        try:
            private_dir(self.runs_dir)
            if self.accounts.can_switch:
                _check_reachable(self.work_root)
            private_dir(self.work_root, self._work_mode)
        except OSError as exc:
            raise ConfigurationError(f"local executor folders: {exc}") from None

    def control_dir(self, job_id: int, attempt: int) -> Path:
        """The service's own folder of a run (lock, pid, exit, log)."""
        return self.runs_dir / str(job_id) / str(attempt)

    def run_dir(self, job_id: int, attempt: int) -> Path:
        """The job's own folder: its cwd and ``$ALLOTMENT_RUN_DIR``."""
        return self.work_root / str(job_id) / str(attempt)

    def log_path(self, job_id: int, attempt: int) -> str | None:
        p = self.control_dir(job_id, attempt) / "log"
        return str(p) if p.exists() else None

    def run_id(self, job_id: int, attempt: int) -> str | None:
        """The runner's pid (its process group holds the job's processes)."""
        try:
            return "pid " + (self.control_dir(job_id, attempt) / "pid").read_text().strip()
        except OSError:
            return None

    def refusal(self, team: str, user: str, teams: int) -> str | None:
        """Why a job of ``team`` may not start here now (``accounts.RunAs.refusal``)."""
        return self.accounts.refusal(team, user, teams)

    def isolation(self) -> dict[str, object]:
        return self.accounts.isolation()

    def launch(self, spec: LaunchSpec) -> None:
        """Start the run, unless it is alive or was launched before; ``LaunchRefused`` (and
        nothing started) when no account may run it."""
        d = private_dir(self.control_dir(spec.job_id, spec.attempt))
        fd = os.open(d / "lock", os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # alive already: adopted, not started twice
            if (d / "exit").exists() or (d / "launched").exists():
                return  # finished, or launched before and gone: status() says which
            acct = self.accounts.account(spec.team, spec.user)
            work = self._work_dir(spec.job_id, spec.attempt, acct)
            _write_private(d / "spec.json", json.dumps({
                "command": spec.command, "cwd": str(work),
                "env": job_env(spec, work, acct), "account": acct.name,
                "switch": not acct.shared, "uid": acct.uid, "gid": acct.gid,
                "groups": list(acct.groups)}))
            _write_private(d / "launched", "")
            log = os.open(d / "log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
                          | os.O_CLOEXEC, 0o600)
            try:
                p = subprocess.Popen(
                    [sys.executable, "-m", "allotment.backends.runner", str(d), str(fd)],
                    env=_runner_env(), pass_fds=(fd,), start_new_session=True,
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=d)
            finally:
                os.close(log)
            _write_private(d / "pid", str(p.pid))
            self._children[p.pid] = p
        finally:
            os.close(fd)

    def _work_dir(self, job_id: int, attempt: int, acct: Account) -> Path:
        parent = private_dir(self.work_root / str(job_id), self._work_mode)
        d = parent / str(attempt)
        with contextlib.suppress(FileExistsError):
            os.mkdir(d, 0o700)
        dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            os.fchmod(dfd, 0o700)
            if not acct.shared:
                os.fchown(dfd, acct.uid, acct.gid)
        finally:
            os.close(dfd)
        return d

    def _reap(self) -> None:
        for pid, p in list(self._children.items()):
            if p.poll() is not None:
                del self._children[pid]

    def _reap_run(self, d: Path) -> None:
        """Wait for the runner of an exited run, started by this backend: it has written
        its exit status and freed its lock, so it is gone or about to be (a child left
        unwaited would stay a zombie until this process ends)."""
        pid = _run_pid(d)
        if pid is None:
            return
        p = self._children.pop(pid, None)
        if p is not None:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._children[pid] = p

    def status(self, job_id: int, attempt: int) -> RunStatus:
        self._reap()
        d = self.control_dir(job_id, attempt)
        if not (d / "lock").exists():
            return RunStatus(RunState.NEVER)
        fd = os.open(d / "lock", os.O_RDWR | os.O_NOFOLLOW)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return RunStatus(RunState.ALIVE)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        if (d / "launched").exists() and _lock_holders(d / "lock"):
            return RunStatus(RunState.ALIVE)  # a job unlocked its inherited lock: it still runs
        exit_file = d / "exit"
        if exit_file.exists():
            self._reap_run(d)
            return RunStatus(RunState.EXITED, int(exit_file.read_text().strip() or "1"))
        return RunStatus(RunState.GONE if (d / "launched").exists() else RunState.NEVER)

    def _signal(self, job_id: int, attempt: int, sig: int) -> None:
        """``sig`` to the run's process group, and to every process that still has the run's
        lock open: a job's process that left the group (setsid) is reached too."""
        d = self.control_dir(job_id, attempt)
        pid = _run_pid(d)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)
        for holder in _lock_holders(d / "lock"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(holder, sig)

    def terminate(self, job_id: int, attempt: int) -> None:
        self._signal(job_id, attempt, signal.SIGTERM)

    def kill(self, job_id: int, attempt: int) -> None:
        self._signal(job_id, attempt, signal.SIGKILL)

    def samples(self, job_id: int, attempt: int, gpu_ids: dict[str, list[int]],
                since: float | None) -> list[GpuSample]:
        out: list[GpuSample] = []
        work = self.run_dir(job_id, attempt)
        try:
            owner: int | None = os.lstat(work).st_uid  # set by launch(); a job cannot chown
        except OSError:
            owner = None
        raw_text = None if owner is None else read_tail(work / "util.jsonl", UTIL_LIMIT, owner)
        for line in (raw_text or b"").decode(errors="replace").splitlines():
            try:
                raw = json.loads(line)
                t, u = float(raw["time"]), float(raw["util_pct"])
                gpu, mem = int(raw.get("gpu", 0)), float(raw.get("mem_used_mib", 0.0))
            except (ValueError, KeyError, TypeError, AttributeError, OverflowError):
                continue  # a job's own half-written line: skip, never crash the loop
            if (since is None or t > since) and 0 <= u <= 100:
                out.append(GpuSample(t, gpu, u, mem, job_id=str(job_id)))
        if not self.fake_gpus:
            if self._nvml is None:
                self._nvml = NvmlSampler()
            ids = {i for node_ids in gpu_ids.values() for i in node_ids}
            out.extend(smp for smp in self._nvml.sample() if smp.gpu in ids
                       and (since is None or smp.time > since))
        return out


def job_env(spec: LaunchSpec, work: Path, acct: Account) -> dict[str, str]:
    """A job's whole environment (see the module docstring)."""
    ids = sorted(i for node_ids in spec.gpu_ids.values() for i in node_ids)
    env = {"PATH": JOB_PATH, "HOME": str(work)}
    env.update({k: os.environ[k] for k in PASSED_ENV if k in os.environ})
    if acct.login:
        env["USER"] = env["LOGNAME"] = acct.login
    env.update({
        "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in ids),
        "ALLOTMENT_JOB_ID": str(spec.job_id),
        "ALLOTMENT_ATTEMPT": str(spec.attempt),
        "ALLOTMENT_TEAM": spec.team,
        "ALLOTMENT_GPUS": str(spec.gpus),
        "ALLOTMENT_RUN_DIR": str(work),
        "ALLOTMENT_UTIL_FILE": str(work / "util.jsonl"),
    })
    return env


def _runner_env() -> dict[str, str]:
    """The runner (the service's user) needs only to find Python's packages."""
    env = {"PATH": JOB_PATH}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _lock_holders(lock: Path) -> set[int]:
    """The processes (other than this one) that have ``lock`` open: the runner, the job and
    whatever it started, in its process group or not, unless it closed the file. A job that
    closes its lock and leaves its process group is lost to the local executor (it has no
    cgroups); the README says so."""
    try:
        st = os.stat(lock)
    except OSError:
        return set()
    me, out = os.getpid(), set()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            fds = os.listdir(f"/proc/{name}/fd")
        except OSError:  # gone, or another account's (not ours to see)
            continue
        for fd in fds:
            try:
                f = os.stat(f"/proc/{name}/fd/{fd}")
            except OSError:
                continue
            if (f.st_ino, f.st_dev) == (st.st_ino, st.st_dev):
                out.add(int(name))
                break
    return out


def _check_reachable(root: Path) -> None:
    """Job accounts must reach ``root`` by path: every existing folder above it must let
    others traverse it (o+x), and none may let others replace what is inside (o+w without
    the sticky bit)."""
    for anc in root.parents:
        try:
            st = os.stat(anc)
        except FileNotFoundError:
            continue  # made 0711 with the work folder
        m = stat.S_IMODE(st.st_mode)
        if not m & stat.S_IXOTH:
            raise ConfigurationError(
                f"--work-dir {root}: job accounts cannot reach it, {anc} has mode {m:04o}; "
                f"choose a --work-dir whose parents are all searchable (e.g. "
                f"/var/lib/allotment-work), or chmod o+x {anc}")
        if m & stat.S_IWOTH and not m & stat.S_ISVTX:
            raise ConfigurationError(
                f"--work-dir {root}: {anc} is writable by every account (mode {m:04o}), so "
                "a job could replace the work folders; choose another --work-dir")
