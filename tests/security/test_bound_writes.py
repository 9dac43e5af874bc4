"""Every write acts as an explicit principal (issue 13, item 3; DESIGN.md trust model).

The caller's Access travels with the transaction (``repo.acting_as(access)``,
hutong.store.sql.WriteContext), never in ambient state: a resource write
with nobody bound is refused (HT-0350) and nothing is stored, on every write
path (REST, bundles, direct transactions, bulk import); callers bound to
different principals writing at the same moment each get their own rules.
Through the real repository (guard, labeller and MPI installed), SQLite and
PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest

from hutong.errors import Forbidden
from hutong.fhir.assembly import open_repository
from hutong.fhir.service import FhirService
from hutong.ingest.bulk import import_ndjson
from hutong.security import guard
from hutong.security.guard import as_operator, as_principal
from hutong.security.principal import LOCAL_OPERATOR, Principal, Role
from hutong.store.sql import SqlRepository
from hutong.systems import ORGANIZATION

PATIENT = {"resourceType": "Patient", "name": [{"family": "王", "given": ["小红"]}], "gender": "female",
           "birthDate": "1949-12-31"}


@pytest.fixture
def repo(db_url: str) -> Iterator[SqlRepository]:
    r = open_repository(db_url)
    yield r
    r.db.close()


def _count(repo: SqlRepository, type: str) -> int:
    return int(repo.query("SELECT COUNT(*) FROM resource WHERE type = ?", (type,))[0][0])


def _create(svc: FhirService, res: dict[str, object]) -> str:
    r = svc.create(str(res["resourceType"]), orjson.dumps(res), {})
    assert r.status == 201
    return str(orjson.loads(r.body or b"{}")["id"])


def _institution(repo: SqlRepository, org_id: str, code: str) -> Principal:
    return Principal(account_id=f"his-{code}", role=Role.INSTITUTION, scopes=("system/*.cruds",),
                     organization=code, organization_id=org_id)


def test_a_write_for_nobody_is_refused_on_every_path(repo: SqlRepository, tmp_path: Path) -> None:
    svc = FhirService(repo)  # no Access given, none bound
    assert svc.access is None
    with pytest.raises(Forbidden) as e:
        svc.create("Patient", orjson.dumps(PATIENT), {})
    assert e.value.code == "HT-0350" and e.value.status == 403
    with pytest.raises(Forbidden) as e:
        repo.transact(lambda w: w.insert("Patient", "p-direct", dict(PATIENT)))
    assert e.value.code == "HT-0350"
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": PATIENT, "request": {"method": "POST", "url": "Patient"}}]}
    from hutong.fhir.bundle import BundleProcessor

    with pytest.raises(Forbidden) as e:
        BundleProcessor(svc).process(orjson.dumps(bundle), {})
    assert e.value.code == "HT-0350"
    (tmp_path / "Patient.ndjson").write_text(json.dumps({**PATIENT, "id": "p-bulk"}) + "\n")
    with pytest.raises(Forbidden) as e:
        import_ndjson(repo, tmp_path, workers=1)
    assert e.value.code == "HT-0350"
    assert _count(repo, "Patient") == 0  # nothing written, not even a golden person


def test_the_operator_writes_as_an_explicit_principal(repo: SqlRepository, tmp_path: Path) -> None:
    bound = as_operator(repo)
    assert bound.actor is not None and bound.actor.principal is LOCAL_OPERATOR  # type: ignore[attr-defined]
    assert repo.actor is None  # binding makes a handle; the shared repository stays unbound
    svc = FhirService(bound)
    assert svc.access is bound.actor
    pid = _create(svc, PATIENT)
    assert svc.access is not None and f"Patient/{pid}" in svc.access.entities  # the trace names what was written
    (tmp_path / "Patient.ndjson").write_text(json.dumps({**PATIENT, "id": "p-bulk"}) + "\n")
    assert import_ndjson(bound, tmp_path, workers=1).loaded == 1
    assert _count(repo, "Patient") >= 2


def test_each_bound_handle_keeps_its_own_principal_under_concurrency(repo: SqlRepository) -> None:
    """Two institutions and the operator write at the same time through one
    repository (on SQLite in one group commit): each write is judged as its
    own caller, never as whoever happens to be acting on another thread."""
    op = FhirService(as_operator(repo))
    orgs = {}
    for code in ("12110000400000001A", "12110000400000002B"):
        orgs[code] = _create(op, {"resourceType": "Organization", "name": code,
                                  "identifier": [{"system": ORGANIZATION, "value": code}]})
    a, b = (FhirService(as_principal(repo, _institution(repo, orgs[c], c))) for c in orgs)
    pa = _create(a, {**PATIENT, "managingOrganization": {"reference": f"Organization/{orgs['12110000400000001A']}"}})

    def obs(svc: FhirService) -> str:
        body = {"resourceType": "Observation", "status": "final", "code": {"text": "glucose"},
                "subject": {"reference": f"Patient/{pa}"}}
        try:
            _create(svc, body)
            return "stored"
        except Forbidden as e:
            return e.code

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(obs, [a, b, op, b, a, op, b, a] * 4))
    assert results == ["stored", "HT-0102", "stored", "HT-0102", "stored", "stored", "HT-0102", "stored"] * 4
    assert _count(repo, "Observation") == 20


def test_no_ambient_access(repo: SqlRepository) -> None:
    """The write stages find the Access in the transaction's typed context; a
    transaction's context starts fresh (nothing of an earlier one leaks in)."""
    bound = as_operator(repo)
    seen = []

    def run(w: object) -> None:
        seen.append((guard.access_in(w), w.ctx.pending_owners.copy()))  # type: ignore[attr-defined]
        w.ctx.pending_owners["x"] = "o1"  # type: ignore[attr-defined]

    bound.transact(run)
    bound.transact(run)
    repo.transact(run)
    assert [s[0] is bound.actor for s in seen] == [True, True, False]
    assert [s[1] for s in seen] == [{}, {}, {}]
    assert seen[2][0] is None


def test_the_policy_has_no_ambient_state() -> None:
    """No context variable carries an Access (issue 13): hutong.security and the
    FHIR layer import no contextvars, and the old ambient entry points are gone."""
    import ast

    root = Path(guard.__file__).resolve().parents[1]
    for path in [*(root / "security").glob("*.py"), *(root / "fhir").glob("*.py")]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names} | {
            n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "contextvars" not in names, path
    assert not hasattr(guard, "acting") and not hasattr(guard, "current")
