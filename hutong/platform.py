"""The composition root: every long-lived service of one Hutong deployment,
built once and handed, as one typed object, to ``web/``, ``cli/`` and ``ingest/``.

Nothing below this module builds its own database, key ring, audit log or SMS
gateway; each takes what it needs from a :class:`Platform` (DESIGN.md,
"Architecture": one injected seam per outside thing, so tests swap it without
monkeypatching).  ``open_repository`` is the one place a Repository is wired:
encryption at rest is on for every caller (CLI, server, tests, benchmarks,
demo): resource bodies and the MPI's and inbox's sensitive columns go through
the AES-256-GCM codec, direct identifiers in the search index become blind
indexes, and MPI blocking keys are keyed by the database's secret
(hutong.security.keys explains the keys).  ``encrypt=False`` exists only for
the benchmark's baseline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import hutong.mpi.schema  # noqa: F401  (registers the MPI tables before the schema is created)
from hutong.config import Settings
from hutong.fhir.registry import FhirIndexer
from hutong.mpi.blocking import LEGACY_KEY
from hutong.mpi.service import Mpi
from hutong.security import consent_authors
from hutong.security.audit import AuditLog
from hutong.security.authn import Authenticator
from hutong.security.blindindex import BlindIndex, BlindIndexer, reindex, subkey
from hutong.security.crypto import AesCodec
from hutong.security.guard import install as install_guard
from hutong.security.keys import KeyRing, KeySource, default_key_dir, key_source_for
from hutong.security.oauth import AuthService
from hutong.security.policy import Access
from hutong.security.principal import Principal
from hutong.security.residency import check_target
from hutong.security.settings import SecuritySettings
from hutong.security.sms import OutboxGateway
from hutong.store.database import open_database, resolve_url
from hutong.store.repository import Repository
from hutong.store.sql import SqlRepository
from hutong.store.standby import Standby, open_standby
from hutong.store.standby import check_setting as check_standby


def open_repository(url: str | None = None, *, encrypt: bool = True,
                    key_source: KeySource | None = None) -> SqlRepository:
    """The database of ``url`` (or HUTONG_DATABASE_URL) as a Repository: codec,
    blind indexes, the MPI hook and the access policy's write hook installed."""
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
    try:
        ring = KeyRing(db, key_source or key_source_for(db.url))
    except BaseException:
        db.close()  # keys that do not open (HT-0152, a failing KMS): no pooled connection left behind
        raise
    blind = BlindIndex(ring.blind_key)
    repo = SqlRepository(db, BlindIndexer(FhirIndexer(), blind), codec=AesCodec(ring))
    repo.compiler.protector = blind
    # Every Patient write, whatever its path, is linked to its person in the same transaction.
    mpi = Mpi(repo, subkey(ring.blind_key, "mpi-blocking"))
    repo.hooks.append(mpi)
    if ring.created and repo.history(None, None, since=None, count=1):
        reindex(repo, mpi)  # a database from before encryption at rest: digests replace clear index values
    # The access policy and the sensitivity labeller run first on every write path.
    install_guard(repo)
    _interface: Repository = repo  # mypy checks SqlRepository against the Repository protocol
    return repo


def mpi_of(repo: Repository) -> Mpi:
    """The MPI hook ``open_repository`` installed (one per repository)."""
    for hook in repo.hooks:
        if isinstance(hook, Mpi):
            return hook
    raise LookupError("repository opened without the MPI hook (use hutong.platform.open_repository)")


@dataclass(frozen=True)
class Platform:
    """One deployment's services, built once by :func:`build_platform`."""

    settings: Settings
    security: SecuritySettings
    repo: Repository
    mpi: Mpi
    audit: AuditLog
    key_dir: Path                  # keys (and, by default, the SMS outbox); outside the database directory
    sms: OutboxGateway             # the development gateway: a local outbox file, never a pretend carrier
    auth: AuthService              # sign-in, tokens, accounts (hutong.security.oauth)
    authenticator: Authenticator   # bearer token -> Principal, for every gated request
    # A hot standby for lag-tolerant reads (HUTONG_STANDBY_DATABASE_URL; hutong.store.standby), or None.
    standby: Standby | None = None

    def access_for(self, principal: Principal) -> Access:
        """The policy factory: what ``principal`` may do, for one request or job."""
        return Access(self.repo, principal, self.security)

    def close(self) -> None:
        if self.standby is not None:
            self.standby.close()
        self.repo.db.close()


def build_platform(settings: Settings | None = None, *, repo: Repository | None = None,
                   security: SecuritySettings | None = None, sms: OutboxGateway | None = None,
                   clock: Callable[[], int] | None = None) -> Platform:
    """Build every service once.  ``repo`` (already opened, e.g. by a test) is
    used as it is; otherwise ``settings.database_url`` is opened here."""
    settings = settings or Settings.from_env()
    security = security or SecuritySettings.from_env()
    if settings.standby_url:  # refused before anything is opened (SQLite has no standby: HT-0630)
        check_standby(resolve_url(settings.database_url if repo is None else repo.db.url), settings.standby_url,
                      settings.standby_max_lag_s)
    repository = repo or open_repository(settings.database_url)
    # Idempotent: a repository opened elsewhere gets the access policy's write hook too.
    install_guard(repository)
    audit = AuditLog(repository)
    key_dir = security.key_dir or default_key_dir(settings.database_url)
    gateway = sms or OutboxGateway(security.sms_outbox or key_dir / "sms-outbox.ndjson")

    def find_person(id_number: str) -> str | None:
        from hutong.web.access_ops import find_person as lookup  # identity by ID number (sign-in)

        return lookup(repository, id_number)

    auth = AuthService(repository, security, key_dir, audit=audit.record, find_person=find_person, sms=gateway,
                       clock=clock)
    authenticator = Authenticator(repository, security, key_dir, tokens=auth.tokens)
    consent_authors.install(repository, gateway.send)  # residents are told of Consents others record (issue 12)
    standby = (open_standby(repository, settings.standby_url, max_lag_s=settings.standby_max_lag_s)
               if settings.standby_url else None)
    return Platform(settings=settings, security=security, repo=repository, mpi=mpi_of(repository), audit=audit,
                    key_dir=key_dir, sms=gateway, auth=auth, authenticator=authenticator, standby=standby)
