"""The schema of release bc329d5 (before issue 12): the FHIR store, MPI, ingestion inbox,
accounts and tokens, audit trail, access grants, sharing and data keys.

The baseline: a database of release bc329d5 has no schema version; opening or
upgrading it runs this revision, which creates only the tables it lacks.

Revision ID: 0001
Revises: None
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hutong.store.migrations.ddl import PK, Frozen, Text

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

T = Frozen()
T.table('access_grant',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('account_id', sa.String(length=64), nullable=False),
    sa.Column('person_id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.LargeBinary(), nullable=False),
    sa.Column('created_ms', sa.BigInteger(), nullable=False),
    sa.Column('expires_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id')
)
T.index('ix_access_grant_lookup', 'access_grant', ['account_id', 'person_id', 'expires_ms'], unique=False)
T.table('account',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('display', sa.String(length=200), nullable=False),
    sa.Column('username', sa.String(length=100), nullable=True),
    sa.Column('client_id', sa.String(length=64), nullable=True),
    sa.Column('secret_hash', sa.String(length=200), nullable=True),
    sa.Column('jwks', sa.Text(), nullable=True),
    sa.Column('totp_secret', sa.LargeBinary(), nullable=True),
    sa.Column('totp_last_step', sa.BigInteger(), nullable=True),
    sa.Column('phone', sa.LargeBinary(), nullable=True),
    sa.Column('organization', sa.String(length=64), nullable=True),
    sa.Column('organization_id', sa.String(length=64), nullable=True),
    sa.Column('practitioner_id', sa.String(length=64), nullable=True),
    sa.Column('practitioner_role_id', sa.String(length=64), nullable=True),
    sa.Column('person_id', sa.String(length=64), nullable=True),
    sa.Column('scopes', sa.String(length=2000), nullable=False),
    sa.Column('status', sa.String(length=8), nullable=False),
    sa.Column('failed_count', sa.Integer(), nullable=False),
    sa.Column('locked_until', sa.BigInteger(), nullable=False),
    sa.Column('password_changed_at', sa.BigInteger(), nullable=True),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.Column('updated', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('client_id'),
    sa.UniqueConstraint('person_id'),
    sa.UniqueConstraint('username')
)
T.index('ix_account_role', 'account', ['role'], unique=False)
T.table('account_person',
    sa.Column('account_id', sa.String(length=40), nullable=False),
    sa.Column('person_id', sa.String(length=64), nullable=False),
    sa.Column('relationship', sa.String(length=16), nullable=False),
    sa.Column('expires', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('account_id', 'person_id', name='pk_account_person')
)
T.index('ix_account_person_person', 'account_person', ['person_id'], unique=False)
T.table('audit_anchor',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.Column('time_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id')
)
T.table('audit_event',
    sa.Column('seq', PK, autoincrement=False, nullable=False),
    sa.Column('time_ms', sa.BigInteger(), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('outcome', sa.String(length=2), nullable=False),
    sa.Column('account_id', sa.String(length=128), nullable=True),
    sa.Column('role', sa.String(length=16), nullable=True),
    sa.Column('organization', sa.String(length=64), nullable=True),
    sa.Column('on_behalf_of', sa.String(length=64), nullable=True),
    sa.Column('code', sa.String(length=8), nullable=True),
    sa.Column('peer', sa.String(length=100), nullable=True),
    sa.Column('purpose', sa.String(length=32), nullable=True),
    sa.Column('flags', sa.SmallInteger(), nullable=False),
    sa.Column('body', sa.LargeBinary(), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('seq')
)
T.index('ix_audit_event_account', 'audit_event', ['account_id', 'seq'], unique=False)
T.index('ix_audit_event_flags', 'audit_event', ['flags', 'seq'], unique=False)
T.index('ix_audit_event_time', 'audit_event', ['time_ms'], unique=False)
T.table('audit_person',
    sa.Column('person_id', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('person_id', 'seq', name='pk_audit_person')
)
T.index('ix_audit_person_seq', 'audit_person', ['seq'], unique=False)
T.table('break_glass_review',
    sa.Column('seq', PK, autoincrement=False, nullable=False),
    sa.Column('reviewer', sa.String(length=128), nullable=False),
    sa.Column('verdict', sa.String(length=16), nullable=False),
    sa.Column('note', sa.LargeBinary(), nullable=True),
    sa.Column('time_ms', sa.BigInteger(), nullable=False),
    sa.Column('review_seq', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('seq')
)
T.table('compartment',
    sa.Column('res_pk', PK, nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=False)
)
T.index('ix_compartment_p', 'compartment', ['patient_id', 'res_pk'], unique=False)
T.index('ix_compartment_r', 'compartment', ['res_pk'], unique=False)
T.table('data_key',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('purpose', sa.String(length=8), nullable=False),
    sa.Column('wrapped', sa.LargeBinary(), nullable=False),
    sa.Column('master_id', sa.String(length=64), nullable=False),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.Column('retired', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('id')
)
T.table('idx_date',
    sa.Column('res_pk', PK, nullable=False),
    sa.Column('param_id', sa.Integer(), nullable=False),
    sa.Column('lo', sa.BigInteger(), nullable=False),
    sa.Column('hi', sa.BigInteger(), nullable=False)
)
T.index('ix_idx_date_hi', 'idx_date', ['param_id', 'hi'], unique=False)
T.index('ix_idx_date_lo', 'idx_date', ['param_id', 'lo'], unique=False)
T.index('ix_idx_date_r', 'idx_date', ['res_pk'], unique=False)
T.table('idx_number',
    sa.Column('res_pk', PK, nullable=False),
    sa.Column('param_id', sa.Integer(), nullable=False),
    sa.Column('value', sa.Float(), nullable=False)
)
T.index('ix_idx_number_r', 'idx_number', ['res_pk'], unique=False)
T.index('ix_idx_number_v', 'idx_number', ['param_id', 'value'], unique=False)
T.table('idx_quantity',
    sa.Column('res_pk', PK, nullable=False),
    sa.Column('param_id', sa.Integer(), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.Column('system', Text, nullable=True),
    sa.Column('code', Text, nullable=True)
)
T.index('ix_idx_quantity_r', 'idx_quantity', ['res_pk'], unique=False)
T.index('ix_idx_quantity_v', 'idx_quantity', ['param_id', 'value'], unique=False)
T.table('idx_reference',
    sa.Column('res_pk', PK, nullable=False),
    sa.Column('param_id', sa.Integer(), nullable=False),
    sa.Column('target_type', sa.String(length=64), nullable=True),
    sa.Column('target_id', sa.String(length=64), nullable=True),
    sa.Column('ref', Text, nullable=False)
)
T.index('ix_idx_reference_r', 'idx_reference', ['res_pk'], unique=False)
T.index('ix_idx_reference_t', 'idx_reference', ['target_id', 'target_type'], unique=False)
T.index('ix_idx_reference_v', 'idx_reference', ['param_id', 'target_id', 'target_type'], unique=False)
T.table('idx_string',
    sa.Column('res_pk', PK, nullable=False),
    sa.Column('param_id', sa.Integer(), nullable=False),
    sa.Column('norm', Text, nullable=False),
    sa.Column('exact', Text, nullable=False)
)
T.index('ix_idx_string_r', 'idx_string', ['res_pk'], unique=False)
T.index('ix_idx_string_v', 'idx_string', ['param_id', 'norm'], unique=False)
T.table('idx_token',
    sa.Column('res_pk', PK, nullable=False),
    sa.Column('param_id', sa.Integer(), nullable=False),
    sa.Column('system', Text, nullable=True),
    sa.Column('code', Text, nullable=True),
    sa.Column('text', Text, nullable=True)
)
T.index('ix_idx_token_r', 'idx_token', ['res_pk'], unique=False)
T.index('ix_idx_token_v', 'idx_token', ['param_id', 'code', 'system'], unique=False)
T.table('idx_uri',
    sa.Column('res_pk', PK, nullable=False),
    sa.Column('param_id', sa.Integer(), nullable=False),
    sa.Column('uri', Text, nullable=False)
)
T.index('ix_idx_uri_r', 'idx_uri', ['res_pk'], unique=False)
T.index('ix_idx_uri_v', 'idx_uri', ['param_id', 'uri'], unique=False)
T.table('ingest_daily',
    sa.Column('sender', sa.String(length=64), nullable=False),
    sa.Column('day', sa.Integer(), nullable=False),
    sa.Column('channel', sa.String(length=8), nullable=False),
    sa.Column('messages', sa.Integer(), nullable=False),
    sa.Column('dead', sa.Integer(), nullable=False),
    sa.Column('b_lt1h', sa.Integer(), nullable=False),
    sa.Column('b_lt6h', sa.Integer(), nullable=False),
    sa.Column('b_lt24h', sa.Integer(), nullable=False),
    sa.Column('b_lt48h', sa.Integer(), nullable=False),
    sa.Column('b_lt7d', sa.Integer(), nullable=False),
    sa.Column('b_ge7d', sa.Integer(), nullable=False),
    sa.Column('b_unknown', sa.Integer(), nullable=False),
    sa.Column('last_received', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('sender', 'day', 'channel', name='pk_ingest_daily')
)
T.table('ingest_message',
    sa.Column('id', PK, autoincrement=True, nullable=False),
    sa.Column('channel', sa.String(length=8), nullable=False),
    sa.Column('sender', sa.String(length=64), nullable=False),
    sa.Column('control_id', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('received', sa.BigInteger(), nullable=False),
    sa.Column('event_time', sa.BigInteger(), nullable=True),
    sa.Column('status', sa.String(length=8), nullable=False),
    sa.Column('ack_code', sa.String(length=2), nullable=False),
    sa.Column('reason', sa.String(length=1000), nullable=True),
    sa.Column('peer', sa.String(length=100), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('raw', sa.LargeBinary(), nullable=False),
    sa.Column('ack', sa.LargeBinary(), nullable=True),
    sa.PrimaryKeyConstraint('id')
)
T.index('ix_ingest_message_key', 'ingest_message', ['channel', 'sender', 'control_id'], unique=False)
T.index('ix_ingest_message_sender', 'ingest_message', ['sender', 'received'], unique=False)
T.index('ix_ingest_message_status', 'ingest_message', ['status', 'id'], unique=False)
T.table('ingest_sender',
    sa.Column('sender', sa.String(length=64), nullable=False),
    sa.Column('channel', sa.String(length=8), nullable=False),
    sa.Column('last_received', sa.BigInteger(), nullable=False),
    sa.Column('last_kind', sa.String(length=40), nullable=False),
    sa.Column('last_status', sa.String(length=8), nullable=False),
    sa.UniqueConstraint('sender', 'channel', name='uq_ingest_sender')
)
T.table('mpi_block',
    sa.Column('key', Text, nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=False)
)
T.index('ix_mpi_block_key', 'mpi_block', ['key'], unique=False)
T.index('ix_mpi_block_patient', 'mpi_block', ['patient_id'], unique=False)
T.table('mpi_event',
    sa.Column('id', PK, autoincrement=True, nullable=False),
    sa.Column('at', sa.BigInteger(), nullable=False),
    sa.Column('kind', sa.String(length=12), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('reason', sa.String(length=500), nullable=True),
    sa.Column('undone', sa.SmallInteger(), nullable=False),
    sa.Column('detail', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('id')
)
T.index('ix_mpi_event_at', 'mpi_event', ['at'], unique=False)
T.table('mpi_model',
    sa.Column('version', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.Column('active', sa.SmallInteger(), nullable=False),
    sa.Column('params', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('version')
)
T.table('mpi_nolink',
    sa.Column('a', sa.String(length=64), nullable=False),
    sa.Column('b', sa.String(length=64), nullable=False),
    sa.Column('at', sa.BigInteger(), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('reason', sa.String(length=500), nullable=True),
    sa.PrimaryKeyConstraint('a', 'b', name='pk_mpi_nolink')
)
T.index('ix_mpi_nolink_b', 'mpi_nolink', ['b'], unique=False)
T.table('mpi_review',
    sa.Column('id', PK, autoincrement=True, nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('person_id', sa.String(length=64), nullable=False),
    sa.Column('score', sa.Float(), nullable=True),
    sa.Column('reason', sa.String(length=500), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.Column('decided', sa.BigInteger(), nullable=True),
    sa.Column('actor', sa.String(length=128), nullable=True),
    sa.PrimaryKeyConstraint('id')
)
T.index('ix_mpi_review_patient', 'mpi_review', ['patient_id'], unique=False)
T.index('ix_mpi_review_status', 'mpi_review', ['status', 'id'], unique=False)
T.table('mpi_source',
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('person_id', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=8), nullable=False),
    sa.Column('rule', sa.String(length=8), nullable=False),
    sa.Column('score', sa.Float(), nullable=True),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('updated', sa.BigInteger(), nullable=False),
    sa.Column('features', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('patient_id')
)
T.index('ix_mpi_source_person', 'mpi_source', ['person_id'], unique=False)
T.index('ix_mpi_source_seq', 'mpi_source', ['seq'], unique=False)
T.table('otp_challenge',
    sa.Column('account_id', sa.String(length=40), nullable=False),
    sa.Column('code_hash', sa.String(length=200), nullable=False),
    sa.Column('expires', sa.BigInteger(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('account_id')
)
T.table('otp_sent',
    sa.Column('account_id', sa.String(length=40), nullable=False),
    sa.Column('sent_at', sa.BigInteger(), nullable=False)
)
T.index('ix_otp_sent', 'otp_sent', ['account_id', 'sent_at'], unique=False)
T.table('refresh_token',
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('family', sa.String(length=40), nullable=False),
    sa.Column('account_id', sa.String(length=40), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=True),
    sa.Column('scopes', sa.String(length=2000), nullable=False),
    sa.Column('expires', sa.BigInteger(), nullable=False),
    sa.Column('revoked', sa.Integer(), nullable=False),
    sa.Column('last_used', sa.BigInteger(), nullable=False),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('token_hash')
)
T.index('ix_refresh_token_account', 'refresh_token', ['account_id'], unique=False)
T.index('ix_refresh_token_family', 'refresh_token', ['family'], unique=False)
T.table('resource',
    sa.Column('pk', PK, autoincrement=True, nullable=False),
    sa.Column('type', sa.String(length=64), nullable=False),
    sa.Column('fhir_id', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('last_updated', sa.BigInteger(), nullable=False),
    sa.Column('deleted', sa.SmallInteger(), nullable=False),
    sa.Column('method', sa.String(length=6), nullable=False),
    sa.Column('body', sa.LargeBinary(), nullable=True),
    sa.PrimaryKeyConstraint('pk'),
    sa.UniqueConstraint('type', 'fhir_id', name='uq_resource_type_id')
)
T.index('ix_resource_lu', 'resource', ['last_updated'], unique=False)
T.index('ix_resource_type_lu', 'resource', ['type', 'last_updated'], unique=False)
T.table('resource_version',
    sa.Column('res_pk', PK, nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('last_updated', sa.BigInteger(), nullable=False),
    sa.Column('deleted', sa.SmallInteger(), nullable=False),
    sa.Column('method', sa.String(length=6), nullable=False),
    sa.Column('body', sa.LargeBinary(), nullable=True),
    sa.PrimaryKeyConstraint('res_pk', 'version', name='pk_resource_version')
)
T.index('ix_resource_version_lu', 'resource_version', ['last_updated'], unique=False)
T.table('revoked_token',
    sa.Column('jti', sa.String(length=64), nullable=False),
    sa.Column('expires', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('jti')
)
T.table('search_param',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('type', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('type', 'name', name='uq_search_param')
)
T.table('sharing_export',
    sa.Column('id', PK, autoincrement=True, nullable=False),
    sa.Column('request_id', sa.String(length=40), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('started', sa.BigInteger(), nullable=False),
    sa.Column('finished', sa.BigInteger(), nullable=True),
    sa.Column('outcome', sa.String(length=8), nullable=False),
    sa.Column('region', sa.String(length=16), nullable=False),
    sa.Column('deidentified', sa.Integer(), nullable=False),
    sa.Column('counts', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
)
T.index('ix_sharing_export_request', 'sharing_export', ['request_id', 'id'], unique=False)
T.table('sharing_request',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('requester', sa.String(length=128), nullable=False),
    sa.Column('organisation', sa.String(length=200), nullable=False),
    sa.Column('basis', sa.String(length=32), nullable=False),
    sa.Column('scope', sa.Text(), nullable=False),
    sa.Column('body', sa.LargeBinary(), nullable=False),
    sa.Column('approver', sa.String(length=128), nullable=True),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.Column('submitted', sa.BigInteger(), nullable=True),
    sa.Column('decided', sa.BigInteger(), nullable=True),
    sa.Column('expires', sa.BigInteger(), nullable=True),
    sa.Column('used', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('id')
)
T.index('ix_sharing_request_requester', 'sharing_request', ['requester', 'created'], unique=False)
T.index('ix_sharing_request_status', 'sharing_request', ['status', 'created'], unique=False)
T.table('used_assertion',
    sa.Column('assertion_key', sa.String(length=300), nullable=False),
    sa.Column('expires', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('assertion_key')
)


def upgrade() -> None:
    T.create_missing(op.get_bind())


def downgrade() -> None:
    raise NotImplementedError("hutong migrations go forward only: restore a backup to go back")
