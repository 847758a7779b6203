"""budgets: GPU-hour budgets per team, GPU type and period

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'budgets',
        sa.Column('period', sa.String(length=64), primary_key=True),
        sa.Column('team', sa.String(length=128), primary_key=True),
        sa.Column('gpu_type', sa.String(length=64), primary_key=True),
        sa.Column('gpu_hours', sa.Float(), nullable=False),
        sa.Column('source', sa.String(length=64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table('budgets')
