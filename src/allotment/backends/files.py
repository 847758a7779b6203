"""Files the service reads where a job may have had a hand: never follow a link, never
block, never read more than asked.

A job may replace a file the service reads with a symlink (to the client config, another
job's log, ``/etc/shadow``), a FIFO (a plain open would block the scheduler loop or the API),
a folder, a hard link to a file of another account, or a 10 GB file. ``read_tail`` opens the
last path component with ``O_NOFOLLOW | O_NONBLOCK``, accepts only a regular file owned by
the expected account, and reads at most ``limit`` bytes from its end.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def read_tail(path: Path | str, limit: int, owner: int | None = None) -> bytes | None:
    """The last ``limit`` bytes of a regular file (owned by ``owner`` if given), or None
    when it is missing or is anything else."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
                     | os.O_CLOEXEC)
    except OSError:  # missing, a symlink (ELOOP), not permitted
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (owner is not None and st.st_uid != owner):
            return None
        start = max(0, st.st_size - limit)
        chunks: list[bytes] = []
        left = limit
        while left > 0:
            chunk = os.pread(fd, min(left, 1 << 20), start)
            if not chunk:
                break
            chunks.append(chunk)
            start += len(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def private_dir(path: Path, mode: int = 0o700) -> Path:
    """Create ``path`` (and missing parents, also ``mode``) or tighten it to ``mode``; it must
    be a real folder (not a symlink) owned by this process's user."""
    missing = []
    p = Path(path)
    while not p.exists() and not p.is_symlink():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, mode)
            os.chmod(d, mode)  # the umask may have taken bits off
        except FileExistsError:
            pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(f"{path} is not a folder (a symlink or a file)")
    if st.st_uid != os.geteuid():
        raise PermissionError(f"{path} belongs to uid {st.st_uid}, not to this service "
                              f"(uid {os.geteuid()})")
    if stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)
    return Path(path)
