"""Issue 16, item 6 (the identity review queue's decision history): the
mpi_review_decision table of hutong.mpi.schema (claimed; table follows).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

from hutong.store.migrations.ddl import Frozen

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

T = Frozen()


def upgrade() -> None:
    T.create_missing(op.get_bind())


def downgrade() -> None:
    raise NotImplementedError("hutong migrations go forward only: restore a backup to go back")
