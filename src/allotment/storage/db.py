"""Engines and sessions. SQLite (the embedded default) runs in WAL mode with a busy timeout,
and every transaction starts with ``BEGIN IMMEDIATE`` so concurrent writers queue instead of
failing on a lock upgrade; PostgreSQL runs at READ COMMITTED with row locks where needed.

A database goes with a data directory (``--data-dir``, ``$ALLOTMENT_DATA_DIR``, default
``.allotment``): it holds the audit key and the audit head file (``storage/audit.py``), so
every process that appends to the audit log of one database must be given the same one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from allotment.errors import ConfigurationError
from allotment.storage import audit

MIGRATIONS = Path(__file__).parent / "migrations"
DEFAULT_DATA_DIR = ".allotment"


def default_url() -> str:
    """``$ALLOTMENT_DB``, else ``allotment.db`` in the working directory."""
    return os.environ.get("ALLOTMENT_DB") or f"sqlite:///{Path.cwd() / 'allotment.db'}"


def default_data_dir() -> Path:
    """``$ALLOTMENT_DATA_DIR``, else ``.allotment`` in the working directory."""
    return Path(os.environ.get("ALLOTMENT_DATA_DIR") or DEFAULT_DATA_DIR)


# SQLite's durability. In WAL mode NORMAL syncs the WAL only at checkpoints: a commit
# survives the process being killed, but the last commits may be lost on power loss or an
# OS crash. FULL syncs the WAL at every commit, so an acknowledged job survives that too.
SQLITE_SYNCHRONOUS = "FULL"


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False},
                               pool_size=50, max_overflow=50, pool_timeout=120)

        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={SQLITE_SYNCHRONOUS}")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if url.startswith("postgresql"):
        return create_engine(url, pool_size=20, max_overflow=40, pool_pre_ping=True,
                             pool_timeout=120)
    raise ConfigurationError(f"database URL {url!r}: use sqlite:///PATH or postgresql+psycopg://")


class Database:
    """An engine, its session factory, and the data directory of its audit key and head."""

    def __init__(self, url: str | None = None, data_dir: Path | str | None = None) -> None:
        self.url = url or default_url()
        self.engine = make_engine(self.url)
        self.audit = audit.AuditKeys(data_dir if data_dir is not None else default_data_dir())
        self.sessions = sessionmaker(self.engine, expire_on_commit=False,
                                     info=audit.session_info(self.audit))

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on error."""
        with self.sessions() as s, s.begin():
            yield s

    def upgrade(self) -> None:
        upgrade(self.url, self.engine)

    def require_current_schema(self) -> None:
        """Refuse (naming both revisions) a database whose schema is older than this code's,
        for commands that only read and so do not upgrade it."""
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        head = ScriptDirectory.from_config(alembic_config(self.url)).get_current_head()
        with self.engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
        if current != head:
            raise ConfigurationError(
                f"the database's schema is at revision {current or 'none'}, this Allotment "
                f"needs {head}: start the service (allot serve / up / scheduler) once to "
                "upgrade it; the upgrade keeps the audit entries as they are")

    def check_audit_key(self) -> None:
        """At a process's start: make the audit key on first start, refuse one that is not
        the key of this database's chain."""
        with self.session() as s:
            audit.check_key(s)

    def dispose(self) -> None:
        self.engine.dispose()


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, engine: Engine | None = None) -> None:
    """Bring the schema to the newest Alembic revision (idempotent)."""
    migrate(url, engine, "head")


def migrate(url: str, engine: Engine | None, revision: str, down: bool = False) -> None:
    """Upgrade (or with ``down``, downgrade) the schema to ``revision``."""
    from alembic import command

    step = command.downgrade if down else command.upgrade
    cfg = alembic_config(url)
    if engine is None:
        step(cfg, revision)
        return
    with engine.connect() as conn:
        sqlite = engine.dialect.name == "sqlite"
        if sqlite:
            # SQLite rebuilds a table to change it (copy, drop, rename); with foreign
            # keys on, dropping the old table would cascade into the rows pointing at
            # it. SQLite's own procedure: foreign keys off outside the transaction,
            # rebuild, check, on again. (Plain Alembic engines have them off already.)
            conn.connection.dbapi_connection.execute(  # type: ignore[union-attr]
                "PRAGMA foreign_keys=OFF")
        try:
            cfg.attributes["connection"] = conn
            step(cfg, revision)
            if sqlite:
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise ConfigurationError(f"migration left broken references: {broken}")
            conn.commit()
        finally:
            if sqlite:
                conn.rollback()
                conn.connection.dbapi_connection.execute(  # type: ignore[union-attr]
                    "PRAGMA foreign_keys=ON")
