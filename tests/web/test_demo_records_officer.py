"""``make demo`` signs in a hospital's 病案室 officer who answers correction requests (issue 16, item 8).

hutong.web.demo_accounts gives the demo hospital a post designated to answer
residents' correction requests (PractitionerRole.code correction-officer) and
an account on it, so /clinician/corrections can be tried at once; the demo's
other clinician (demo-doctor) is an ordinary one and does not answer them.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from hutong.fhir.assembly import open_repository
from hutong.ingest.bulk import import_ndjson
from hutong.platform import mpi_of
from hutong.security import corrections
from hutong.security.accounts import Accounts
from hutong.security.guard import as_operator
from hutong.security.settings import SecuritySettings
from hutong.synth import SynthConfig, generate
from hutong.web import demo_accounts


def test_the_demo_has_a_records_officer(tmp_path: Path) -> None:
    generate(tmp_path / "region", SynthConfig(residents=60, institutions=3, seed=20261207, years=1))
    repo = open_repository(f"sqlite:///{tmp_path}/demo.db")
    try:
        assert not import_ndjson(as_operator(repo), tmp_path / "region", workers=1).errors
        mpi_of(repo).backfill()
        out = demo_accounts.ensure(repo, tmp_path / "accounts.json")
        accounts = Accounts(repo, SecuritySettings())
        officer = accounts.get(out["records_officer"]["account_id"])
        doctor = accounts.get(out["clinician"]["account_id"])
        assert officer is not None and doctor is not None
        assert officer.organization_id == doctor.organization_id and officer.organization_id

        def post(account: object) -> dict[str, object] | None:
            s = repo.read("PractitionerRole", getattr(account, "practitioner_role_id", None) or "")
            return orjson.loads(s.body) if s is not None and s.body is not None else None

        org = officer.organization_id
        assert corrections.designated(post(officer), org, officer.practitioner_id)
        assert not corrections.designated(post(doctor), org, doctor.practitioner_id)
    finally:
        repo.db.close()
