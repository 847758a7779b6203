"""The process the local backend starts for each run: ``python -m allotment.backends.runner
CONTROL_DIR LOCK_FD``, as the service's user.

It holds the run's lock (inherited, already taken by the launcher, so the lock is never free
between launch and exit), writes its PID, and runs the command of ``spec.json`` with
``/bin/sh`` in its own process group (the session the launcher created), as the job's account
(its uid, gid and groups, set in the child before exec), in the job's work folder, with the
job's environment and umask 077. The shell reads the command from a memfd, so that it is not
in any process's arguments. Its stdout and stderr are the run's log, opened by the launcher.
It writes the exit code atomically when the command ends (127 if it could not be started,
with the reason in the log). SIGTERM reaches the whole group; the runner itself outlives it
to record the exit code.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    control, lock_fd = Path(argv[0]), int(argv[1])
    os.umask(0o077)
    _write(control / "pid", str(os.getpid()))
    signal.signal(signal.SIGTERM, lambda *_: None)  # the group's TERM is for the command
    spec = json.loads((control / "spec.json").read_text())
    who: dict[str, Any] = {}
    if spec["switch"]:
        who = {"user": spec["uid"], "group": spec["gid"], "extra_groups": spec["groups"]}
    # the shell reads the command from an anonymous file, not from its arguments, which
    # every account on the machine can read (ps)
    script = os.memfd_create("allotment-command")
    os.write(script, spec["command"].encode())
    os.lseek(script, 0, os.SEEK_SET)
    try:
        child = subprocess.Popen(["/bin/sh", f"/dev/fd/{script}"], pass_fds=(lock_fd, script),
                                 cwd=spec["cwd"], env=spec["env"], umask=0o077, **who)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"allotment: cannot start the job as {spec['account']}: {exc}", file=sys.stderr,
              flush=True)
        _write(control / "exit", "127")
        return 0
    code = child.wait()
    _write(control / "exit", str(128 - code if code < 0 else code))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
