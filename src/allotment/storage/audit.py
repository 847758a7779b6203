"""The append-only audit log: hash-chained, keyed, and with its head kept outside the
database too.

Entries. Entry k carries ``prev_hash`` (the hash of entry k-1, 64 zeros for the first) and
``hash = HMAC-SHA256(K, "allotment-audit-v2" || prev_hash || J)``, where J is the canonical
JSON of (seq, time, actor, action, subject, reason, data, scope) and K the audit key.
Entries written before the chain was keyed (databases made before migration 0003_trust)
keep their unkeyed ``sha256(prev_hash || J')``, J' the same without scope.

Keying. An append to a chain not yet keyed first appends an ``audit.keyed`` entry, keyed
itself, whose data records the unkeyed entries before it: how many, the last one's hash,
the problems found when they were checked then, and a digest of their scopes (which their
own hashes do not cover). Since every keyed hash covers its ``prev_hash``, that entry seals
the whole unkeyed part: changing any of it, even with the unkeyed chain recomputed, breaks
the keyed entry after it. On a new database it is entry 1.

The key. ``$ALLOTMENT_AUDIT_KEY`` (at least 32 characters), else ``DATA_DIR/audit.key`` (32
random bytes as hex, mode 0600, made on the first start with the data directory 0700).
The database keeps only the key's id (an HMAC of a constant under it), so a process given
another key is refused before it appends.

The head. The ``audit_head`` row holds the last (seq, hash); every append locks it, so
appends are serialised. After each transaction that appended commits, the line
``CHAIN_ID SEQ HASH`` of its last entry is appended to ``DATA_DIR/audit.head`` (O_APPEND,
fsync'd, one write per line: ``allot serve`` and a separate ``allot scheduler`` may both
append). Every line there must match an entry of the log, and the newest must be the log's
last entry: a tail deleted with the head row moved back shows as lines the log lacks.

Scope. Who may read an entry is decided when it is appended and stored in ``scope``
(``scope_for``); readers filter on it in SQL. ``verify`` recomputes the chain and compares
the head row and the head file; every problem names its entry, head row or file line.
README, "The audit log", states what this protects against and what it does not.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time as _time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Table, event, func, insert, or_, select
from sqlalchemy.orm import Session

from allotment.errors import ConfigurationError
from allotment.storage.models import AuditHead, AuditRow, JobRow, RequestRow

log = logging.getLogger("allotment.audit")

GENESIS = "0" * 64
KEYED_ACTION = "audit.keyed"
KEY_ENV = "ALLOTMENT_AUDIT_KEY"
KEY_FILE = "audit.key"
HEAD_FILE = "audit.head"
ORG, ADMIN = "org", "admin"
_KEYS = "allotment_audit_keys"  # Session.info: this database's AuditKeys
_PENDING = "allotment_audit_head"  # Session.info: the head to record after commit
_DECIDED = "allotment_audit_decided"  # Session.info: decisions on jobs, logged at commit
_MAX_PROBLEMS = 50
decisions_log = logging.getLogger("allotment.decisions")
Where = ColumnElement[bool]  # a condition on entries (``readable``)


# -- the formulas -----------------------------------------------------------------------
def _canonical(items: list[Any]) -> bytes:
    return json.dumps(items, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def unkeyed_hash(prev_hash: str, seq: int, time: float, actor: str, action: str, subject: str,
                 reason: str, data: dict[str, Any]) -> str:
    """``sha256(prev_hash || J')``: the hash of entries written before the chain was keyed."""
    body = _canonical([seq, repr(float(time)), actor, action, subject, reason, data])
    return hashlib.sha256(prev_hash.encode() + body).hexdigest()


def keyed_hash(key: bytes, prev_hash: str, seq: int, time: float, actor: str, action: str,
               subject: str, reason: str, data: dict[str, Any], scope: str) -> str:
    """``HMAC-SHA256(key, "allotment-audit-v2" || prev_hash || J)``."""
    body = _canonical([seq, repr(float(time)), actor, action, subject, reason, data, scope])
    return hmac.new(key, b"allotment-audit-v2" + prev_hash.encode() + body,
                    hashlib.sha256).hexdigest()


def key_id(key: bytes) -> str:
    """Names a key without revealing it: the first 16 hex digits of an HMAC under it."""
    return hmac.new(key, b"allotment-audit-key-id", hashlib.sha256).hexdigest()[:16]


# -- who may read an entry ------------------------------------------------------------------
def scope_for(s: Session, action: str, subject: str) -> str:
    """The scope of a new entry, from what it is about:

    - ``dispute:N`` -> ``dispute:N``: read by whoever may see dispute N (the rule of
      ``GET /v1/disputes/{id}``: its team's users, and the leads of the nodes it went to);
    - ``team:T`` -> ``team:T``; ``job:N`` and ``request:N`` -> ``team:T``, T the job's or
      request's team: read by T's users and the leads of the groups above T;
    - ``inventory``, ``org``, ``plan:N`` and the backend's health -> ``org``: everyone (the
      API shows all of them to every user anyway);
    - anything else (users, tokens, Slurm syncs, the chain's own entries) -> ``admin``.
    Unknown subjects fall to ``admin``: a new kind of entry is private until said otherwise.
    """
    kind, _, ref = subject.partition(":")
    if kind in ("dispute", "team") and ref:
        return subject
    if kind in ("job", "request") and ref.isdigit() and len(ref) < 10:
        owner: JobRow | RequestRow | None = (s.get(JobRow, int(ref)) if kind == "job"
                                             else s.get(RequestRow, int(ref)))
        return f"team:{owner.team}" if owner is not None else ADMIN
    if subject in ("inventory", "org") or (kind == "plan" and ref) \
            or action.startswith("backend."):
        return ORG
    return ADMIN


def readable(teams: list[str], dispute_scopes: Any) -> Where:
    """The entries of scope ``org``, of the ``teams``' scopes, or of a scope among
    ``dispute_scopes`` (a subquery of ``dispute:N`` scopes)."""
    return or_(AuditRow.scope == ORG, AuditRow.scope.in_([f"team:{t}" for t in teams]),
               AuditRow.scope.in_(dispute_scopes))


def page(s: Session, action: str | None, subject: str | None, contains: bool,
         where: Where | None, limit: int, offset: int) -> tuple[list[AuditRow], int]:
    """One page of the entries matching ``where`` (None: all), newest first, and how many
    match in all; ``action`` and ``subject`` match exactly, or as substrings with
    ``contains`` (``%`` and ``_`` are plain characters)."""
    conds = []
    for col, value in ((AuditRow.action, action), (AuditRow.subject, subject)):
        if value:
            conds.append(col.contains(value, autoescape=True) if contains else col == value)
    if where is not None:
        conds.append(where)
    q, c = select(AuditRow), select(func.count()).select_from(AuditRow)
    for cond in conds:
        q, c = q.where(cond), c.where(cond)
    total = int(s.execute(c).scalar_one())
    return list(s.execute(q.order_by(AuditRow.seq.desc()).limit(limit).offset(offset))
                .scalars()), total


# -- the key and the head file ----------------------------------------------------------------
class AuditKeys:
    """Where one database's audit key and head file live: ``$ALLOTMENT_AUDIT_KEY`` or
    ``data_dir/audit.key``, and ``data_dir/audit.head``."""

    def __init__(self, data_dir: Path | str) -> None:
        self.data_dir = Path(data_dir)
        self._key: bytes | None = None
        self._lock = threading.Lock()

    @property
    def key_path(self) -> Path:
        return self.data_dir / KEY_FILE

    @property
    def head_path(self) -> Path:
        return self.data_dir / HEAD_FILE

    def where(self) -> str:
        return f"${KEY_ENV}" if os.environ.get(KEY_ENV) else str(self.key_path)

    def load(self) -> bytes | None:
        """The key, or None if there is none yet (nothing is created)."""
        env = os.environ.get(KEY_ENV)
        if env:
            if len(env) < 32:
                raise ConfigurationError(f"{KEY_ENV}: give at least 32 characters "
                                         "(e.g. `openssl rand -hex 32`)")
            return env.encode()
        if self._key is not None:
            return self._key
        try:
            raw = self.key_path.read_text().strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigurationError(f"audit key {self.key_path}: {exc}") from None
        try:
            key = bytes.fromhex(raw)
        except ValueError:
            key = b""
        if len(key) < 32:
            raise ConfigurationError(f"audit key {self.key_path}: not 64 hex digits; it was "
                                     "edited, or is not an Allotment audit key")
        self._key = key
        return key

    def create(self) -> bytes:
        """The key, made now if there is none: 32 random bytes written to a private file and
        linked into place, so two processes starting at once agree on one key."""
        with self._lock:
            key = self.load()
            if key is not None:
                return key
            self._private_dir()
            tmp = self.data_dir / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    os.write(fd, (secrets.token_hex(32) + "\n").encode())
                    os.fsync(fd)
                finally:
                    os.close(fd)
                with contextlib.suppress(FileExistsError):  # another process was first
                    os.link(tmp, self.key_path)
            except OSError as exc:
                raise ConfigurationError(f"audit key {self.key_path}: cannot create it "
                                         f"({exc})") from None
            finally:
                tmp.unlink(missing_ok=True)
            key = self.load()
            assert key is not None
            return key

    def _private_dir(self) -> None:
        if not self.data_dir.exists():
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    def record_head(self, chain_id: str, seq: int, entry_hash: str) -> None:
        """Append ``CHAIN_ID SEQ HASH`` to the head file: one write, O_APPEND, fsync'd."""
        self._private_dir()
        fd = os.open(self.head_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{chain_id} {seq} {entry_hash}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def read_heads(self, offset: int = 0) -> tuple[list[tuple[int, str, int, str]], list[int],
                                                   int, int]:
        """Lines of the head file from byte ``offset`` on: (line number, chain, seq, hash)
        of each complete line, the numbers of malformed lines, the new offset and the
        number of lines before ``offset`` (so line numbers continue)."""
        try:
            with self.head_path.open("rb") as f:
                before = f.read(offset).count(b"\n") if offset else 0
                raw = f.read()
        except FileNotFoundError:
            return [], [], offset, 0
        except OSError as exc:
            raise ConfigurationError(f"audit head file {self.head_path}: {exc}") from None
        end = raw.rfind(b"\n") + 1  # a line still being written is read next time
        out, bad = [], []
        for k, line in enumerate(raw[:end].decode(errors="replace").splitlines(),
                                 start=before + 1):
            parts = line.split()
            if (len(parts) == 3 and parts[1].isdigit() and len(parts[1]) < 19
                    and len(parts[2]) == 64):
                out.append((k, parts[0], int(parts[1]), parts[2]))
            else:
                bad.append(k)
        return out, bad, offset + end, before


@event.listens_for(Session, "after_commit")
def _record_committed_head(s: Session) -> None:
    """The head file gets a line once the entries are committed (never for a transaction
    that rolled back); a failure to write it is logged and shows in ``verify``."""
    pending = s.info.pop(_PENDING, None)
    if pending is None:
        return
    keys, chain_id, seq, entry_hash = pending
    try:
        keys.record_head(chain_id, seq, entry_hash)
    except OSError as exc:
        log.error("audit entry %s is committed but not recorded in %s: %s", seq,
                  keys.head_path, exc)


@event.listens_for(Session, "after_rollback")
def _forget_head(s: Session) -> None:
    s.info.pop(_PENDING, None)


def _decided(s: Session, action: str, subject: str, reason: str, data: dict[str, Any],
             scope: str) -> None:
    """Remember a decision on a job, to be logged once committed (``_log_decisions``)."""
    if subject.startswith("job:"):
        team = scope.removeprefix("team:") if scope.startswith("team:") else data.get("team")
        s.info.setdefault(_DECIDED, []).append((action, subject[4:], str(team or ""), reason))


@event.listens_for(Session, "after_commit")
def _log_decisions(s: Session) -> None:
    """Every committed decision on a job, one log line each with its job, team and reason
    (``allotment.logs``: fields of their own in JSON lines)."""
    from allotment.logs import decision

    for action, job, team, reason in s.info.pop(_DECIDED, ()):
        decision(decisions_log, action, int(job) if job.isdigit() else job, team, reason)


@event.listens_for(Session, "after_rollback")
def _forget_decisions(s: Session) -> None:
    s.info.pop(_DECIDED, None)


def keys_of(s: Session) -> AuditKeys | None:
    keys = s.info.get(_KEYS)
    return keys if isinstance(keys, AuditKeys) else None


def session_info(keys: AuditKeys) -> dict[str, Any]:
    """The ``Session.info`` that gives a session's appends this key and head file."""
    return {_KEYS: keys}


# -- appending ---------------------------------------------------------------------------------
def _locked_head(s: Session) -> AuditHead:
    head = s.execute(select(AuditHead).where(AuditHead.id == 1).with_for_update()).scalar()
    if head is None:
        head = AuditHead(id=1, seq=0, hash=GENESIS)
        s.add(head)
        s.flush()
    return head


def _key_for(keys: AuditKeys, head: AuditHead) -> bytes:
    key = keys.load()
    if head.keyed_from is None:
        return key if key is not None else keys.create()
    fix = ("; start every Allotment process of this database with the same data directory "
           f"(--data-dir or $ALLOTMENT_DATA_DIR) or the same ${KEY_ENV}")
    if key is None:
        raise ConfigurationError(f"no audit key at {keys.where()}, but this database's audit "
                                 f"chain is keyed (key id {head.key_id}){fix}")
    if key_id(key) != head.key_id:
        raise ConfigurationError(f"the audit key at {keys.where()} (key id {key_id(key)}) is "
                                 f"not the key this database's audit chain is keyed with "
                                 f"(key id {head.key_id}){fix}")
    return key


def check_key(s: Session) -> None:
    """At a process's start: make the key if the chain is not keyed yet, else refuse a key
    that is not the chain's (before anything is appended with it)."""
    keys = keys_of(s)
    if keys is None:
        raise ConfigurationError("this database session has no audit key (open it with "
                                 "storage.db.Database)")
    head = s.get(AuditHead, 1)
    _key_for(keys, head if head is not None else AuditHead(id=1, seq=0, hash=GENESIS))


def _write(s: Session, head: AuditHead, key: bytes, time: float, actor: str, action: str,
           subject: str, reason: str, payload: dict[str, Any], scope: str) -> AuditRow:
    seq = head.seq + 1
    h = keyed_hash(key, head.hash, seq, time, actor, action, subject, reason, payload, scope)
    row = AuditRow(seq=seq, time=time, actor=actor, action=action, subject=subject,
                   reason=reason, data=payload, prev_hash=head.hash, hash=h, scope=scope)
    s.add(row)
    head.seq, head.hash = seq, h
    s.flush()
    return row


def _seal_unkeyed(s: Session, head: AuditHead, key: bytes, now: float) -> None:
    """Check the unkeyed entries, then append the ``audit.keyed`` entry that seals them."""
    chain = _Chain(None, "")
    for row in s.execute(select(AuditRow).where(AuditRow.seq <= head.seq)
                         .order_by(AuditRow.seq)).scalars():
        chain.feed(row)
    if chain.last != head.seq or chain.prev != head.hash:
        chain.problem(f"chain head says entry {head.seq} is last, the log ends at "
                      f"{chain.last} (tail deleted or head edited)")
    n = chain.n
    head.chain_id, head.key_id = secrets.token_hex(8), key_id(key)
    data = {"chain_id": head.chain_id, "key_id": head.key_id, "unkeyed_entries": n,
            "unkeyed_head": head.hash, "unkeyed_scopes": chain.scopes.hexdigest(),
            "unkeyed_problems": chain.problems[:_MAX_PROBLEMS]}
    reason = "audit chain keyed (HMAC-SHA256) from this entry on"
    if n:
        reason += (f"; the {n} unkeyed entries before it were checked: "
                   + ("intact" if not chain.problems
                      else f"{len(chain.problems)} problem(s)"))
    row = _write(s, head, key, now, "system", KEYED_ACTION, "audit", reason, data, ADMIN)
    head.keyed_from = row.seq
    if chain.problems:
        log.warning("the unkeyed audit entries had problems when the chain was keyed: %s",
                    "; ".join(chain.problems[:5]))


def _open_chain(s: Session, now: float) -> tuple[AuditKeys, AuditHead, bytes]:
    """This session's keys, the locked head and the key; seals an unkeyed chain first."""
    keys = keys_of(s)
    if keys is None:
        raise ConfigurationError("this database session has no audit key (open it with "
                                 "storage.db.Database)")
    head = _locked_head(s)
    key = _key_for(keys, head)
    if head.keyed_from is None:
        _seal_unkeyed(s, head, key, now)
    return keys, head, key


def append(s: Session, time: float, actor: str, action: str, subject: str, reason: str,
           data: dict[str, Any] | None = None, scope: str | None = None) -> AuditRow:
    """Append one entry inside the caller's transaction (committed with its decision);
    ``scope`` defaults to ``scope_for(action, subject)``."""
    keys, head, key = _open_chain(s, time)
    payload = json.loads(json.dumps(data or {}, sort_keys=True, default=str))
    scope = scope or scope_for(s, action, subject)
    row = _write(s, head, key, time, actor, action, subject, reason, payload, scope)
    _decided(s, action, subject, reason, payload, scope)
    assert head.chain_id is not None
    s.info[_PENDING] = (keys, head.chain_id, head.seq, head.hash)
    return row


@dataclass(frozen=True, slots=True)
class Entry:
    """One decision to append: who did what to which subject, and why; ``scope`` as in
    ``scope_for`` (None: derived from the subject)."""

    time: float
    actor: str
    action: str
    subject: str
    reason: str
    data: dict[str, Any]
    scope: str | None = None


def append_many(s: Session, entries: list[Entry]) -> None:
    """Append several entries in order, with one head update and one bulk insert (a
    scheduling cycle's decisions); the same chain as ``append``, entry by entry."""
    if not entries:
        return
    keys, head, key = _open_chain(s, entries[0].time)
    seq, prev = head.seq, head.hash
    rows = []
    for e in entries:
        seq += 1
        payload = json.loads(json.dumps(e.data, sort_keys=True, default=str))
        scope = e.scope or scope_for(s, e.action, e.subject)
        h = keyed_hash(key, prev, seq, e.time, e.actor, e.action, e.subject, e.reason,
                       payload, scope)
        rows.append({"seq": seq, "time": e.time, "actor": e.actor, "action": e.action,
                     "subject": e.subject, "reason": e.reason, "data": payload,
                     "prev_hash": prev, "hash": h, "scope": scope})
        _decided(s, e.action, e.subject, e.reason, payload, scope)
        prev = h
    table: Table = AuditRow.__table__  # type: ignore[assignment]
    s.connection().execute(insert(table), rows)  # Core: no ORM bookkeeping
    head.seq, head.hash = seq, prev
    s.flush()
    assert head.chain_id is not None
    s.info[_PENDING] = (keys, head.chain_id, head.seq, head.hash)


# -- verifying ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    entries: int
    problems: list[str]
    keyed_from: int | None = None


@dataclass
class _Chain:
    """Walks the entries in order, checking each; ``wanted`` holds the head file's records
    (seq -> [(line, hash)]) still to be matched against the log."""

    key: bytes | None
    where: str
    prev: str = GENESIS
    last: int = 0
    n: int = 0
    keyed_from: int | None = None
    chain_id: str | None = None
    problems: list[str] = field(default_factory=list)
    wanted: dict[int, list[tuple[int, str]]] = field(default_factory=dict)
    scopes: Any = field(default_factory=hashlib.sha256)
    _more: int = 0

    def problem(self, text: str) -> None:
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(text)
        else:
            self._more += 1

    def finish(self) -> list[str]:
        return self.problems + ([f"... and {self._more} more problem(s)"] if self._more else [])

    def feed(self, row: AuditRow) -> None:
        self.n += 1
        if row.seq != self.last + 1:
            self.problem(f"entries {self.last + 1}..{row.seq - 1} are missing (deleted)")
        if row.prev_hash != self.prev:
            self.problem(f"entry {row.seq}: prev_hash does not match entry before it")
        if self.keyed_from is None and row.action == KEYED_ACTION:
            self._start_keyed(row)
        if self.keyed_from is None:
            h = unkeyed_hash(row.prev_hash, row.seq, row.time, row.actor, row.action,
                             row.subject, row.reason, row.data)
            if h != row.hash:
                self.problem(f"entry {row.seq}: content does not match its hash (edited)")
            self.scopes.update(f"{row.seq} {row.scope}\n".encode())
        elif self.key is not None:
            h = keyed_hash(self.key, row.prev_hash, row.seq, row.time, row.actor, row.action,
                           row.subject, row.reason, row.data, row.scope)
            if not hmac.compare_digest(h, row.hash):
                self.problem(f"entry {row.seq}: content does not match its hash (edited, or "
                             "the chain was recomputed without the audit key)")
        for line, h in self.wanted.pop(row.seq, []):
            if h != row.hash:
                self.problem(f"head file line {line} records entry {row.seq} with another "
                             f"hash: entry {row.seq} was replaced")
        self.prev, self.last = row.hash, row.seq

    def _start_keyed(self, row: AuditRow) -> None:
        self.keyed_from = row.seq
        data = row.data if isinstance(row.data, dict) else {}
        self.chain_id = str(data.get("chain_id") or "")
        if self.key is None:
            self.problem(f"entries {row.seq}.. are keyed, but there is no audit key at "
                         f"{self.where}: they cannot be checked")
        if data.get("unkeyed_entries") != self.n - 1:
            self.problem(f"entry {row.seq} (the keyed start) sealed "
                         f"{data.get('unkeyed_entries')} unkeyed entries, the log has "
                         f"{self.n - 1} before it")
        if data.get("unkeyed_scopes") != self.scopes.hexdigest():
            self.problem(f"entry {row.seq} (the keyed start): the scope of an unkeyed entry "
                         "before it was changed")
        for p in data.get("unkeyed_problems") or []:
            self.problem(f"(found when the chain was keyed) {p}")


def verify(s: Session, keys: AuditKeys | None = None) -> Verification:
    """Recompute the chain, then compare the head row and the head file with it; every
    problem names its entry, the head row or the head file's line.

    On PostgreSQL (READ COMMITTED) other processes may append while this reads: entries
    committed after the first read are read and checked too, until the head row and the
    head file agree with the log or show a real difference."""
    keys = keys if keys is not None else keys_of(s)
    try:
        key = keys.load() if keys is not None else None
    except ConfigurationError as exc:
        key, bad_key = None, str(exc)
    else:
        bad_key = ""
    chain = _Chain(key, keys.where() if keys is not None else "(no data directory)")
    if bad_key:
        chain.problem(bad_key)
    start = s.execute(select(AuditRow).where(AuditRow.action == KEYED_ACTION)
                      .order_by(AuditRow.seq).limit(1)).scalar()
    chain_id = str(start.data.get("chain_id") or "") if start is not None \
        and isinstance(start.data, dict) else ""
    offset, top, other_chains, malformed = 0, 0, 0, []

    def read_file() -> None:
        nonlocal offset, top, other_chains
        if keys is None:
            return
        lines, bad, offset, _ = keys.read_heads(offset)
        malformed.extend(bad)
        for line, cid, seq, h in lines:
            if cid != chain_id or not chain_id:
                other_chains += 1
                continue
            top = max(top, seq)
            if seq > chain.last:
                chain.wanted.setdefault(seq, []).append((line, h))
            elif seq == chain.last and h != chain.prev:
                chain.problem(f"head file line {line} records entry {seq} with another hash: "
                              f"entry {seq} was replaced")

    def read_rows() -> None:
        for row in s.execute(select(AuditRow).where(AuditRow.seq > chain.last)
                             .order_by(AuditRow.seq)).scalars():
            chain.feed(row)

    read_file()
    read_rows()
    head = None
    for attempt in range(12):
        head = s.execute(select(AuditHead).where(AuditHead.id == 1)
                         .execution_options(populate_existing=True)).scalar()
        read_file()
        if (head is not None and head.seq > chain.last) or top > chain.last:
            read_rows()  # committed since the first read
            continue
        if chain.keyed_from is not None and top < chain.last and attempt < 5:
            _time.sleep(0.2)  # a commit whose head line is being written now
            continue
        break
    if head is not None and (head.seq != chain.last or head.hash != chain.prev):
        chain.problem(f"chain head says entry {head.seq} is last, the log ends at "
                      f"{chain.last} (tail deleted or head edited)")
    if head is None and chain.n:
        chain.problem("chain head is missing")
    if head is not None and head.keyed_from != chain.keyed_from:
        chain.problem(f"chain head says the chain is keyed from entry {head.keyed_from}, the "
                      f"log's keyed start is entry {chain.keyed_from}")
    where = keys.head_path if keys is not None else "the head file"
    for line in malformed[:10]:
        chain.problem(f"head file {where} line {line} is malformed")
    if chain.wanted:
        missing = max(chain.wanted)
        line, h = chain.wanted[missing][0]
        chain.problem(f"head file records entry {missing} (line {line}, hash {h[:12]}...), "
                      f"which the log lacks (it ends at entry {chain.last}): entries were "
                      f"deleted and the head moved back ({len(chain.wanted)} recorded "
                      "entries missing)")
    if chain.keyed_from is not None and keys is not None and top < chain.last:
        said = f"newest record of this chain is entry {top}" if top else \
            "has no record of this chain"
        chain.problem(f"head file {where} {said}, but the log ends at entry {chain.last}: "
                      "the head file lost its last lines, or was replaced (or a process "
                      "stopped between a commit and writing its line)")
    if chain.keyed_from is None and other_chains:
        chain.problem(f"head file {where} records a keyed chain, but this log has no keyed "
                      "entries: they were removed or rewritten without the key (or this "
                      "database is not the one of this data directory)")
    problems = chain.finish()
    return Verification(not problems, chain.n, problems, chain.keyed_from)
