"""The Slurm backend: Allotment's admitted jobs run as Slurm batch jobs.

A run ``(job, attempt)`` is the Slurm job named ``<prefix>-<job>-<attempt>`` (the prefix
carries the database's ``install_id``, so job ids of two databases never meet): ``launch`` looks
the name up first, so a launch repeated after a crash (or after slurmctld comes back) never
submits twice. The account is the team's (``sync.account_name``); the QOS is
``allot_borrow`` for a job with borrowed GPUs (Slurm may requeue it for guaranteed work) and
the team's own (``sync.team_qos``) otherwise; ``--nodelist`` pins it to the nodes Allotment
placed it on.

The command of a one-node job runs as a job step (``srun``), not in the batch shell: when
Slurm preempts a job it signals the steps (SIGTERM) at the start of ``GraceTime`` and the
batch shell only when the grace has run out (measured on Slurm 22.05: a step's trap at
+0.1 s, the batch shell's at the end of the grace). ``--overlap`` lets the command start
steps of its own. A job over several nodes keeps its command in the batch shell, which is
expected to start its ranks with ``srun`` (steps, signalled as above). ``terminate``
signals the steps only, as Slurm's preemption does: ``srun`` turns a SIGTERM of its own
into SIGKILL of its step. Where the step cannot start (slurmctld down just as the job
began), the command runs in the batch shell (``batch_command``).
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Any

from allotment.backends.base import JOB_PATH, LaunchSpec, RunStatus
from allotment.backends.slurm.cmd import Slurm
from allotment.backends.slurm.sync import BORROW_QOS, account_name, team_qos
from allotment.domain.jobstate import RunState
from allotment.errors import BackendError
from allotment.reclaim.samples import GpuSample

QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING",
          "RESV_DEL_HOLD", "SPECIAL_EXIT"}
ALIVE = {"RUNNING", "COMPLETING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "RESIZING",
         "STOPPED"}
GONE = {"NODE_FAIL", "BOOT_FAIL", "REVOKED"}


def exit_code(text: str) -> int | None:
    """Slurm's ``ExitCode=code:signal`` as a shell would report it (128 + signal)."""
    code, _, sig = text.partition(":")
    try:
        c, s = int(code), int(sig or 0)
    except ValueError:
        return None
    return 128 + s if s else c


def gpu_util(sstat_out: str) -> float | None:
    """The highest ``gres/gpuutil`` of a job's steps in ``sstat -o TRESUsageInAve`` output
    (percent), or None where Slurm gathers none (fake GPUs, no NVML plugin)."""
    best = None
    for line in sstat_out.splitlines():
        for part in line.split(","):
            key, _, value = part.strip().partition("=")
            if key == "gres/gpuutil":
                try:
                    v = float(value)
                except ValueError:
                    continue
                best = v if best is None else max(best, v)
    return best


# The step writes a marker before it runs the command. No marker after srun returned: the
# step never started (slurmctld unreachable when the job began, say), and the command runs
# in the batch shell instead, without the early SIGTERM, rather than not at all.
_STEP = ('started="${TMPDIR:-/tmp}/allotment-step-$SLURM_JOB_ID"; rm -f "$started"\n'
         'srun --overlap --ntasks=1 --nodes=1 /bin/sh -c \': > "$0"; exec /bin/sh -c "$1"\' '
         '"$started" {cmd}\n'
         'rc=$?\n'
         'if [ -e "$started" ]; then rm -f "$started"; exit "$rc"; fi\n'
         'echo "allotment: the job step did not start (srun exit $rc): '
         'running the command in the batch shell" >&2\n'
         'exec /bin/sh -c {cmd}\n')


def batch_command(command: str, nodes: int) -> str:
    """The batch script's body for a job on ``nodes`` nodes: a one-node job's command as
    a one-task step, so that preemption signals it at once (see above)."""
    if nodes > 1:
        return command
    return _STEP.replace("{cmd}", shlex.quote(command))


def run_status(state: str, reason: str, code: str) -> RunStatus:
    """A Slurm job state (squeue ``%T`` / sacct ``State``) as a ``RunStatus``."""
    state = state.split()[0].rstrip("+") if state else ""
    if state in QUEUED:
        return RunStatus(RunState.QUEUED, detail=f"{state} (Reason={reason or 'None'})")
    if state in ALIVE:
        return RunStatus(RunState.ALIVE, detail=state)
    if state in GONE:
        return RunStatus(RunState.GONE, detail=state)
    if state == "COMPLETED":
        return RunStatus(RunState.EXITED, exit_code(code) or 0, state)
    c = exit_code(code)
    if state == "CANCELLED" and not c:
        c = 143
    return RunStatus(RunState.EXITED, c if c else 1, state)


class SlurmBackend:
    name = "slurm"

    def __init__(self, slurm: Slurm, runs_dir: Path, prefix: str = "allot",
                 partition: str | None = None, usage_every_s: float = 60.0) -> None:
        self.usage_every_s = usage_every_s
        self.snapshot_s = 1.0
        self.sstat_every_s = 30.0
        self._sstat_at: dict[tuple[int, int], float] = {}
        self._snapshot: tuple[float, dict[str, list[str]]] | None = None
        self.slurm = slurm
        self.runs_dir = Path(runs_dir).resolve()
        self.prefix = prefix
        self.partition = partition

    def job_name(self, job_id: int, attempt: int) -> str:
        return f"{self.prefix}-{job_id}-{attempt}"

    def _queue(self) -> dict[str, list[str]]:
        """One ``squeue`` of this installation's jobs (all states), reused for
        ``snapshot_s``: a tick asks about every active job, and one call serves them all."""
        now = time.monotonic()
        if self._snapshot is None or now - self._snapshot[0] > self.snapshot_s:
            rows = self.slurm.rows(["squeue", "-h", "-t", "all", "-o", "%j|%i|%T|%r"])
            jobs = {r[0]: r[1:] for r in rows if r[0].startswith(self.prefix + "-")}
            self._snapshot = (now, jobs)
        return self._snapshot[1]

    def find(self, job_id: int, attempt: int) -> tuple[str, RunStatus] | None:
        """The Slurm job id and status of a run, or None if Slurm never had it."""
        name = self.job_name(job_id, attempt)
        row = self._queue().get(name)
        if row is not None:
            sid, state, reason = [*row, "", "", ""][:3]
            code = ""
            if state not in QUEUED and state not in ALIVE:
                code = self._scontrol_exit(sid)
            return sid, run_status(state, reason, code)
        rows = self.slurm.rows(["sacct", "-X", "-n", "-P", "-a", "--name", name,
                                "-S", "now-60days", "-o", "jobidraw,state,exitcode"])
        if rows:
            sid, state, code = (rows[-1] + ["", "", ""])[:3]
            return sid, run_status(state, "", code)
        return None

    def _scontrol_exit(self, sid: str) -> str:
        try:
            out = self.slurm.run(["scontrol", "-o", "show", "job", sid])
        except BackendError:
            return ""
        for part in out.split():
            if part.startswith("ExitCode="):
                return part.split("=", 1)[1]
        return ""

    def launch(self, spec: LaunchSpec) -> None:
        if self.find(spec.job_id, spec.attempt) is not None:
            return
        name = self.job_name(spec.job_id, spec.attempt)
        log = self.log_path(spec.job_id, spec.attempt)
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        nodes = [n for n, ids in spec.gpu_ids.items() if ids]
        args = ["sbatch", "--parsable", "-J", name, "-A", account_name(spec.team),
                "-q", BORROW_QOS if spec.borrowed_gpus else team_qos(spec.team),
                "--requeue", "-o", log, "--comment", f"allotment job {spec.job_id}",
                # the job's environment is these and Slurm's own SLURM_* only, never the
                # service's (its tokens, config and database paths)
                f"--export=PATH={JOB_PATH},ALLOTMENT_JOB_ID={spec.job_id},"
                f"ALLOTMENT_ATTEMPT={spec.attempt},ALLOTMENT_GPUS={spec.gpus}"]
        if self.partition:
            args += ["-p", self.partition]
        if len(nodes) <= 1:
            args += [f"--gres=gpu:{spec.gpus}"]
        else:
            args += [f"--nodes={len(nodes)}", f"--gpus={spec.gpus}"]
        if nodes:
            args += [f"--nodelist={','.join(nodes)}"]
        self.slurm.run([*args, "--wrap", batch_command(spec.command, len(nodes))])
        self._snapshot = None

    def run_id(self, job_id: int, attempt: int) -> str | None:
        found = self.find(job_id, attempt)
        return None if found is None else found[0]

    def status(self, job_id: int, attempt: int) -> RunStatus:
        found = self.find(job_id, attempt)
        return RunStatus(RunState.NEVER) if found is None else found[1]

    def terminate(self, job_id: int, attempt: int) -> None:
        found = self.find(job_id, attempt)
        if found is None:
            return
        sid, st = found
        if st.state == RunState.QUEUED:  # nothing to checkpoint: cancel it
            self.slurm.run(["scancel", sid], check=False)
        elif st.state == RunState.ALIVE:  # the steps, as Slurm's preemption does (above)
            self.slurm.run(["scancel", "-s", "TERM", sid], check=False)
        self._snapshot = None

    def kill(self, job_id: int, attempt: int) -> None:
        found = self.find(job_id, attempt)
        if found is not None and found[1].state in (RunState.QUEUED, RunState.ALIVE):
            self.slurm.run(["scancel", found[0]], check=False)
            self._snapshot = None

    def samples(self, job_id: int, attempt: int, gpu_ids: dict[str, list[int]],
                since: float | None) -> list[GpuSample]:
        """GPU utilisation from Slurm's job accounting (``sstat``'s ``gres/gpuutil``), which
        Slurm gathers only on real NVIDIA GPUs with ``AccountingStorageTRES=gres/gpuutil``;
        the push and file samplers feed the idle rule everywhere else."""
        last = self._sstat_at.get((job_id, attempt), float("-inf"))
        if time.monotonic() - last < self.sstat_every_s:
            return []  # one sstat per job per interval, not one per tick
        if len(self._sstat_at) > 100_000:
            self._sstat_at.clear()
        self._sstat_at[(job_id, attempt)] = time.monotonic()
        found = self.find(job_id, attempt)
        if found is None or found[1].state != RunState.ALIVE:
            return []
        try:
            out = self.slurm.run(["sstat", "-n", "-P", "-a", "-j", found[0],
                                  "-o", "TRESUsageInAve"], check=False)
        except BackendError:
            return []
        util = gpu_util(out)
        if util is None:
            return []
        now = time.time()
        ids = [i for node_ids in gpu_ids.values() for i in node_ids] or [0]
        return [GpuSample(now, g, util, 0.0) for g in ids]

    def import_usage(self, db: Any, start: float, end: float, now: float) -> int:
        """Usage per team and hour from ``sacct`` into the service's accounting."""
        from allotment.backends.slurm.service import import_usage

        return import_usage(db, self.slurm, start, end, now)

    def log_path(self, job_id: int, attempt: int) -> str:
        return str(self.runs_dir / "slurm" / f"{self.job_name(job_id, attempt)}.log")
