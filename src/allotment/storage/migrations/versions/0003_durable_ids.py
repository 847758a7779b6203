"""ids never reused (SQLite AUTOINCREMENT)

Revision ID: 0003
Revises: 0002

SQLite gives a new row max(rowid) + 1 unless the table is AUTOINCREMENT, so the id of a
deleted (or lost) row went to the next one; SQLite can only add AUTOINCREMENT by rebuilding
the table (``storage.db.upgrade`` runs this with foreign keys off, as SQLite's procedure
asks). PostgreSQL's sequences never go back: nothing to do there.
"""

from __future__ import annotations

from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

NEVER_REUSED = ("users", "jobs", "requests", "plans", "disputes")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for table in NEVER_REUSED:
            with op.batch_alter_table(table, recreate="always",
                                      table_kwargs={"sqlite_autoincrement": True}):
                pass


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for table in NEVER_REUSED:
            with op.batch_alter_table(table, recreate="always"):
                pass
