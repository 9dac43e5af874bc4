"""Issue 15 (SMART App Launch for third-party apps): smart_client,
smart_authorization, smart_launch, smart_grant and smart_grant_token
(hutong.security.smart_store describes each).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hutong.store.migrations.ddl import Frozen

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

T = Frozen()
T.table('smart_client',
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('secret_hash', sa.String(length=200), nullable=True),
    sa.Column('redirect_uris', sa.String(length=4000), nullable=False),
    sa.Column('launch_url', sa.String(length=500), nullable=True),
    sa.Column('scopes', sa.String(length=2000), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.Column('updated', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('client_id')
)
T.table('smart_authorization',
    sa.Column('request_id', sa.String(length=40), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('redirect_uri', sa.String(length=500), nullable=False),
    sa.Column('scope', sa.String(length=2000), nullable=False),
    sa.Column('state', sa.String(length=500), nullable=True),
    sa.Column('code_challenge', sa.String(length=128), nullable=False),
    sa.Column('launch_hash', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('account_id', sa.String(length=40), nullable=True),
    sa.Column('patient', sa.String(length=64), nullable=True),
    sa.Column('granted', sa.String(length=2000), nullable=True),
    sa.Column('code_hash', sa.String(length=64), nullable=True),
    sa.Column('grant_id', sa.String(length=40), nullable=True),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.Column('expires', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('request_id')
)
T.index('ix_smart_authorization_code', 'smart_authorization', ['code_hash'], unique=False)
T.index('ix_smart_authorization_expires', 'smart_authorization', ['expires'], unique=False)
T.table('smart_launch',
    sa.Column('launch_hash', sa.String(length=64), nullable=False),
    sa.Column('account_id', sa.String(length=40), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('patient', sa.String(length=64), nullable=False),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.Column('expires', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('launch_hash')
)
T.table('smart_grant',
    sa.Column('grant_id', sa.String(length=40), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('account_id', sa.String(length=40), nullable=False),
    sa.Column('patient', sa.String(length=64), nullable=True),
    sa.Column('scope', sa.String(length=2000), nullable=False),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.Column('expires', sa.BigInteger(), nullable=False),
    sa.Column('revoked', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('grant_id')
)
T.index('ix_smart_grant_account', 'smart_grant', ['account_id'], unique=False)
T.index('ix_smart_grant_patient', 'smart_grant', ['patient'], unique=False)
T.table('smart_grant_token',
    sa.Column('jti', sa.String(length=64), nullable=False),
    sa.Column('grant_id', sa.String(length=40), nullable=False),
    sa.Column('expires', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('jti')
)
T.index('ix_smart_grant_token_grant', 'smart_grant_token', ['grant_id'], unique=False)


def upgrade() -> None:
    T.create_missing(op.get_bind())


def downgrade() -> None:
    raise NotImplementedError("hutong migrations go forward only: restore a backup to go back")
