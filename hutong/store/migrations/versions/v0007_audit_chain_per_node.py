"""Issue 18, item 2 (several nodes, one database): one audit chain per node
(stub; being written).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.get_bind()


def downgrade() -> None:
    raise NotImplementedError("hutong migrations go forward only: restore a backup to go back")
