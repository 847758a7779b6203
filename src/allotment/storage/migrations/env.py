"""Alembic environment: runs migrations on the connection handed in by ``storage.db``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from allotment.storage.models import Base

config = context.config
target_metadata = Base.metadata


def run() -> None:
    conn = config.attributes.get("connection")
    if conn is None:
        engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
        with engine.connect() as c:
            context.configure(connection=c, target_metadata=target_metadata,
                              render_as_batch=True)
            with context.begin_transaction():
                context.run_migrations()
        return
    context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run()
