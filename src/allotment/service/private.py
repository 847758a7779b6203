"""The service's files are its own: whatever the umask it was started with, the data folder
is 0700 and what it writes there 0600, the SQLite database and its ``-wal`` and ``-shm``
files included (SQLite gives those the database file's mode).

``private_service_files`` runs when ``allot serve``, ``allot scheduler`` or ``allot up``
starts, before the database is opened: it sets the process umask to 077 and tightens what an
older version left world-readable.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from sqlalchemy.engine import make_url

from allotment.backends.files import private_dir
from allotment.errors import ConfigurationError


def sqlite_path(db_url: str) -> Path | None:
    """The database file of a SQLite URL (None for another database or in-memory)."""
    if not db_url.startswith("sqlite"):
        return None
    name = make_url(db_url).database
    return Path(name) if name and name != ":memory:" else None


def private_service_files(data_dir: Path, db_url: str | None) -> None:
    os.umask(0o077)
    try:
        private_dir(data_dir)
    except OSError as exc:
        raise ConfigurationError(f"--data-dir {data_dir}: {exc}") from None
    private_database(db_url)


def private_database(db_url: str | None) -> None:
    """umask 077, and a SQLite database (with its -wal, -shm, -journal) tightened to 0600:
    for every command that may create or open it (``allot admin create-user`` too)."""
    os.umask(0o077)
    path = sqlite_path(db_url or "")
    if path is None:
        return
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
        with contextlib.suppress(FileNotFoundError):
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() \
                    and stat.S_IMODE(st.st_mode) != 0o600:
                os.chmod(p, 0o600)
