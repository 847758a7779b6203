"""Engines and sessions. SQLite (the embedded default) runs in WAL mode with a busy timeout,
and every transaction starts with ``BEGIN IMMEDIATE`` so concurrent writers queue instead of
failing on a lock upgrade; PostgreSQL runs at READ COMMITTED with row locks where needed.
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

MIGRATIONS = Path(__file__).parent / "migrations"


def default_url() -> str:
    """``$ALLOTMENT_DB``, else ``allotment.db`` in the working directory."""
    return os.environ.get("ALLOTMENT_DB") or f"sqlite:///{Path.cwd() / 'allotment.db'}"


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
    """An engine and its session factory."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_url()
        self.engine = make_engine(self.url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on error."""
        with self.sessions() as s, s.begin():
            yield s

    def upgrade(self) -> None:
        upgrade(self.url, self.engine)

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
    from alembic import command

    cfg = alembic_config(url)
    if engine is not None:
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
                command.upgrade(cfg, "head")
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
    else:
        command.upgrade(cfg, "head")
