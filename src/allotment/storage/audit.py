"""The append-only, hash-chained audit log.

Entry k carries ``prev_hash`` (the hash of entry k-1, 64 zeros for the first) and
``hash = sha256(prev_hash || canonical JSON of (seq, time, actor, action, subject, reason,
data))``. The ``audit_head`` row holds the last (seq, hash) and is locked by every append,
so appends are serialised and a deleted tail shows as a head that no row matches.
``verify`` recomputes the chain: an edited row breaks its own hash, a deleted row breaks
the sequence or the next row's ``prev_hash``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from allotment.storage.models import AuditHead, AuditRow

GENESIS = "0" * 64


def entry_hash(prev_hash: str, seq: int, time: float, actor: str, action: str, subject: str,
               reason: str, data: dict[str, Any]) -> str:
    body = json.dumps([seq, repr(float(time)), actor, action, subject, reason, data],
                      sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


def append(s: Session, time: float, actor: str, action: str, subject: str, reason: str,
           data: dict[str, Any] | None = None) -> AuditRow:
    """Append one entry inside the caller's transaction (committed with its decision)."""
    head = s.execute(select(AuditHead).where(AuditHead.id == 1).with_for_update()).scalar()
    if head is None:
        head = AuditHead(id=1, seq=0, hash=GENESIS)
        s.add(head)
        s.flush()
    payload = json.loads(json.dumps(data or {}, sort_keys=True, default=str))
    seq = head.seq + 1
    h = entry_hash(head.hash, seq, time, actor, action, subject, reason, payload)
    row = AuditRow(seq=seq, time=time, actor=actor, action=action, subject=subject,
                   reason=reason, data=payload, prev_hash=head.hash, hash=h)
    s.add(row)
    head.seq, head.hash = seq, h
    s.flush()
    return row


@dataclass(frozen=True, slots=True)
class Entry:
    """One decision to append: who did what to which subject, and why."""

    time: float
    actor: str
    action: str
    subject: str
    reason: str
    data: dict[str, Any]


def append_many(s: Session, entries: list[Entry]) -> None:
    """Append several entries in order, with one head update and one bulk insert (the
    loop's admissions of one cycle)."""
    if not entries:
        return
    head = s.execute(select(AuditHead).where(AuditHead.id == 1).with_for_update()).scalar()
    if head is None:
        head = AuditHead(id=1, seq=0, hash=GENESIS)
        s.add(head)
        s.flush()
    seq, prev = head.seq, head.hash
    rows = []
    for e in entries:
        seq += 1
        payload = json.loads(json.dumps(e.data, sort_keys=True, default=str))
        h = entry_hash(prev, seq, e.time, e.actor, e.action, e.subject, e.reason, payload)
        rows.append({"seq": seq, "time": e.time, "actor": e.actor, "action": e.action,
                     "subject": e.subject, "reason": e.reason, "data": payload,
                     "prev_hash": prev, "hash": h})
        prev = h
    s.execute(insert(AuditRow), rows)
    head.seq, head.hash = seq, prev
    s.flush()


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    entries: int
    problems: list[str]


def verify(s: Session) -> Verification:
    """Recompute the chain; every problem is named by its sequence number."""
    problems: list[str] = []
    prev, expected, n = GENESIS, 1, 0
    for row in s.execute(select(AuditRow).order_by(AuditRow.seq)).scalars():
        n += 1
        if row.seq != expected:
            problems.append(f"entries {expected}..{row.seq - 1} are missing (deleted)")
        if row.prev_hash != prev:
            problems.append(f"entry {row.seq}: prev_hash does not match entry before it")
        h = entry_hash(row.prev_hash, row.seq, row.time, row.actor, row.action, row.subject,
                       row.reason, row.data)
        if h != row.hash:
            problems.append(f"entry {row.seq}: content does not match its hash (edited)")
        prev, expected = row.hash, row.seq + 1
    head = s.get(AuditHead, 1)
    if head is not None and (head.seq != expected - 1 or head.hash != prev):
        problems.append(f"chain head says entry {head.seq} is last, the log ends at "
                        f"{expected - 1} (tail deleted or head edited)")
    if head is None and n:
        problems.append("chain head is missing")
    return Verification(not problems, n, problems)
