"""Issue 16, item 6 (the identity review queue's decision history): the
mpi_review_decision table of hutong.mpi.schema (each human decision on a
review item: linked, rejected, unlinked; who, when, note).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hutong.store.migrations.ddl import PK, Frozen

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

T = Frozen()
T.table('mpi_review_decision',
    sa.Column('id', PK, autoincrement=True, nullable=False),
    sa.Column('review_id', sa.BigInteger(), nullable=False),
    sa.Column('at', sa.BigInteger(), nullable=False),
    sa.Column('decision', sa.String(length=10), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('note', sa.String(length=500), nullable=True),
    sa.PrimaryKeyConstraint('id')
)
T.index('ix_mpi_review_decision_review', 'mpi_review_decision', ['review_id', 'id'], unique=False)


def upgrade() -> None:
    T.create_missing(op.get_bind())


def downgrade() -> None:
    raise NotImplementedError("hutong migrations go forward only: restore a backup to go back")
