"""Tables of the FHIR store (one definition, DDL rendered per dialect).

- ``resource``: one row per logical resource holding its *current* version
  (body NULL once deleted: a versioned tombstone, http.html#delete).
- ``resource_version``: every earlier version, moved there on update/delete,
  so a create writes one body and a read touches one row.
- ``search_param``: small integer ids for (type, parameter name); index rows
  carry the id, which keeps the index tables narrow.
- ``idx_*``: search index rows extracted at write time (search.html).  Searches
  run only on these, never on bodies.
- ``compartment``: patient-compartment membership (compartmentdefinition-patient).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    UniqueConstraint,
)

metadata = MetaData()

# SQLite needs INTEGER PRIMARY KEY for a rowid alias; PostgreSQL gets BIGINT.
PK = BigInteger().with_variant(Integer(), "sqlite")
# Byte-wise ordering so prefix searches can use a B-tree range in PostgreSQL.
Text = String().with_variant(String(collation="C"), "postgresql")

resource = Table(
    "resource",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("type", String(64), nullable=False),
    Column("fhir_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("last_updated", BigInteger, nullable=False),  # epoch ms, UTC
    Column("deleted", SmallInteger, nullable=False, default=0),
    Column("method", String(6), nullable=False),  # POST / PUT / DELETE of this version
    Column("body", LargeBinary, nullable=True),
    UniqueConstraint("type", "fhir_id", name="uq_resource_type_id"),
    Index("ix_resource_type_lu", "type", "last_updated"),
    Index("ix_resource_lu", "last_updated"),
)

resource_version = Table(
    "resource_version",
    metadata,
    Column("res_pk", PK, nullable=False),
    Column("version", Integer, nullable=False),
    Column("last_updated", BigInteger, nullable=False),
    Column("deleted", SmallInteger, nullable=False),
    Column("method", String(6), nullable=False),
    Column("body", LargeBinary, nullable=True),
    PrimaryKeyConstraint("res_pk", "version", name="pk_resource_version"),
    Index("ix_resource_version_lu", "last_updated"),
)

search_param = Table(
    "search_param",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("type", String(64), nullable=False),
    Column("name", String(64), nullable=False),
    UniqueConstraint("type", "name", name="uq_search_param"),
)

idx_string = Table(
    "idx_string",
    metadata,
    Column("res_pk", PK, nullable=False),
    Column("param_id", Integer, nullable=False),
    Column("norm", Text, nullable=False),
    Column("exact", Text, nullable=False),
    Index("ix_idx_string_v", "param_id", "norm"),
    Index("ix_idx_string_r", "res_pk"),
)

idx_token = Table(
    "idx_token",
    metadata,
    Column("res_pk", PK, nullable=False),
    Column("param_id", Integer, nullable=False),
    Column("system", Text, nullable=True),
    Column("code", Text, nullable=True),
    Column("text", Text, nullable=True),
    Index("ix_idx_token_v", "param_id", "code", "system"),
    Index("ix_idx_token_r", "res_pk"),
)

idx_date = Table(
    "idx_date",
    metadata,
    Column("res_pk", PK, nullable=False),
    Column("param_id", Integer, nullable=False),
    Column("lo", BigInteger, nullable=False),
    Column("hi", BigInteger, nullable=False),
    Index("ix_idx_date_lo", "param_id", "lo"),
    Index("ix_idx_date_hi", "param_id", "hi"),
    Index("ix_idx_date_r", "res_pk"),
)

idx_reference = Table(
    "idx_reference",
    metadata,
    Column("res_pk", PK, nullable=False),
    Column("param_id", Integer, nullable=False),
    Column("target_type", String(64), nullable=True),
    Column("target_id", String(64), nullable=True),
    Column("ref", Text, nullable=False),
    Index("ix_idx_reference_v", "param_id", "target_id", "target_type"),
    Index("ix_idx_reference_t", "target_id", "target_type"),
    Index("ix_idx_reference_r", "res_pk"),
)

idx_quantity = Table(
    "idx_quantity",
    metadata,
    Column("res_pk", PK, nullable=False),
    Column("param_id", Integer, nullable=False),
    Column("value", Float, nullable=False),
    Column("system", Text, nullable=True),
    Column("code", Text, nullable=True),
    Index("ix_idx_quantity_v", "param_id", "value"),
    Index("ix_idx_quantity_r", "res_pk"),
)

idx_number = Table(
    "idx_number",
    metadata,
    Column("res_pk", PK, nullable=False),
    Column("param_id", Integer, nullable=False),
    Column("value", Float, nullable=False),
    Index("ix_idx_number_v", "param_id", "value"),
    Index("ix_idx_number_r", "res_pk"),
)

idx_uri = Table(
    "idx_uri",
    metadata,
    Column("res_pk", PK, nullable=False),
    Column("param_id", Integer, nullable=False),
    Column("uri", Text, nullable=False),
    Index("ix_idx_uri_v", "param_id", "uri"),
    Index("ix_idx_uri_r", "res_pk"),
)

compartment = Table(
    "compartment",
    metadata,
    Column("res_pk", PK, nullable=False),
    Column("patient_id", String(64), nullable=False),
    Index("ix_compartment_p", "patient_id", "res_pk"),
    Index("ix_compartment_r", "res_pk"),
)

# param type -> (table name, value columns in row order)
INDEX_TABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "string": ("idx_string", ("norm", "exact")),
    "token": ("idx_token", ("system", "code", "text")),
    "date": ("idx_date", ("lo", "hi")),
    "reference": ("idx_reference", ("target_type", "target_id", "ref")),
    "quantity": ("idx_quantity", ("value", "system", "code")),
    "number": ("idx_number", ("value",)),
    "uri": ("idx_uri", ("uri",)),
}
