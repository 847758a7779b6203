"""audit scope and keyed chain; token revocation, disabled users, dashboard sessions

Existing audit entries get their scope by the rule of ``storage.audit.scope_for`` (written
out here in SQL, so this migration does not change when that module does). They keep their
unkeyed hashes: the service's next append seals them under the key (see storage/audit.py).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('audit') as batch:
        batch.add_column(sa.Column('scope', sa.String(length=200), server_default='admin',
                                   nullable=False))
        batch.create_index(batch.f('ix_audit_scope'), ['scope'], unique=False)
    with op.batch_alter_table('audit_head') as batch:
        batch.add_column(sa.Column('keyed_from', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('key_id', sa.String(length=32), nullable=True))
        batch.add_column(sa.Column('chain_id', sa.String(length=32), nullable=True))
    with op.batch_alter_table('users') as batch:
        batch.add_column(sa.Column('disabled_at', sa.Float(), nullable=True))
    with op.batch_alter_table('api_tokens') as batch:
        batch.add_column(sa.Column('revoked_at', sa.Float(), nullable=True))
    op.create_table(
        'ui_sessions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('session_hash', sa.String(length=64), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('token_id', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.Column('expires_at', sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(['token_id'], ['api_tokens.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('session_hash'))
    # scopes of the entries already there (the rule of storage.audit.scope_for)
    op.execute("UPDATE audit SET scope = subject "
               "WHERE subject LIKE 'dispute:%' OR subject LIKE 'team:%'")
    op.execute("UPDATE audit SET scope = 'org' WHERE subject IN ('inventory', 'org') "
               "OR subject LIKE 'plan:%' OR action LIKE 'backend.%'")
    op.execute("UPDATE audit SET scope = (SELECT 'team:' || jobs.team FROM jobs "
               "WHERE 'job:' || CAST(jobs.id AS VARCHAR(20)) = audit.subject) "
               "WHERE subject LIKE 'job:%' AND EXISTS (SELECT 1 FROM jobs "
               "WHERE 'job:' || CAST(jobs.id AS VARCHAR(20)) = audit.subject)")
    # the head row exists from the start, so two first appends cannot both insert it
    op.execute("INSERT INTO audit_head (id, seq, hash) SELECT 1, 0, '" + "0" * 64 + "' "
               "WHERE NOT EXISTS (SELECT 1 FROM audit_head WHERE id = 1)")


def downgrade() -> None:
    op.drop_table('ui_sessions')
    if op.get_bind().dialect.name == 'sqlite':
        # a batch copy would drop and re-create users, and the drop would cascade to tokens
        op.execute('ALTER TABLE api_tokens DROP COLUMN revoked_at')
        op.execute('ALTER TABLE users DROP COLUMN disabled_at')
    else:
        op.drop_column('api_tokens', 'revoked_at')
        op.drop_column('users', 'disabled_at')
    with op.batch_alter_table('audit_head') as batch:
        batch.drop_column('chain_id')
        batch.drop_column('key_id')
        batch.drop_column('keyed_from')
    with op.batch_alter_table('audit') as batch:
        batch.drop_index(batch.f('ix_audit_scope'))
        batch.drop_column('scope')
