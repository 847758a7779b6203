"""Storage: migrations match the models, the audit chain catches edits and deletions, and
bad input is refused with the field named and nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select, text

from allotment.storage.db import Database
from allotment.storage.models import Base, JobRow
from tests.service.conftest import World


def test_migrations_match_models(db: Database) -> None:
    """The Alembic head creates exactly the tables the models describe."""
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def _verify_cli(db: Database) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).parent / "allot"), "audit", "verify",
                           "--db", db.url, "--data-dir", str(db.audit.data_dir)],
                          capture_output=True, text=True, timeout=120)


def test_audit_verify_catches_edit_and_delete(world: World) -> None:
    """`allot audit verify` passes on the untouched log, fails after an edit, and after the
    last entry is deleted."""
    world.submit("member_own")
    ok = _verify_cli(world.db)
    assert ok.returncode == 0 and "chain intact" in ok.stdout
    with world.db.session() as s:
        s.execute(text("UPDATE audit SET reason = 'nothing happened' WHERE seq = 3"))
    bad = _verify_cli(world.db)
    assert bad.returncode == 1 and "entry 3: content does not match its hash" in bad.stderr
    with world.db.session() as s:
        s.execute(text("DELETE FROM audit WHERE seq = (SELECT MAX(seq) FROM audit)"))
    gone = _verify_cli(world.db)
    assert gone.returncode == 1 and "tail deleted" in gone.stderr


def _count(world: World) -> int:
    with world.db.session() as s:
        return int(s.execute(select(func.count()).select_from(JobRow)).scalar_one())


BAD = [  # (body or raw text, field named in the message)
    ('{"team": "llama", "gpus": 1', "body"),
    ({"team": "nope", "gpu_type": "a100", "gpus": 1, "command": "x"}, "team"),
    ({"team": "llama", "gpu_type": "a100", "gpus": -1, "command": "x"}, "gpus"),
    ({"team": "llama", "gpu_type": "a100", "gpus": 10**12, "command": "x"}, "gpus"),
    ({"team": "llama", "gpu_type": "a100", "gpus": 17, "command": "x"}, "gpus"),
    ({"team": "llama", "gpu_type": "h999", "gpus": 1, "command": "x"}, "gpu_type"),
    ({"team": "llama", "gpu_type": "a100", "gpus": 1, "command": "x" * 9000}, "command"),
    ({"team": "l" * 500, "gpu_type": "a100", "gpus": 1, "command": "x"}, "team"),
    ({"team": "llama", "gpu_type": "a100", "gpus": 1, "command": "x", "colour": 1}, "colour"),
    ({"team": "research", "gpu_type": "a100", "gpus": 1, "command": "x"}, "team"),
    ({"team": "lla\u0000ma", "gpu_type": "a100", "gpus": 1, "command": "x"}, "team"),
]


def test_bad_job_input_names_the_field_and_writes_nothing(world: World) -> None:
    """Malformed JSON, unknown team or GPU type, bad or huge counts, overlong strings."""
    before = _count(world)
    for body, field in BAD:
        if isinstance(body, str):
            r = world.client.post("/v1/jobs", content=body, headers={
                **world.h("member_own"), "content-type": "application/json"})
        else:
            r = world.call("member_own", "POST", "/v1/jobs", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["field"].startswith(field), (field, r.json())
        assert field in r.json()["detail"]
    assert _count(world) == before


def test_bad_org_and_inventory_are_refused_whole(world: World) -> None:
    """An org whose guarantees exceed the cluster is refused and the old org stays."""
    r = world.call("admin", "PUT", "/v1/org", json={"org": [{"name": "a", "guaranteed": 99}]})
    assert r.status_code == 422 and "org" in r.json()["detail"]
    r = world.call("admin", "PUT", "/v1/inventory", json={"nodes": [
        {"name": "n1", "gpu_type": "a100", "gpus": 0}]})
    assert r.status_code == 422 and r.json()["field"] == "nodes.0.gpus"
    names = [n["name"] for n in world.call("admin", "GET", "/v1/org").json()["nodes"]]
    assert "llama" in names and "a" not in names
