"""Issue 18, item 2 (several nodes, one database): one audit chain per node
(hutong.security.audit).

- audit_event: ``chain`` (the node id; '' is the one chain of a single-node
  deployment and of every database before this revision) and ``chain_seq``
  (the row's position in its chain: 1, 2, 3 ...; backfilled as seq, which was
  the position of every row written so far); index (chain, seq), along which
  verification walks a chain and an append finds its chain's head.
- audit_anchor, audit_chain: keyed by ``chain`` (one anchor and one keyed-from
  point per chain; the existing rows are chain '').
- audit_ledger: each node's head, every audit_head_seconds, hash-chained under
  the chain key (what ``hutong audit verify`` checks every chain against).
- PostgreSQL: the sequence ``audit_seq`` that hands out seq once a second
  chain exists (set past every seq used so far), so that nodes do not take one
  lock to number their rows.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hutong.store.migrations.ddl import PK, Frozen

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

T = Frozen()
T.table('audit_ledger',
    sa.Column('id', PK, autoincrement=False, nullable=False),
    sa.Column('chain', sa.String(length=32), nullable=False),
    sa.Column('chain_seq', sa.BigInteger(), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.Column('time_ms', sa.BigInteger(), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('entry_hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id')
)


def _columns(bind: sa.engine.Connection, table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(bind).get_columns(table)}


def upgrade() -> None:
    bind = op.get_bind()
    if "chain" not in _columns(bind, "audit_event"):
        op.add_column("audit_event", sa.Column("chain", sa.String(length=32), nullable=False, server_default=""))
        op.add_column("audit_event", sa.Column("chain_seq", sa.BigInteger(), nullable=True))
        op.execute("UPDATE audit_event SET chain_seq = seq")
        op.create_index("ix_audit_event_chain", "audit_event", ["chain", "seq"], unique=False)
    if "chain" not in _columns(bind, "audit_anchor"):
        op.add_column("audit_anchor", sa.Column("chain", sa.String(length=32), nullable=False, server_default=""))
        op.add_column("audit_anchor", sa.Column("chain_seq", sa.BigInteger(), nullable=True))
        op.execute("UPDATE audit_anchor SET chain_seq = seq")
        op.create_index("ux_audit_anchor_chain", "audit_anchor", ["chain"], unique=True)
    if "chain" not in _columns(bind, "audit_chain"):
        op.add_column("audit_chain", sa.Column("chain", sa.String(length=32), nullable=False, server_default=""))
        op.create_index("ux_audit_chain_chain", "audit_chain", ["chain"], unique=True)
    T.create_missing(bind)
    if bind.dialect.name == "postgresql":
        # PostgreSQL 9.17 (sequence manipulation functions): nextval is never rolled back, so
        # concurrent transactions of different nodes number their rows without waiting on each other.
        # CACHE 1 (the default), never more: with per-session caches a later append of the same
        # chain could draw a lower seq than an earlier one, and a chain's order is its seq order.
        op.execute("CREATE SEQUENCE IF NOT EXISTS audit_seq AS BIGINT CACHE 1")
        op.execute("SELECT setval('audit_seq', GREATEST(1, (SELECT COALESCE(MAX(seq), 0) FROM audit_event), "
                   "(SELECT COALESCE(MAX(seq), 0) FROM audit_anchor)))")


def downgrade() -> None:
    raise NotImplementedError("hutong migrations go forward only: restore a backup to go back")
