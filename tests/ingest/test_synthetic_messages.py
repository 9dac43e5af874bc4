"""HL7 v2 messages built from the synthetic region (its institutions, its
residents' registrations with their noise), in UTF-8 and GB 18030, through
the ingestion path: every registration lands under its institution's MRN and
the MPI links them without ever joining two residents."""

from __future__ import annotations

import itertools
from collections import defaultdict
from pathlib import Path

import orjson
import pytest
from fhirapi import NOT_GOLDEN
from hl7build import adt_from_patient

from hutong.fhir import search as fsearch
from hutong.fhir.assembly import open_repository
from hutong.fhir.service import FhirService
from hutong.ingest.bulk import import_ndjson
from hutong.ingest.pipeline import Ingestor
from hutong.security.guard import as_operator
from hutong.synth import SynthConfig, generate
from hutong.systems import MRN_PREFIX


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synmsg") / "r"
    generate(out, SynthConfig(residents=120, institutions=8, seed=11, clinical=False, hard_negative_rate=0.05))
    return out


def test_registrations_from_the_region_link_like_the_truth(region: Path, tmp_path: Path) -> None:
    repo = open_repository(f"sqlite:///{tmp_path}/syn.db")
    assert import_ndjson(as_operator(repo), region / "Organization.ndjson", workers=1).errors == []
    ing = Ingestor(FhirService(as_operator(repo)))
    truth: dict[str, str] = {}
    for line in (region / "ground_truth.ndjson").read_bytes().splitlines():
        g = orjson.loads(line)
        truth[g["patient"]] = g["resident"]
    patients = [orjson.loads(x) for x in (region / "Patient.ndjson").read_bytes().splitlines()]
    mrn_of: dict[str, tuple[str, str]] = {}
    for n, p in enumerate(patients):
        charset = "GB 18030-2000" if n % 2 else "UNICODE UTF-8"
        ack = ing.hl7(adt_from_patient(p, n, charset=charset)).decode("gb18030" if n % 2 else "utf-8")
        assert "MSA|AA|" in ack, ack
        mrn = next(i for i in p["identifier"] if i["system"].startswith(MRN_PREFIX))
        mrn_of[p["id"]] = (mrn["system"], mrn["value"])
    # each registration is one stored source patient, found by its MRN, with its name intact
    stored: dict[str, str] = {}
    for pid_, (system, value) in mrn_of.items():
        # Through the search engine: identifiers are blind-indexed (hutong.security.blindindex).
        q = fsearch.parse("Patient", [("identifier", f"{system}|{value}"), NOT_GOLDEN], base_url="", strict=True)
        rows = repo.search(q.query).matches
        assert len(rows) == 1, (system, value)
        stored[pid_] = rows[0].id
    person = {p: q for p, q in repo.query("SELECT patient_id, person_id FROM mpi_source", ())}
    by_person: dict[str, set[str]] = defaultdict(set)
    by_resident: dict[str, set[str]] = defaultdict(set)
    for synth_id, store_id in stored.items():
        by_person[person[store_id]].add(synth_id)
        by_resident[truth[synth_id]].add(synth_id)
    # never two residents in one person (precision 1), most registrations of a resident joined
    for members in by_person.values():
        assert len({truth[m] for m in members}) == 1
    true_pairs = sum(len(list(itertools.combinations(m, 2))) for m in by_resident.values())
    linked_pairs = sum(len(list(itertools.combinations(m, 2))) for m in by_person.values())
    assert true_pairs and linked_pairs / true_pairs >= 0.9
    repo.db.close()
