"""Wiring the store to the FHIR definitions: the one place a Repository is built.

Encryption at rest is on for every caller (CLI, server, tests, benchmarks,
demo): resource bodies and the MPI's and inbox's sensitive columns go through
the AES-256-GCM codec, direct identifiers in the search index become blind
indexes, and MPI blocking keys are keyed by the database's secret
(hutong.security.keys explains the keys).  ``encrypt=False`` exists only for
the benchmark's baseline.
"""

from __future__ import annotations

import hutong.mpi.schema  # noqa: F401  (registers the MPI tables before the schema is created)
from hutong.fhir.registry import FhirIndexer
from hutong.mpi.blocking import LEGACY_KEY
from hutong.mpi.service import Mpi
from hutong.security.blindindex import BlindIndex, BlindIndexer, reindex, subkey
from hutong.security.crypto import AesCodec
from hutong.security.guard import install as install_guard
from hutong.security.keys import KeyRing, KeySource, key_source_for
from hutong.security.residency import check_target
from hutong.security.settings import SecuritySettings
from hutong.store.database import open_database, resolve_url
from hutong.store.repository import Repository
from hutong.store.sql import SqlRepository


def open_repository(url: str | None = None, *, encrypt: bool = True,
                    key_source: KeySource | None = None) -> SqlRepository:
    # Data residency (issue 6; 数据安全法, PIPL Art. 40): no store outside the
    # allowed regions, whoever opens it.
    target = resolve_url(url)
    if target.startswith(("sqlite", "postgresql")):  # anything else: open_database names the problem
        check_target(target, SecuritySettings.from_env(), "storage")
    db = open_database(url)
    if not encrypt:
        repo = SqlRepository(db, FhirIndexer())
        repo.hooks.append(Mpi(repo, LEGACY_KEY))
        install_guard(repo)
        return repo
    ring = KeyRing(db, key_source or key_source_for(db.url))
    blind = BlindIndex(ring.blind_key)
    repo = SqlRepository(db, BlindIndexer(FhirIndexer(), blind), codec=AesCodec(ring))
    repo.compiler.protector = blind
    # Every Patient write, whatever its path, is linked to its person in the same transaction.
    mpi = Mpi(repo, subkey(ring.blind_key, "mpi-blocking"))
    repo.hooks.append(mpi)
    if ring.created and repo.query("SELECT 1 FROM resource LIMIT 1"):
        reindex(repo, mpi)  # a database from before encryption at rest: digests replace clear index values
    # The access policy and the sensitivity labeller run first on every write path.
    install_guard(repo)
    _interface: Repository = repo  # mypy checks SqlRepository against the Repository protocol
    return repo
