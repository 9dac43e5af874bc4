"""Issue 18, item 2 (several nodes, one database): the platform_key table of
hutong.security.keycheck -- the fingerprint (never the key) of each key every
node must share, e.g. the token-signing key, so that a node started with a key
directory of its own is refused at start instead of silently splitting the
platform (its tokens refused by the other nodes, HT-0122).

A database upgraded to this revision has no row yet: the first node that
starts (or the first command that issues tokens) records the key of its key
directory (hutong.security.keycheck).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hutong.store.migrations.ddl import Frozen

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

T = Frozen()
T.table('platform_key',
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('fingerprint', sa.String(length=128), nullable=False),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('name')
)


def upgrade() -> None:
    T.create_missing(op.get_bind())


def downgrade() -> None:
    raise NotImplementedError("hutong migrations go forward only: restore a backup to go back")
