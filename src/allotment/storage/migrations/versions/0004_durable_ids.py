"""ids never reused (SQLite AUTOINCREMENT); one request per team, period and GPU type

Revision ID: 0004
Revises: 0003

SQLite gives a new row max(rowid) + 1 unless the table is AUTOINCREMENT, so the id of a
deleted (or lost) row went to the next one; SQLite can only add AUTOINCREMENT by rebuilding
the table (``storage.db.upgrade`` runs this with foreign keys off, as SQLite's procedure
asks). PostgreSQL's sequences never go back: nothing to do there.

A database that already holds two requests for one team, period and GPU type cannot take
the unique constraint; the upgrade stops and names them rather than drop either.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

NEVER_REUSED = ("users", "jobs", "requests", "plans", "disputes")
UNIQUE = "uq_requests_team_period_gpu_type"


def _refuse_duplicate_requests() -> None:
    rows = op.get_bind().execute(sa.text(
        "SELECT team, period, gpu_type, id FROM requests ORDER BY team, period, gpu_type, id"))
    seen: dict[tuple[str, str, str], list[int]] = {}
    for team, period, gpu_type, rid in rows:
        seen.setdefault((team, period, gpu_type), []).append(int(rid))
    dupes = [(key, ids) for key, ids in seen.items() if len(ids) > 1]
    if dupes:
        lines = "; ".join(
            f"requests {' and '.join(map(str, ids))} are all for team {t}, period {p}, "
            f"GPU type {g}" for (t, p, g), ids in dupes)
        raise RuntimeError(
            f"cannot upgrade: {lines}. The planner takes one request per team, period and "
            f"GPU type: delete all but one of each (DELETE FROM requests WHERE id = ...) "
            f"and start again.")


def upgrade() -> None:
    _refuse_duplicate_requests()
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table in NEVER_REUSED:
        if sqlite:
            with op.batch_alter_table(table, recreate="always",
                                      table_kwargs={"sqlite_autoincrement": True}) as batch:
                if table == "requests":
                    batch.create_unique_constraint(UNIQUE, ["team", "period", "gpu_type"])
        elif table == "requests":
            op.create_unique_constraint(UNIQUE, "requests", ["team", "period", "gpu_type"])


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table in NEVER_REUSED:
        if sqlite:
            with op.batch_alter_table(table, recreate="always") as batch:
                if table == "requests":
                    batch.drop_constraint(UNIQUE, type_="unique")
        elif table == "requests":
            op.drop_constraint(UNIQUE, "requests", type_="unique")
