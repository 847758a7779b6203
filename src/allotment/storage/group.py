"""Group commit: many small write transactions of concurrent requests run as one.

Each caller hands in a function of a session; it waits while a leader (the first caller
that found no batch running) runs every function waiting at that moment, each in a
savepoint of one transaction, and commits once. A caller returns (or raises) only after
that commit: what it is told was written is on disk, as if it had committed alone. A
function that raises has its savepoint rolled back, so its writes, and only its, are
undone, and the caller gets its exception; if the commit itself fails, every caller of
the batch gets that error and nothing of the batch was written.

Why: on SQLite every write transaction holds the one write lock and, at
``synchronous=FULL``, pays an fsync of its own. With 50 clients submitting at once, each
submit waited behind 49 others' lock-and-fsync, and one slow fsync (the disk shared with
other work) held all of them (``benchmarks/submit_load.py``: p99 792 ms). A batch takes
the lock once and syncs once for all the submits that queued meanwhile.

On SQLite a batch answers the reads its functions repeat once, and writes their inbox
notes in one statement (``storage.batch``): fewer statements, a shorter hold of the write
lock.

While a batch runs, newcomers queue for the next one; when it ends, its leader hands the
lead to the first of them (or, if none, the next caller leads), so the batches follow one
another with no thread polling. A batch takes at most ``max_batch`` functions, so that it
holds the write lock (and the scheduler loop waits) for a bounded time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

from sqlalchemy.orm import Session

from allotment.storage import batch as batch_memory
from allotment.storage import inbox
from allotment.storage.db import Database

T = TypeVar("T")


class _Call(Generic[T]):
    """One caller's function, and then its outcome."""

    __slots__ = ("done", "error", "fn", "leads", "ran", "value")

    def __init__(self, fn: Callable[[Session], T]) -> None:
        self.fn = fn
        self.done = threading.Event()  # set when it ran and committed, or it must lead
        self.leads = False
        self.ran = False
        self.value: T | None = None
        self.error: BaseException | None = None


class GroupCommit:
    """Runs functions of a session in shared transactions of ``db`` (see the module)."""

    def __init__(self, db: Database, max_batch: int = 64) -> None:
        self.db = db
        self.max_batch = max_batch
        self.lock = threading.Lock()
        self.waiting: list[_Call[Any]] = []  # in arrival order
        self.leading = False  # a batch is running, or its lead is being handed over

    def run(self, fn: Callable[[Session], T]) -> T:
        """``fn(s)`` in a savepoint of a shared transaction; its result once committed."""
        call: _Call[T] = _Call(fn)
        with self.lock:
            self.waiting.append(call)
            if not self.leading:
                self.leading = call.leads = True
        while not call.ran:
            if not call.leads:
                call.done.wait()
            if call.leads and not call.ran:
                self._lead()
        if call.error is not None:
            raise call.error
        return cast(T, call.value)

    def _lead(self) -> None:
        with self.lock:
            batch = self.waiting[:self.max_batch]
            del self.waiting[:self.max_batch]
        try:
            self._commit(batch)
        finally:
            for call in batch:
                call.ran = True
                call.leads = False
            with self.lock:
                if self.waiting:  # the next batch's leader: the first of those waiting
                    nxt = self.waiting[0]
                    nxt.leads = True
                    nxt.done.set()
                else:
                    self.leading = False
            for call in batch:
                call.done.set()

    def _commit(self, batch: list[_Call[Any]]) -> None:
        try:
            with self.db.session() as s:
                batch_memory.begin(s)
                try:
                    for call in batch:
                        at = batch_memory.mark(s)
                        try:
                            with s.begin_nested():
                                call.value = call.fn(s)
                        except Exception as exc:  # this caller's error, for this caller only
                            call.error = exc
                            batch_memory.undo(s, at)
                    inbox.write_deferred(s)
                finally:
                    batch_memory.end(s)
        except BaseException as exc:  # the transaction failed: nothing of it was written
            for call in batch:
                if call.error is None:
                    call.error = exc
                    call.value = None
            if not isinstance(exc, Exception):
                raise
