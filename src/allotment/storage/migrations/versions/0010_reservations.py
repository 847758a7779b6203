"""reservations: launch reservations (N GPUs of a type for a team over a window) and the
reservation a job names

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'reservations',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('name', sa.String(length=64), nullable=False, unique=True),
        sa.Column('team', sa.String(length=128), nullable=False),
        sa.Column('gpu_type', sa.String(length=64), nullable=False),
        sa.Column('gpus', sa.Integer(), nullable=False),
        sa.Column('start_time', sa.Float(), nullable=False),
        sa.Column('end_time', sa.Float(), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('requested_by', sa.String(length=64), nullable=False),
        sa.Column('approved_by', sa.String(length=64), nullable=True),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.Column('impact', sa.JSON(), nullable=False),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('reservation', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('reservation')
    op.drop_table('reservations')
