"""Issue 14, item 2 (检查检验结果互认 knowledge as data): the cds_* tables of
hutong.cds.knowledge_store (claimed; tables follow).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

from hutong.store.migrations.ddl import Frozen

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

T = Frozen()


def upgrade() -> None:
    T.create_missing(op.get_bind())


def downgrade() -> None:
    raise NotImplementedError("hutong migrations go forward only: restore a backup to go back")
