"""Wiring the store to the FHIR definitions: the one place a Repository is built."""

from __future__ import annotations

import hutong.mpi.schema  # noqa: F401  (registers the MPI tables before the schema is created)
from hutong.fhir.registry import FhirIndexer
from hutong.mpi.service import Mpi
from hutong.store.database import open_database
from hutong.store.repository import Repository
from hutong.store.sql import SqlRepository


def open_repository(url: str | None = None) -> SqlRepository:
    repo = SqlRepository(open_database(url), FhirIndexer())
    # Every Patient write, whatever its path, is linked to its person in the same transaction.
    repo.hooks.append(Mpi(repo))
    _interface: Repository = repo  # mypy checks SqlRepository against the Repository protocol
    return repo
