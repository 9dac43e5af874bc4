"""Issue 13, item 5 (one ingestion envelope): ingest_message.principal.

Who sent each message, as authenticated (hutong.ingest.acting.OnRecord as
JSON: the principal its writes ran as and the transport's credential), so a
dead-letter retry acts as that sender instead of as trusted code.  Rows from
before this revision have none: their retry is refused (HT-0317) and the
sender sends them again.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    columns = {c["name"] for c in sa.inspect(bind).get_columns("ingest_message")}
    if "principal" not in columns:
        op.add_column("ingest_message", sa.Column("principal", sa.String(length=1000), nullable=True))


def downgrade() -> None:
    raise NotImplementedError("hutong migrations go forward only: restore a backup to go back")
