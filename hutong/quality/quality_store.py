"""Store reads of the quality package (its one data-access module; issue 13, item 1).

Aggregates only: the commission may not read records (hutong.security.policy:
"Commission staff, auditors and operators read the directory, not records"),
so nothing here returns a resource body or a resident identifier.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from hutong.ingest import inbox
from hutong.store.repository import Repository
from hutong.store.sql import sql_repository

RecordCounts = dict[str, tuple[int, int, int | None]]  # Organization id -> (patients, records, last stored ms)


def record_counts(repo: Repository) -> RecordCounts:
    """Organization id -> (source patients, records, last stored epoch ms).

    Records are the resources in the compartments of the Patients an
    institution manages (Patient.managingOrganization: the policy's own rule
    of whose record is whose).  It scans the compartment index: fine for a
    region's dashboard refresh, and a candidate for a rollup table (like
    ``ingest_daily``) at full regional scale.
    """
    param = sql_repository(repo).param_ids[("Patient", "organization")]
    out: RecordCounts = {}
    for org, n in sql_repository(repo).query(
            "SELECT x.target_id, COUNT(*) FROM resource p JOIN idx_reference x ON x.res_pk = p.pk "
            "AND x.param_id = ? WHERE p.type = 'Patient' AND p.deleted = 0 AND x.target_type = 'Organization' "
            "GROUP BY x.target_id", (param,)):
        out[str(org)] = (int(n), 0, None)
    for org, n, last in sql_repository(repo).query(
            "SELECT x.target_id, COUNT(DISTINCT r.pk), MAX(r.last_updated) FROM resource p "
            "JOIN idx_reference x ON x.res_pk = p.pk AND x.param_id = ? AND x.target_type = 'Organization' "
            "JOIN compartment c ON c.patient_id = p.fhir_id JOIN resource r ON r.pk = c.res_pk AND r.deleted = 0 "
            "WHERE p.type = 'Patient' AND p.deleted = 0 GROUP BY x.target_id", (param,)):
        patients = out.get(str(org), (0, 0, None))[0]
        out[str(org)] = (patients, int(n), int(last) if last is not None else None)
    return out


def timeliness(repo: Repository, *, start: date, end: date) -> dict[str, Any]:
    """Daily volumes, delay histograms and the last message per sender and
    channel: the ingestion inbox's rollup, read by the module that owns it
    (hutong.ingest.inbox, whose SQL stays there)."""
    return inbox.timeliness(repo, start=start, end=end)


def note_counts(repo: Repository, *, start: date, end: date) -> dict[str, dict[str, int]]:
    """Per institution: stored messages with each warning code in the period (the
    inbox's notes, read by the module that owns them)."""
    return inbox.note_counts(repo, start=start, end=end)
