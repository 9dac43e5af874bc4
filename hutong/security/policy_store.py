"""The facts access decisions rest on: policy's data access (DESIGN.md: SQL only in
``store/`` and one ``*_store.py`` per package that owns tables).

Everything :mod:`hutong.security.policy` needs to know about the world goes
through here: who manages a registration (the stored ``Patient.organization``
reference, issue 12 finding 1: fixed at creation), which patients' compartments
hold a record, a delegate's live delegations, a person's consents, encounters
and referrals (the treatment basis), a deleted record's last version.  Reads
outside a write use per-request caches (one :class:`PolicyFacts` per
:class:`~hutong.security.policy.Access`); reads inside a write go through the
open transaction (:class:`~hutong.store.sql.SqlWriter`) and its typed
:class:`~hutong.store.context.WriteContext` (registrations this transaction creates).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from hutong.mpi.golden import PERSON_PREFIX
from hutong.mpi.service import Mpi
from hutong.store.repository import Repository, Stored, Writer
from hutong.store.sql import SqlRepository, SqlWriter, compartment_of, sql_repository

# The record types a person's access basis is read from (consents, visits, referrals).
BASIS_TYPES = ("Consent", "Encounter", "ServiceRequest")


def mpi_of(repo: Repository) -> Mpi:
    """The MPI hooked into this repository (one model cache per process); a
    fresh one when none is (a bare repository in a test of the internals)."""
    for h in repo.hooks:
        if isinstance(h, Mpi):
            return h
    return Mpi(repo)


def _sql(w: Writer) -> SqlWriter:
    """The SQL writer behind a Writer (this module is the policy's SQL)."""
    assert isinstance(w, SqlWriter), "the policy's facts read through the SQL store"
    return w


def body_of(s: Stored | None) -> dict[str, Any] | None:
    if s is None or s.body is None:
        return None
    body: dict[str, Any] = orjson.loads(s.body)
    return body


def security_context(resource: dict[str, Any] | None) -> set[str]:
    """The patient a Binary belongs to (its securityContext, hutong.ingest.cda)."""
    from hutong.security.consent import ref_key

    ref = (((resource or {}).get("securityContext") or {}).get("reference")) or ""
    key = ref_key(ref) if isinstance(ref, str) else ""
    return {key.split("/", 1)[1]} if key.startswith("Patient/") else set()


@dataclass
class PolicyFacts:
    """One caller's view of the facts, cached for the life of its request or job."""

    repo: Repository
    mpi: Mpi
    clock: Callable[[], int]
    _managed: dict[str, str | None] = field(default_factory=dict)
    _person_of: dict[str, str | None] = field(default_factory=dict)
    _live: dict[str, tuple[str, ...]] = field(default_factory=dict)
    _sql: SqlRepository = field(init=False)

    def __post_init__(self) -> None:
        self._sql = sql_repository(self.repo)

    # ------------------------------------------------------------ outside a write
    def managing_org(self, patient_id: str) -> str | None:
        """Organization id managing a source Patient (None: golden, unknown, or unmanaged)."""
        if patient_id not in self._managed:
            rows = self._sql.query(
                "SELECT x.target_id FROM resource p JOIN idx_reference x ON x.res_pk = p.pk AND x.param_id = ? "
                "WHERE p.type = 'Patient' AND p.fhir_id = ? AND p.deleted = 0 AND x.target_type = 'Organization'",
                (self._sql.param_ids[("Patient", "organization")], patient_id))
            self._managed[patient_id] = str(rows[0][0]) if rows else None
        return self._managed[patient_id]

    def know_owner(self, patient_id: str, org: str | None) -> None:
        """What a write in this request made the owner (the cache follows it)."""
        self._managed[patient_id] = org

    def forget_owner(self, patient_id: str) -> None:
        self._managed.pop(patient_id, None)

    def person_of(self, patient_id: str) -> str | None:
        if patient_id.startswith(PERSON_PREFIX):
            return patient_id
        if patient_id not in self._person_of:
            self._person_of[patient_id] = self.mpi.person_of(patient_id)
        return self._person_of[patient_id]

    def persons_of(self, patient_ids: Iterable[str]) -> dict[str, str | None]:
        """:meth:`person_of` for many patients: one query for those not asked before."""
        ids = set(patient_ids)
        missing = [p for p in ids if p not in self._person_of and not p.startswith(PERSON_PREFIX)]
        if missing:
            found = self.mpi.persons_of(missing)
            for p in missing:
                self._person_of[p] = found.get(p)
        return {p: self.person_of(p) for p in ids}

    def patients_of(self, person_id: str) -> list[str]:
        """The golden person and every linked source Patient."""
        return self.mpi.patient_ids(person_id)

    def compartments(self, pks: Sequence[int]) -> dict[int, set[str]]:
        """The patients whose compartments hold each stored row."""
        out: dict[int, set[str]] = {pk: set() for pk in pks}
        for i in range(0, len(pks), 500):
            chunk = list(pks[i:i + 500])
            for pk, pid in self._sql.query(
                    "SELECT res_pk, patient_id FROM compartment WHERE res_pk IN ("  # noqa: S608 (placeholders only)
                    + ",".join("?" * len(chunk)) + ")",
                    chunk):
                out[int(pk)].add(str(pid))
        return out

    def live_delegations(self, account_id: str) -> set[str]:
        """The persons a delegate account acts for now (ended or expired ones left out)."""
        if account_id not in self._live:
            rows = self._sql.query("SELECT person_id FROM account_person WHERE account_id = ? "
                                   "AND (expires IS NULL OR expires > ?)", (account_id, self.clock()))
            self._live[account_id] = tuple(sorted({str(r[0]) for r in rows}))
        return set(self._live[account_id])

    def basis_records(self, patients: list[str]) -> list[Stored]:
        """A person's consents, encounters and referrals (the basis is judged from them)."""
        return self.repo.everything(patients, types=BASIS_TYPES, since=None, after_pk=0, count=5000)[0]

    def fetch_patients(self, ids: list[str]) -> list[Stored]:
        return self.repo.fetch([("Patient", p) for p in ids])

    # ------------------------------------------------------------ inside a write
    def managed_in(self, w: Writer, patient_id: str) -> str | None:
        """Who manages a registration, inside a write: the stored owner of a live
        one; else the pending owner of one this transaction creates."""
        row = _sql(w).execute(
            "SELECT p.pk, x.target_id FROM resource p LEFT JOIN idx_reference x ON x.res_pk = p.pk "
            "AND x.param_id = ? AND x.target_type = 'Organization' "
            "WHERE p.type = 'Patient' AND p.fhir_id = ? AND p.deleted = 0",
            (self._sql.param_ids[("Patient", "organization")], patient_id)).fetchone()
        if row is not None:
            return str(row[1]) if row[1] is not None else None
        return w.ctx.pending_owners.get(patient_id)

    def compartments_in(self, w: Writer, pks: Sequence[int]) -> dict[int, set[str]]:
        """:meth:`compartments`, inside a write: rows the open transaction wrote count."""
        out: dict[int, set[str]] = {pk: set() for pk in pks}
        for i in range(0, len(pks), 500):
            chunk = list(pks[i:i + 500])
            for pk, pid in _sql(w).execute(
                    "SELECT res_pk, patient_id FROM compartment WHERE res_pk IN ("  # noqa: S608 (placeholders only)
                    + ",".join("?" * len(chunk)) + ")",
                    chunk).fetchall():
                out[int(pk)].add(str(pid))
        return out

    def last_live(self, w: Writer, current: Stored) -> dict[str, Any] | None:
        """The body of ``current``, or if it is deleted, of its last version before."""
        if not current.deleted:
            return body_of(current)
        row = _sql(w).execute("SELECT body FROM resource_version WHERE res_pk = ? AND deleted = 0 AND body IS NOT NULL "
                        "ORDER BY version DESC LIMIT 1", (current.pk,)).fetchone()
        if row is None:
            return None
        body: dict[str, Any] = orjson.loads(self.repo.codec.decode(bytes(row[0])))
        return body

    def stored_patients(self, w: Writer, current: Stored | None) -> set[str]:
        """The patients a stored record belongs to; a deleted record's are those of
        its last version (a write re-creating it must be theirs)."""
        if current is None:
            return set()
        if current.deleted:
            body = self.last_live(w, current)
            if body is None:
                return set()
            if current.type == "Binary":
                return security_context(body)
            return compartment_of(self.repo.indexer, current.type, body)
        return {str(r[0]) for r in _sql(w).execute("SELECT patient_id FROM compartment WHERE res_pk = ?",
                                             (current.pk,)).fetchall()}

    def existing_patients(self, w: Writer, ids: list[str]) -> set[str]:
        return self.repo.existing_ids("Patient", ids, _sql(w))
