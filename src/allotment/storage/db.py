"""Engines and sessions. SQLite (the embedded default) runs in WAL mode with a busy timeout,
and every transaction starts with ``BEGIN IMMEDIATE`` so concurrent writers queue instead of
failing on a lock upgrade; PostgreSQL runs at READ COMMITTED with row locks where needed.

A database goes with a data directory (``--data-dir``, ``$ALLOTMENT_DATA_DIR``, default
``.allotment``): it holds the audit key and the audit head file (``storage/audit.py``), so
every process that appends to the audit log of one database must be given the same one.
"""

from __future__ import annotations

import copy
import os
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

from allotment.errors import ConfigurationError
from allotment.storage import audit

MIGRATIONS = Path(__file__).parent / "migrations"
DEFAULT_DATA_DIR = ".allotment"


def default_data_dir() -> Path:
    """``$ALLOTMENT_DATA_DIR``, else ``.allotment`` in the working directory."""
    return Path(os.environ.get("ALLOTMENT_DATA_DIR") or DEFAULT_DATA_DIR)


def default_url(data_dir: Path | str | None = None) -> str:
    """The one default of every command: ``$ALLOTMENT_DB``, else ``allotment.db`` in the
    data directory (``data_dir``, else ``default_data_dir()``)."""
    folder = Path(data_dir) if data_dir is not None else default_data_dir()
    return os.environ.get("ALLOTMENT_DB") or f"sqlite:///{(folder / 'allotment.db').resolve()}"


def shown_url(url: str) -> str:
    """A database URL as it may be printed: without its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def require_database(url: str) -> None:
    """Refuse, in one line and creating nothing, a database that does not exist: a SQLite
    file that is not there (connecting would create it), or a PostgreSQL database the
    server does not have or will not let us reach. For every command but the ones that
    make a new service's database (``allot up``, ``allot serve --create-db``)."""
    if url.startswith("sqlite"):
        name = make_url(url).database
        if name and name != ":memory:" and not Path(name).is_file():
            raise ConfigurationError(
                f"database {name} does not exist: give --db or $ALLOTMENT_DB, or --data-dir "
                "of the service's data directory (`allot up` makes a new one)")
        return
    from sqlalchemy.exc import SQLAlchemyError

    engine = make_engine(url)
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as exc:
        cause = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise ConfigurationError(f"database {shown_url(url)}: cannot open it: "
                                 f"{cause[0] if cause else type(exc).__name__}") from None
    finally:
        engine.dispose()


# SQLite's durability. In WAL mode NORMAL syncs the WAL only at checkpoints: a commit
# survives the process being killed, but the last commits may be lost on power loss or an
# OS crash. FULL syncs the WAL at every commit, so an acknowledged job survives that too.
SQLITE_SYNCHRONOUS = "FULL"


class WriterQueue:
    """First come, first served among this process's writers of one SQLite file.

    Every transaction takes SQLite's write lock at its start (BEGIN IMMEDIATE). Left to
    SQLite, writers that find it taken sleep and poll (its busy handler backs off to 100 ms
    sleeps), so under load a writer may lose again and again: with 50 clients submitting at
    once, some 201s took seconds. Queued here in arrival order, each waits only for the
    transactions ahead of it. (Writers in other processes still meet SQLite's own wait.)

    A release hands the turn to the next writer and wakes that one thread only. (Waking
    every waiter to let each check whether its turn had come cost, with 50 writers
    queued, some 50 thread switches per transaction, all competing for the interpreter
    with the one thread that held the lock: ``benchmarks/submit_load.py``.)
    """

    def __init__(self, timeout_s: float = 60.0) -> None:
        self.lock = threading.Lock()
        self.waiting: deque[_Waiter] = deque()  # in arrival order
        self.holder: object | None = None
        self.timeout_s = timeout_s

    def acquire(self, owner: object) -> None:
        with self.lock:
            if self.holder is None and not self.waiting:
                self.holder = owner
                return
            me = _Waiter(owner)
            self.waiting.append(me)
        if me.turn.wait(self.timeout_s):
            return  # the releaser made us the holder
        with self.lock:
            if self.holder is owner:  # handed over just as the wait timed out
                return
            self.waiting.remove(me)
        raise ConfigurationError(
            f"database is locked: waited {self.timeout_s:.0f} s for the "
            "transactions ahead of this one")

    def release(self, owner: object) -> None:
        with self.lock:
            if self.holder is not owner:
                return
            if self.waiting:
                nxt = self.waiting.popleft()
                self.holder = nxt.owner
                nxt.turn.set()
            else:
                self.holder = None


class _Waiter:
    """A writer waiting in a ``WriterQueue``; ``turn`` is set when the lock is its own."""

    __slots__ = ("owner", "turn")

    def __init__(self, owner: object) -> None:
        self.owner = owner
        self.turn = threading.Event()


_QUEUES: dict[str, WriterQueue] = {}
_QUEUES_LOCK = threading.Lock()


def writer_queue(path: str) -> WriterQueue:
    with _QUEUES_LOCK:
        queue = _QUEUES.get(path)
        if queue is None:
            queue = _QUEUES[path] = WriterQueue()
        return queue


class QueuedConnection(sqlite3.Connection):
    """A SQLite connection that gives its place in the writer queue back when its
    transaction ends (after the commit or rollback itself, not before)."""

    queue: WriterQueue | None = None

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            if self.queue is not None:
                self.queue.release(self)

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            if self.queue is not None:
                self.queue.release(self)

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.queue is not None:
                self.queue.release(self)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False,
                                                  "factory": QueuedConnection},
                               pool_size=50, max_overflow=50, pool_timeout=120)
        queue = writer_queue(str(engine.url.database))

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
            if conn.get_execution_options().get("allotment_read_only"):
                conn.exec_driver_sql("BEGIN")  # a reader: WAL lets it run beside the writer
                return
            dbapi_conn = conn.connection.dbapi_connection
            if isinstance(dbapi_conn, QueuedConnection):
                dbapi_conn.queue = queue
                queue.acquire(dbapi_conn)
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                queue.release(dbapi_conn)
                raise

        return engine
    if url.startswith("postgresql"):
        return create_engine(url, pool_size=20, max_overflow=40, pool_pre_ping=True,
                             pool_timeout=120)
    raise ConfigurationError(f"database URL {url!r}: use sqlite:///PATH or postgresql+psycopg://")


class Database:
    """An engine, its session factory, and the data directory of its audit key and head."""

    def __init__(self, url: str | None = None, data_dir: Path | str | None = None) -> None:
        self.url = url or default_url(data_dir)
        self.engine = make_engine(self.url)
        self.audit = audit.AuditKeys(data_dir if data_dir is not None else default_data_dir())
        self.sessions = sessionmaker(self.engine, expire_on_commit=False,
                                     info=audit.session_info(self.audit))
        # read-only sessions: on SQLite they do not queue for the write lock (a write in one
        # would fail under contention: use ``sessions`` or ``session`` to write)
        self.readers = sessionmaker(
            self.engine.execution_options(allotment_read_only=True), expire_on_commit=False,
            info=audit.session_info(self.audit))
        self.fence: Callable[[Session], None] | None = None

    def fenced(self, fence: Callable[[Session], None]) -> Database:
        """This database (the same engine and sessions) with ``fence`` called at the start
        of every ``session()`` transaction; it raises to refuse the transaction."""
        other = copy.copy(self)
        other.fence = fence
        return other

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on error."""
        with self.sessions() as s, s.begin():
            if self.fence is not None:
                self.fence(s)
            yield s

    def open_pool(self, n: int) -> None:
        """Open ``n`` connections (at most the pool's size) and leave them in the pool, so
        that a burst of requests right after the start does not open them one by one
        while the first requests wait (``benchmarks/submit_load.py``: 50 clients at once)."""
        size = getattr(self.engine.pool, "size", lambda: n)()
        conns = [self.engine.connect() for _ in range(min(n, size))]
        for conn in conns:
            conn.close()

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
