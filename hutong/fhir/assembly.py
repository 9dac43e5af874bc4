"""Wiring the store to the FHIR definitions: the one place a Repository is built."""

from __future__ import annotations

from hutong.fhir.registry import FhirIndexer
from hutong.store.database import open_database
from hutong.store.repository import Repository
from hutong.store.sql import SqlRepository


def open_repository(url: str | None = None) -> SqlRepository:
    repo = SqlRepository(open_database(url), FhirIndexer())
    _interface: Repository = repo  # mypy checks SqlRepository against the Repository protocol
    return repo
