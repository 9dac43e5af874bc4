"""Issue 12 (trust between institutions): consent_author, token_cutoff,
signin_throttle and audit_chain.

- consent_author: who made each Consent version (hutong.security.consent_authors);
- token_cutoff: tokens issued before it are refused (disable/re-enable, password change);
- signin_throttle: sign-in back-off per username and address (replaces lockout);
- audit_chain: where the keyed audit chain starts (hutong.security.audit: a chain
  begun unkeyed is switched to the key on the first open by this release, not here,
  because the key lives outside the database).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hutong.store.migrations.ddl import Frozen

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

T = Frozen()
T.table('audit_chain',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('keyed_from', sa.BigInteger(), nullable=False),
    sa.Column('key_id', sa.String(length=32), nullable=False),
    sa.Column('time_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id')
)
T.table('consent_author',
    sa.Column('consent_id', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('account_id', sa.String(length=40), nullable=False),
    sa.Column('organization_id', sa.String(length=64), nullable=True),
    sa.Column('own_refs', sa.String(length=400), nullable=False),
    sa.Column('acting_for', sa.String(length=400), nullable=True),
    sa.Column('documented', sa.SmallInteger(), nullable=False),
    sa.Column('notified_ms', sa.BigInteger(), nullable=True),
    sa.Column('created_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('consent_id', 'version', name='pk_consent_author')
)
T.table('signin_throttle',
    sa.Column('throttle_key', sa.String(length=64), nullable=False),
    sa.Column('username', sa.String(length=100), nullable=False),
    sa.Column('peer', sa.String(length=100), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('blocked_until', sa.BigInteger(), nullable=False),
    sa.Column('last_failure', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('throttle_key')
)
T.index('ix_signin_throttle_last', 'signin_throttle', ['last_failure'], unique=False)
T.index('ix_signin_throttle_username', 'signin_throttle', ['username'], unique=False)
T.table('token_cutoff',
    sa.Column('account_id', sa.String(length=40), nullable=False),
    sa.Column('not_before', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('account_id')
)


def upgrade() -> None:
    T.create_missing(op.get_bind())


def downgrade() -> None:
    raise NotImplementedError("hutong migrations go forward only: restore a backup to go back")
