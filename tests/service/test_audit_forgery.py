"""Forged audit logs fail `allot audit verify` (exit 1, naming the entry or the head):
the chain is keyed (HMAC-SHA256, key outside the database) and its head is also appended to
a file beside it. Each attack is what someone with write access to the database, but not
to the key, can do."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from allotment.errors import ConfigurationError
from allotment.storage import audit
from allotment.storage.db import Database, migrate
from tests.service.conftest import World

ALLOT = str(Path(sys.executable).parent / "allot")


def _verify(db: Database, data_dir: Path | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ALLOT, "audit", "verify", "--db", db.url, "--data-dir",
                           str(data_dir or db.audit.data_dir)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def _busy(w: World) -> None:
    """A few decisions of several kinds."""
    for _ in range(3):
        job = w.submit("member_own")["id"]
        assert w.call("member_own", "POST", f"/v1/jobs/{job}/cancel").status_code == 200
    assert w.call("admin", "POST", "/v1/plans", json={"period": "2026-12"}).status_code == 201


def _rows(db: Database) -> list[dict[str, Any]]:
    with db.session() as s:
        return [dict(r._mapping) for r in s.execute(text(
            "SELECT seq, time, actor, action, subject, reason, data, scope, prev_hash, hash "
            "FROM audit ORDER BY seq"))]


def _data(row: dict[str, Any]) -> Any:
    return json.loads(row["data"]) if isinstance(row["data"], str) else row["data"]


def plain_sha256(prev: str, row: dict[str, Any]) -> str:
    """The unkeyed formula anyone can recompute (the log's hash before it was keyed)."""
    body = json.dumps([row["seq"], repr(float(row["time"])), row["actor"], row["action"],
                       row["subject"], row["reason"], _data(row)],
                      sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256((prev + body).encode()).hexdigest()


def wrong_key_hmac(prev: str, row: dict[str, Any]) -> str:
    """The keyed formula, under a key the attacker made up."""
    return audit.keyed_hash(b"not the key" * 4, prev, row["seq"], row["time"], row["actor"],
                            row["action"], row["subject"], row["reason"], _data(row),
                            row["scope"])


def _rewrite(db: Database, from_seq: int, hasher: Any, edit: dict[str, Any]) -> None:
    """Edit entry ``from_seq`` and recompute the chain from it to the end, head included:
    what an attacker with database write access does."""
    rows = _rows(db)
    prev = next((r["hash"] for r in rows if r["seq"] == from_seq - 1), audit.GENESIS)
    with db.session() as s:
        for r in rows:
            if r["seq"] < from_seq:
                continue
            if r["seq"] == from_seq:
                r.update(edit)
            r["prev_hash"], r["hash"] = prev, hasher(prev, r)
            s.execute(text("UPDATE audit SET reason = :reason, actor = :actor, action = :action, "
                           "prev_hash = :prev_hash, hash = :hash WHERE seq = :seq"), r)
            prev = r["hash"]
        s.execute(text("UPDATE audit_head SET seq = :seq, hash = :hash WHERE id = 1"),
                  {"seq": rows[-1]["seq"], "hash": prev})


def test_untouched_log_verifies_and_is_keyed(world: World) -> None:
    _busy(world)
    ok = _verify(world.db)
    assert ok.returncode == 0, ok.stderr
    assert "chain intact" in ok.stdout and "keyed" in ok.stdout


@pytest.mark.parametrize("hasher", [plain_sha256, wrong_key_hmac], ids=["sha256", "wrong-key"])
def test_edit_with_chain_recomputed_is_detected(world: World, hasher: Any) -> None:
    """An edited reason with every later hash recomputed (plain sha256, or HMAC under a
    key that is not the service's) fails at that entry."""
    _busy(world)
    rows = _rows(world.db)
    target = next(r["seq"] for r in rows if r["action"] == "job.cancelled")
    _rewrite(world.db, target, hasher, {"reason": "nothing happened"})
    bad = _verify(world.db)
    assert bad.returncode == 1
    assert f"entry {target}: content does not match its hash" in bad.stderr, bad.stderr


def test_whole_chain_rewritten_without_the_key_is_detected(world: World) -> None:
    """Rewriting every entry with plain sha256 (the keyed start renamed away) still fails:
    the head file records keyed heads that the log no longer has."""
    _busy(world)
    _rewrite(world.db, 1, plain_sha256, {"action": "org.noted", "actor": "system"})
    bad = _verify(world.db)
    assert bad.returncode == 1 and "head file" in bad.stderr, bad.stderr


def test_tail_deleted_and_head_moved_back_is_detected(world: World) -> None:
    """The last two entries deleted and the head row moved back onto the new last entry:
    the head file still records the deleted entries."""
    _busy(world)
    rows = _rows(world.db)
    last = rows[-3]
    with world.db.session() as s:
        s.execute(text("DELETE FROM audit WHERE seq > :seq"), {"seq": last["seq"]})
        s.execute(text("UPDATE audit_head SET seq = :seq, hash = :hash WHERE id = 1"), last)
    bad = _verify(world.db)
    assert bad.returncode == 1
    assert f"head file records entry {rows[-1]['seq']}" in bad.stderr, bad.stderr


def test_head_file_lines_deleted_is_detected(world: World) -> None:
    """Dropping the head file's last line leaves it behind the log, which verify names."""
    _busy(world)
    head = world.db.audit.head_path
    lines = head.read_text().splitlines(keepends=True)
    assert len(lines) >= 2
    head.write_text("".join(lines[:-1]))
    bad = _verify(world.db)
    assert bad.returncode == 1 and "head file" in bad.stderr, bad.stderr
    last = _rows(world.db)[-1]["seq"]
    assert f"log ends at entry {last}" in bad.stderr


def test_verify_without_the_key_fails_and_says_why(world: World, tmp_path: Path) -> None:
    _busy(world)
    bad = _verify(world.db, tmp_path / "elsewhere")
    assert bad.returncode == 1 and "audit key" in bad.stderr, bad.stderr
    assert not (tmp_path / "elsewhere" / "audit.key").exists()


def test_key_and_head_files_are_private(world: World) -> None:
    _busy(world)
    for p in (world.db.audit.data_dir / "audit.key", world.db.audit.head_path):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    assert len(bytes.fromhex(
        (world.db.audit.data_dir / "audit.key").read_text().strip())) == 32


def test_key_from_the_environment(db: Database, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """With ALLOTMENT_AUDIT_KEY set, no key file is written and verify needs the same key."""
    key = secrets.token_hex(32)
    monkeypatch.setenv("ALLOTMENT_AUDIT_KEY", key)
    keyed = Database(db.url, data_dir=tmp_path / "envdata")
    with keyed.session() as s:
        audit.append(s, time.time(), "t", "test.note", "org", "hello", {})
    keyed.dispose()
    assert not (tmp_path / "envdata" / "audit.key").exists()
    assert _verify(db, tmp_path / "envdata", {"ALLOTMENT_AUDIT_KEY": key}).returncode == 0
    wrong = _verify(db, tmp_path / "envdata", {"ALLOTMENT_AUDIT_KEY": secrets.token_hex(32)})
    assert wrong.returncode == 1 and "entry 1" in wrong.stderr


def test_append_with_another_key_is_refused(world: World, tmp_path: Path) -> None:
    """A process started with another data directory (another key) may not append to a
    chain keyed with the first: it would make the log unverifiable."""
    other = Database(world.db.url, data_dir=tmp_path / "other")
    with pytest.raises(ConfigurationError, match="audit key"), other.session() as s:
        audit.append(s, time.time(), "t", "test.note", "org", "hello", {})
    other.dispose()
    assert _verify(world.db).returncode == 0


APPENDER = """
import sys, time
from allotment.storage import audit
from allotment.storage.db import Database
db = Database(sys.argv[1], data_dir=sys.argv[2])
for k in range(int(sys.argv[3])):
    with db.session() as s:
        audit.append(s, time.time(), sys.argv[4], "test.note", "org", f"note {k}", {})
"""


def test_two_processes_append_to_one_head_file(world: World) -> None:
    """`allot serve` and a separate `allot scheduler` append at once: the chain and the
    head file stay consistent."""
    procs = [subprocess.Popen([sys.executable, "-c", APPENDER, world.db.url,
                               str(world.db.audit.data_dir), "30", f"p{k}"]) for k in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    ok = _verify(world.db)
    assert ok.returncode == 0, ok.stderr
    lines = world.db.audit.head_path.read_text().splitlines()
    assert len(lines) >= 60 and all(len(x.split()) == 3 for x in lines)


LEGACY = [  # (actor, action, subject, reason, data) of an old, unkeyed log
    ("test", "inventory.set", "inventory", "2 nodes", {"gpus_by_type": {"a100": 16}}),
    ("root", "job.cancelled", "job:{job}", "cancelled by root", {"team": "llama"}),
    ("lead_own", "dispute.filed", "dispute:7", "old secret reason", {"team": "llama"}),
    ("cli", "user.created", "user:zed", "member of llama", {"role": "member"}),
]


def _legacy_db(world: World) -> int:
    """The world's database as revision 0002 left it: an unkeyed chain of LEGACY (and no
    head file: the old service kept none)."""
    job = world.submit("member_own")["id"]
    world.db.audit.head_path.unlink()
    migrate(world.db.url, world.db.engine, "0002", down=True)
    prev = audit.GENESIS
    with world.db.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit"))
        for seq, (actor, action, subject, reason, data) in enumerate(LEGACY, start=1):
            row = {"seq": seq, "time": 1_790_000_000.0 + seq, "actor": actor, "action": action,
                   "subject": subject.format(job=job), "reason": reason, "data": data}
            h = plain_sha256(prev, row)
            conn.execute(text("INSERT INTO audit (seq, time, actor, action, subject, reason, "
                              "data, prev_hash, hash) VALUES (:seq, :time, :actor, :action, "
                              ":subject, :reason, :data, :prev, :hash)"),
                         {**row, "data": json.dumps(data), "prev": prev, "hash": h})
            prev = h
        conn.execute(text("UPDATE audit_head SET seq = :n, hash = :h WHERE id = 1"),
                     {"n": len(LEGACY), "h": prev})
    world.db.upgrade()
    return int(job)


def test_upgrade_keys_the_chain_after_the_old_entries(world: World) -> None:
    """An old database: its unkeyed entries get their scope by the same rule as new ones;
    the next append first records, as a keyed entry, that the chain is keyed from there
    on (after verifying the old part); old and new entries then verify, and a later edit
    of an old entry, even with the old chain recomputed, is detected by the keyed entry
    after it, as is a changed scope."""
    job = _legacy_db(world)
    with world.db.session() as s:
        scopes = [r[0] for r in s.execute(text("SELECT scope FROM audit ORDER BY seq"))]
    assert scopes == ["org", "team:llama", "dispute:7", "admin"]
    before = _verify(world.db)
    assert before.returncode == 0 and "not keyed" in before.stdout, before.stdout
    assert world.call("member_own", "POST", f"/v1/jobs/{job}/cancel").status_code == 200
    rows = _rows(world.db)
    anchor = rows[len(LEGACY)]
    assert anchor["action"] == "audit.keyed" and anchor["seq"] == len(LEGACY) + 1
    assert _data(anchor)["unkeyed_entries"] == len(LEGACY)
    assert _data(anchor)["unkeyed_problems"] == []
    ok = _verify(world.db)
    assert ok.returncode == 0 and f"keyed from entry {anchor['seq']}" in ok.stdout, ok.stdout
    # the old part rewritten with the old formula: the keyed entry after it no longer fits
    with world.db.session() as s:
        s.execute(text("UPDATE audit SET scope = 'org' WHERE seq = 3"))
    bad = _verify(world.db)
    assert bad.returncode == 1 and "scope" in bad.stderr, bad.stderr
    with world.db.session() as s:
        s.execute(text("UPDATE audit SET scope = 'dispute:7' WHERE seq = 3"))
    prev = rows[0]["hash"]
    with world.db.session() as s:
        for r in rows[1:len(LEGACY)]:
            if r["seq"] == 2:
                r["reason"] = "cancelled by nobody"
            r["prev_hash"], r["hash"] = prev, plain_sha256(prev, r)
            s.execute(text("UPDATE audit SET reason = :reason, prev_hash = :prev_hash, "
                           "hash = :hash WHERE seq = :seq"), r)
            prev = r["hash"]
        s.execute(text("UPDATE audit SET prev_hash = :p WHERE seq = :seq"),
                  {"p": prev, "seq": anchor["seq"]})
    bad = _verify(world.db)
    assert bad.returncode == 1 and f"entry {anchor['seq']}" in bad.stderr, bad.stderr


def test_old_break_is_recorded_when_keying(world: World) -> None:
    """An old chain already broken when the service keys it: the keyed entry records the
    problems, and verify keeps reporting the old break."""
    _legacy_db(world)
    with world.db.session() as s:
        s.execute(text("UPDATE audit SET reason = 'rewritten' WHERE seq = 2"))
    with world.db.session() as s:
        audit.append(s, world.clock(), "t", "test.note", "org", "after", {})
    anchor = _rows(world.db)[len(LEGACY)]
    assert any("entry 2" in p for p in _data(anchor)["unkeyed_problems"])
    bad = _verify(world.db)
    assert bad.returncode == 1 and "entry 2: content does not match its hash" in bad.stderr


def test_keyed_hash_is_hmac(world: World) -> None:
    """The stored hash of a keyed entry is HMAC-SHA256 under the data directory's key."""
    _busy(world)
    key = bytes.fromhex((world.db.audit.data_dir / "audit.key").read_text().strip())
    r = _rows(world.db)[-1]
    assert r["hash"] == audit.keyed_hash(key, r["prev_hash"], r["seq"], r["time"], r["actor"],
                                         r["action"], r["subject"], r["reason"], _data(r),
                                         r["scope"])
    assert r["hash"] != hmac.new(b"x", b"y", hashlib.sha256).hexdigest()


def test_verify_of_a_database_not_yet_upgraded_says_so(world: World) -> None:
    """`allot audit verify` reads only: on a database still at revision 0002 it says to
    start the service once, instead of failing on the missing columns."""
    migrate(world.db.url, world.db.engine, "0002", down=True)
    r = _verify(world.db)
    assert r.returncode == 2 and "revision 0002" in r.stderr and "Traceback" not in r.stderr
