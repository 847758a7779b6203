"""backend run ids on jobs; preemptions in usage (Slurm backend)

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('external_id', sa.String(length=64), nullable=True))
    with op.batch_alter_table('usage') as batch:
        batch.add_column(sa.Column('preemptions', sa.Integer(), server_default='0',
                                   nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('usage') as batch:
        batch.drop_column('preemptions')
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('external_id')
