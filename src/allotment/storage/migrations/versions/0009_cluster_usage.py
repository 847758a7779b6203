"""cluster_usage: per GPU type and hour, the GPU-seconds installed and up, in use, and idle
while jobs of that type waited (the cluster page's history)

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'cluster_usage',
        sa.Column('gpu_type', sa.String(length=64), primary_key=True),
        sa.Column('hour', sa.BigInteger(), primary_key=True),
        sa.Column('up_gpu_s', sa.Float(), nullable=False),
        sa.Column('used_gpu_s', sa.Float(), nullable=False),
        sa.Column('idle_waiting_gpu_s', sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table('cluster_usage')
