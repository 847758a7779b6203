"""The process the local backend starts for each run: ``python -m allotment.backends.runner
RUN_DIR LOCK_FD -- command...``.

It holds the run's lock (inherited, already taken by the launcher, so the lock is never free
between launch and exit), writes its PID, runs the command in its own process group (the
session the launcher created), and writes the exit code atomically when the command ends.
SIGTERM reaches the whole group; the runner itself outlives it to record the exit code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    run_dir, lock_fd, cmd = Path(argv[0]), int(argv[1]), argv[3:]
    _write(run_dir / "pid", str(os.getpid()))
    signal.signal(signal.SIGTERM, lambda *_: None)  # the group's TERM is for the command
    child = subprocess.Popen(cmd, pass_fds=(lock_fd,), cwd=run_dir)
    code = child.wait()
    _write(run_dir / "exit", str(128 - code if code < 0 else code))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
