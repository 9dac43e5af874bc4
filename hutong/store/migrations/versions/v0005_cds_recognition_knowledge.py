"""Issue 14, item 2 (检查检验结果互认 knowledge as data): cds_knowledge_version and the
per-version rows cds_hr_item, cds_hr_item_region, cds_hr_negative, cds_hr_trigger,
cds_hr_quality and cds_hr_local_code (hutong.cds.knowledge_store describes each).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hutong.store.migrations.ddl import Frozen

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

T = Frozen()
T.table('cds_knowledge_version',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('effective_from', sa.String(length=10), nullable=False),
    sa.Column('effective_to', sa.String(length=10), nullable=True),
    sa.Column('author', sa.String(length=128), nullable=False),
    sa.Column('approver', sa.String(length=128), nullable=True),
    sa.Column('retired_by', sa.String(length=128), nullable=True),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.Column('approved', sa.BigInteger(), nullable=True),
    sa.Column('retired', sa.BigInteger(), nullable=True),
    sa.Column('note', sa.String(length=500), nullable=True),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
)
T.index('ix_cds_knowledge_version_kind', 'cds_knowledge_version', ['kind', 'status', 'effective_from'], unique=False)
T.table('cds_hr_item',
    sa.Column('version_id', sa.String(length=40), nullable=False),
    sa.Column('item', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('loinc', sa.String(length=32), nullable=True),
    sa.Column('modality', sa.String(length=16), nullable=True),
    sa.Column('body_site', sa.String(length=32), nullable=True),
    sa.Column('proc_system', sa.String(length=200), nullable=True),
    sa.Column('proc_code', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('version_id', 'item', name='pk_cds_hr_item')
)
T.table('cds_hr_item_region',
    sa.Column('version_id', sa.String(length=40), nullable=False),
    sa.Column('item', sa.String(length=64), nullable=False),
    sa.Column('region', sa.String(length=6), nullable=False),
    sa.Column('window_days', sa.Integer(), nullable=False),
    sa.Column('scope_mark', sa.String(length=32), nullable=False),
    sa.PrimaryKeyConstraint('version_id', 'item', 'region', name='pk_cds_hr_item_region')
)
T.table('cds_hr_negative',
    sa.Column('version_id', sa.String(length=40), nullable=False),
    sa.Column('situation', sa.String(length=64), nullable=False),
    sa.Column('item', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('version_id', 'situation', 'item', name='pk_cds_hr_negative')
)
T.table('cds_hr_trigger',
    sa.Column('version_id', sa.String(length=40), nullable=False),
    sa.Column('situation', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('system', sa.String(length=200), nullable=False),
    sa.Column('value', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('version_id', 'situation', 'kind', 'system', 'value', name='pk_cds_hr_trigger')
)
T.table('cds_hr_quality',
    sa.Column('version_id', sa.String(length=40), nullable=False),
    sa.Column('institution', sa.String(length=64), nullable=False),
    sa.Column('item', sa.String(length=64), nullable=False),
    sa.Column('program', sa.String(length=64), nullable=False),
    sa.Column('passed', sa.Integer(), nullable=False),
    sa.Column('valid_from', sa.String(length=10), nullable=False),
    sa.Column('valid_to', sa.String(length=10), nullable=False),
    sa.PrimaryKeyConstraint('version_id', 'institution', 'item', 'program', 'valid_from', name='pk_cds_hr_quality')
)
T.table('cds_hr_local_code',
    sa.Column('version_id', sa.String(length=40), nullable=False),
    sa.Column('system', sa.String(length=200), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('institution', sa.String(length=64), nullable=False),
    sa.Column('item', sa.String(length=64), nullable=False),
    sa.Column('display', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('version_id', 'system', 'code', name='pk_cds_hr_local_code')
)


def upgrade() -> None:
    T.create_missing(op.get_bind())


def downgrade() -> None:
    raise NotImplementedError("hutong migrations go forward only: restore a backup to go back")
