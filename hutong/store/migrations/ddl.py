"""Frozen column types and the table-building helpers the migration scripts share.

A migration describes the schema as it was at its revision, so it never imports
the live Table definitions (they move on with later revisions); these types are
copies of hutong.store.schema's ``PK`` and ``Text`` as of revision 0001 and must
never change.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

# SQLite needs INTEGER PRIMARY KEY for a rowid alias; PostgreSQL gets BIGINT.
PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# Byte-wise ordering so prefix searches can use a B-tree range in PostgreSQL.
Text = sa.String().with_variant(sa.String(collation="C"), "postgresql")


class Frozen:
    """Tables of one revision, declared like ``op.create_table``/``op.create_index``
    and created only where missing.

    Before revision 0001 there was no schema version and each package created its
    own tables the first time its constructor ran, so a database of release
    bc329d5 may lack the tables of the features it never used (sharing, accounts);
    and a database made between bc329d5 and 0002 already has some of 0002's tables.
    Creating what is missing, table by table, upgrades all of them alike.
    """

    def __init__(self) -> None:
        self.metadata = sa.MetaData()

    def table(self, name: str, *elements: sa.schema.SchemaItem) -> sa.Table:
        return sa.Table(name, self.metadata, *elements)

    def index(self, name: str, table: str, columns: Sequence[str], unique: bool = False) -> sa.Index:
        t = self.metadata.tables[table]
        return sa.Index(name, *(t.c[c] for c in columns), unique=unique)

    def create_missing(self, bind: sa.engine.Connection) -> None:
        self.metadata.create_all(bind, checkfirst=True)
