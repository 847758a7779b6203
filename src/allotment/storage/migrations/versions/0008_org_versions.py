"""org_versions: every version of the org tree, with its changes and moves

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'org_versions',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.Column('actor', sa.String(length=64), nullable=False),
        sa.Column('teams', sa.Integer(), nullable=False),
        sa.Column('org', sa.JSON(), nullable=False),
        sa.Column('changes', sa.JSON(), nullable=False),
        sa.Column('moves', sa.JSON(), nullable=False),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table('org_versions')
