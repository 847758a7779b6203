"""Running Slurm's client commands: the only place that starts a Slurm process.

Every command gets ``SLURM_CONF`` (from the caller, else the environment) and a timeout. A
command that cannot reach slurmctld or slurmdbd raises ``BackendUnavailable``; any other
failure raises ``BackendError`` with Slurm's own message.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from allotment.errors import BackendError, BackendUnavailable

# what Slurm's clients print when a daemon is down or unreachable
_UNREACHABLE = (
    "unable to contact slurm controller", "connection refused", "socket timed out",
    "slurm_persist_conn_open", "unable to connect to database", "slurmdbd: ",
    "problem talking to the database", "zero bytes were transmitted", "timed out",
    "communication connection failure", "unable to establish connection",
)


@dataclass(frozen=True)
class Slurm:
    """Runs ``sacctmgr``, ``sbatch``, ``squeue``, ``scontrol``, ``scancel``, ``sacct`` and
    ``sinfo`` with one ``SLURM_CONF``."""

    conf: str | None = None
    timeout_s: float = 30.0

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["SLURM_TIME_FORMAT"] = "%s"  # epoch seconds: no time zone to guess
        if self.conf:
            env["SLURM_CONF"] = self.conf
        return env

    def run(self, args: Sequence[str], check: bool = True) -> str:
        try:
            proc = subprocess.run(list(args), capture_output=True, text=True, env=self.env(),
                                  timeout=self.timeout_s)
        except FileNotFoundError as exc:
            raise BackendUnavailable(f"{args[0]} is not installed here: {exc}") from None
        except subprocess.TimeoutExpired:
            raise BackendUnavailable(f"{' '.join(args[:2])} timed out after "
                                     f"{self.timeout_s:g} s") from None
        if proc.returncode != 0 and check:
            msg = (proc.stderr.strip() or proc.stdout.strip() or f"exit {proc.returncode}")
            if any(u in msg.lower() for u in _UNREACHABLE):
                raise BackendUnavailable(f"{args[0]}: {msg.splitlines()[-1]}")
            raise BackendError(f"{' '.join(args[:3])}: {msg}")
        return proc.stdout

    def sacctmgr(self, *args: str) -> str:
        return self.run(["sacctmgr", "-i", "-n", "-P", *args])

    def rows(self, args: Sequence[str]) -> list[list[str]]:
        """``|``-separated output as rows (``-P`` style), blank lines dropped."""
        return [line.split("|") for line in self.run(args).splitlines() if line.strip()]
