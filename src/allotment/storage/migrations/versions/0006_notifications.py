"""notifications: the transactional outbox of webhooks

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'notifications',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.Column('kind', sa.String(length=32), nullable=False),
        sa.Column('payload', sa.JSON(), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', sa.Float(), nullable=False),
        sa.Column('claimed_by', sa.String(length=128), nullable=True),
        sa.Column('claimed_until', sa.Float(), nullable=True),
        sa.Column('delivered_at', sa.Float(), nullable=True),
        sa.Column('gave_up_at', sa.Float(), nullable=True),
        sa.Column('last_error', sa.Text(), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index('ix_notifications_next_attempt_at', 'notifications', ['next_attempt_at'])


def downgrade() -> None:
    op.drop_index('ix_notifications_next_attempt_at', table_name='notifications')
    op.drop_table('notifications')
