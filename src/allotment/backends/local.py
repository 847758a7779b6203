"""The local backend: runs admitted jobs as processes on this machine.

Each run lives in ``RUNS/<job>/<attempt>/``: ``lock`` (held by the runner and the command
for as long as they live), ``pid``, ``launched``, ``exit`` (written when the command ends),
``log`` (stdout and stderr) and ``util.jsonl`` (utilisation the job or a test pushes; see
``reclaim.samples``). The launcher takes the lock *before* it starts the runner and hands it
over, so "lock held" means "the run is alive" at every instant, and a restarted service
adopts live runs instead of starting them twice.

``CUDA_VISIBLE_DEVICES`` is set to the GPU indices the scheduler placed the job on; with
``fake_gpus`` the same path runs on a machine without GPUs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from allotment.backends.base import LaunchSpec, RunStatus
from allotment.reclaim.nvml import NvmlSampler
from allotment.reclaim.samples import GpuSample


class LocalBackend:
    name = "local"

    def __init__(self, runs_dir: Path, fake_gpus: bool = True) -> None:
        self.runs_dir = Path(runs_dir).resolve()  # the runner runs in the run folder
        self.fake_gpus = fake_gpus
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._nvml: NvmlSampler | None = None

    def run_dir(self, job_id: int, attempt: int) -> Path:
        return self.runs_dir / str(job_id) / str(attempt)

    def log_path(self, job_id: int, attempt: int) -> str | None:
        p = self.run_dir(job_id, attempt) / "log"
        return str(p) if p.exists() else None

    def run_id(self, job_id: int, attempt: int) -> str | None:
        """The runner's pid (its process group holds the job's processes)."""
        try:
            return "pid " + (self.run_dir(job_id, attempt) / "pid").read_text().strip()
        except OSError:
            return None

    def launch(self, spec: LaunchSpec) -> None:
        d = self.run_dir(spec.job_id, spec.attempt)
        d.mkdir(parents=True, exist_ok=True)
        fd = os.open(d / "lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # alive already: adopted, not started twice
            if (d / "exit").exists() or (d / "launched").exists():
                return  # finished, or launched before and gone: status() says which
            ids = sorted(i for node_ids in spec.gpu_ids.values() for i in node_ids)
            env = dict(os.environ)
            env.update({
                "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in ids),
                "ALLOTMENT_JOB_ID": str(spec.job_id),
                "ALLOTMENT_ATTEMPT": str(spec.attempt),
                "ALLOTMENT_TEAM": spec.team,
                "ALLOTMENT_GPUS": str(spec.gpus),
                "ALLOTMENT_RUN_DIR": str(d),
                "ALLOTMENT_UTIL_FILE": str(d / "util.jsonl"),
            })
            (d / "launched").write_text("")
            with open(d / "log", "ab") as log:
                p = subprocess.Popen(
                    [sys.executable, "-m", "allotment.backends.runner", str(d), str(fd), "--",
                     "/bin/sh", "-c", spec.command],
                    env=env, pass_fds=(fd,), start_new_session=True, stdin=subprocess.DEVNULL,
                    stdout=log, stderr=subprocess.STDOUT, cwd=d)
            (d / "pid").write_text(str(p.pid))
            self._children[p.pid] = p
        finally:
            os.close(fd)

    def _reap(self) -> None:
        for pid, p in list(self._children.items()):
            if p.poll() is not None:
                del self._children[pid]

    def status(self, job_id: int, attempt: int) -> RunStatus:
        self._reap()
        d = self.run_dir(job_id, attempt)
        if not (d / "lock").exists():
            return RunStatus("never")
        fd = os.open(d / "lock", os.O_RDWR)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return RunStatus("alive")
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        exit_file = d / "exit"
        if exit_file.exists():
            return RunStatus("exited", int(exit_file.read_text().strip() or "1"))
        return RunStatus("gone" if (d / "launched").exists() else "never")

    def _signal(self, job_id: int, attempt: int, sig: int) -> None:
        pid_file = self.run_dir(job_id, attempt) / "pid"
        try:
            pid = int(pid_file.read_text())
        except (OSError, ValueError):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)

    def terminate(self, job_id: int, attempt: int) -> None:
        self._signal(job_id, attempt, signal.SIGTERM)

    def kill(self, job_id: int, attempt: int) -> None:
        self._signal(job_id, attempt, signal.SIGKILL)

    def samples(self, job_id: int, attempt: int, gpu_ids: dict[str, list[int]],
                since: float | None) -> list[GpuSample]:
        out: list[GpuSample] = []
        util = self.run_dir(job_id, attempt) / "util.jsonl"
        if util.exists():
            for line in util.read_text().splitlines():
                try:
                    raw = json.loads(line)
                    t, u = float(raw["time"]), float(raw["util_pct"])
                except (ValueError, KeyError, TypeError):
                    continue  # a job's own half-written line: skip, never crash the loop
                if (since is None or t > since) and 0 <= u <= 100:
                    out.append(GpuSample(t, int(raw.get("gpu", 0)), u,
                                         float(raw.get("mem_used_mib", 0.0)), job_id=str(job_id)))
        if not self.fake_gpus:
            if self._nvml is None:
                self._nvml = NvmlSampler()
            ids = {i for node_ids in gpu_ids.values() for i in node_ids}
            out.extend(smp for smp in self._nvml.sample() if smp.gpu in ids
                       and (since is None or smp.time > since))
        return out
