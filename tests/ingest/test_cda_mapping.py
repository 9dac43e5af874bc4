"""WS/T 500 document -> transaction Bundle: header resources, idempotency, sender check
(hutong.ingest.cda.mapping), for all 53 types."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from cda_helpers import (
    INVALID,
    MINIMAL,
    REALISTIC,
    SENDER,
    make_fixtures,
    mapped,
    one,
    read,
    resources,
    validate_all,
)

from hutong.fhir.bundle import BundleProcessor
from hutong.fhir.service import FhirService
from hutong.ingest.cda.doctypes import DOCTYPES, DocType
from hutong.ingest.cda.mapping import CDA_CONTENT_TYPE, Sender, staff_system, to_bundle
from hutong.ingest.cda.parse import CdaError
from hutong.security.guard import as_operator
from hutong.store.sql import SqlRepository
from hutong.systems import AUTHOR, ID_CARD, WST500_DOCTYPE, document_system, mrn_system, visit_system

HEADER_TYPES = {"Patient", "Practitioner", "Encounter", "Binary", "DocumentReference"}
SOURCE = f"cda:{SENDER.code}#DOC-C0007-0001"


@pytest.mark.parametrize("t", DOCTYPES, ids=lambda t: t.code)
def test_every_type_maps_to_a_valid_transaction(t: DocType) -> None:
    data = (MINIMAL / f"{t.code}.xml").read_bytes()
    m = to_bundle(data, SENDER)
    assert m.doc_type is t
    assert m.document_id == f"DOC-{t.code}-0001"
    assert m.event_time == "2024-03-15T10:30:00+08:00"
    assert m.patient_identifier == {"system": mrn_system(SENDER.code), "value": "MZ20240001"}
    assert m.bundle["resourceType"] == "Bundle" and m.bundle["type"] == "transaction"
    validate_all(m)
    for e in m.bundle["entry"]:
        # every entry a conditional create, so that a resent document changes nothing
        assert e["request"]["method"] == "POST" and e["request"]["ifNoneExist"]
        assert e["request"]["url"] == e["resource"]["resourceType"]
        assert e["fullUrl"].startswith("urn:uuid:")
        assert e["resource"]["meta"]["source"] == f"cda:{SENDER.code}#DOC-{t.code}-0001"
    types = [e["resource"]["resourceType"] for e in m.bundle["entry"]]
    if not t.extracted:
        # header only: the other 48 types are stored as documents, nothing extracted
        assert set(types) <= HEADER_TYPES
        assert "Encounter" not in types  # no encompassingEncounter in the minimal documents
    docref = one(m, "DocumentReference")
    assert docref["type"]["coding"] == [{"system": WST500_DOCTYPE, "code": t.code, "display": t.title}]
    assert docref["category"][0]["coding"][0]["code"] == t.part
    binary = one(m, "Binary")
    assert base64.b64decode(binary["data"]) == data


def test_header_resources() -> None:
    data = (MINIMAL / "C0007.xml").read_bytes()
    m = to_bundle(data, SENDER)
    entries = {e["resource"]["resourceType"]: e for e in m.bundle["entry"]}
    patient = entries["Patient"]["resource"]
    assert entries["Patient"]["request"]["ifNoneExist"] == f"identifier={mrn_system(SENDER.code)}|MZ20240001"
    assert patient["name"] == [{"use": "official", "text": "李建国"}]
    assert patient["gender"] == "male" and patient["birthDate"] == "1985-03-12"
    assert {(i["system"], i["value"]) for i in patient["identifier"]} == {
        (mrn_system(SENDER.code), "MZ20240001"), (ID_CARD, make_fixtures.PATIENT_ID)}
    assert patient["managingOrganization"] == {"reference": "Organization/org-hutong-demo"}
    assert patient["extension"][0]["valueCoding"]["code"] == "1"

    practitioner = entries["Practitioner"]["resource"]
    assert entries["Practitioner"]["request"]["ifNoneExist"] == f"identifier={staff_system(SENDER.code)}|D0231"
    assert {"system": AUTHOR, "value": "D0231", "assigner": {"reference": "Organization/org-hutong-demo"}} \
        in practitioner["identifier"]
    assert practitioner["name"] == [{"text": "王芳"}]

    binary = entries["Binary"]
    assert binary["resource"]["contentType"] == CDA_CONTENT_TYPE
    assert base64.b64decode(binary["resource"]["data"]) == data  # the exact bytes received
    assert binary["resource"]["securityContext"] == {"reference": entries["Patient"]["fullUrl"]}
    assert binary["request"]["ifNoneExist"] == f"_source=cda:{SENDER.code}%23DOC-C0007-0001"

    doc = entries["DocumentReference"]
    d = doc["resource"]
    assert doc["request"]["ifNoneExist"] == f"identifier={document_system(SENDER.code)}|DOC-C0007-0001"
    assert d["status"] == "current"
    assert d["masterIdentifier"] == {"system": "urn:oid:2.16.156.10011.1.1", "value": "DOC-C0007-0001"}
    assert d["identifier"] == [{"system": document_system(SENDER.code), "value": "DOC-C0007-0001"}]
    assert d["subject"] == {"reference": entries["Patient"]["fullUrl"]}
    assert d["author"] == [{"reference": entries["Practitioner"]["fullUrl"], "display": "王芳"}]
    assert d["custodian"] == {"reference": "Organization/org-hutong-demo"}
    assert d["date"] == "2024-03-15T10:30:00+08:00"
    assert d["category"][0]["coding"][0] == {"system": "https://fhir.hutong.dev/CodeSystem/ws445-part",
                                             "code": "04", "display": "检查检验记录"}
    att = d["content"][0]["attachment"]
    assert att["url"] == binary["fullUrl"] and att["contentType"] == CDA_CONTENT_TYPE
    assert att["language"] == "zh-CN" and att["title"] == "检验报告" and att["size"] == len(data)
    assert att["hash"] == base64.b64encode(hashlib.sha1(data).digest()).decode()  # noqa: S324
    assert d["securityLabel"][0]["coding"][0]["code"] == "N"
    assert "encounter" not in d.get("context", {})


def test_same_document_same_bundle() -> None:
    data = read(REALISTIC / "C0053_discharge_summary.xml")
    assert to_bundle(data, SENDER).bundle == to_bundle(data, SENDER).bundle
    other = to_bundle(data, Sender(SENDER.code, "org-other"))
    assert [e["fullUrl"] for e in other.bundle["entry"]] == [e["fullUrl"] for e in to_bundle(data, SENDER).bundle["entry"]]


def test_sender_must_be_the_custodian() -> None:
    with pytest.raises(CdaError) as e:
        to_bundle(read(INVALID / "other_custodian.xml"), SENDER)
    assert e.value.code == "cda-sender"
    assert "/ClinicalDocument/custodian/assignedCustodian/representedCustodianOrganization/id/@extension" in e.value.text
    with pytest.raises(CdaError) as e:
        to_bundle(read(MINIMAL / "C0001.xml"), Sender("12110105000000078X", "org"))
    assert e.value.code == "cda-sender"


@pytest.mark.parametrize(("name", "code"), [
    ("unknown_code.xml", "cda-type"), ("code_template_mismatch.xml", "cda-type"),
    ("missing_custodian.xml", "cda-header"), ("many_header_problems.xml", "cda-header"),
    ("malformed.xml", "cda-xml"), ("not_cda.xml", "cda-xml"),
    ("billion_laughs.xml", "cda-dtd"), ("xxe_file.xml", "cda-dtd"), ("xxe_parameter.xml", "cda-dtd"),
])
def test_invalid_documents(name: str, code: str) -> None:
    with pytest.raises(CdaError) as e:
        to_bundle(read(INVALID / name), SENDER)
    assert e.value.code == code


def test_id_card_when_there_is_no_mrn() -> None:
    data = (MINIMAL / "C0007.xml").read_bytes().replace(b'extension="MZ20240001"', b'extension=""')
    m = to_bundle(data, SENDER)
    assert m.patient_identifier == {"system": ID_CARD, "value": make_fixtures.PATIENT_ID}
    assert one(m, "Patient")["identifier"] == [{
        "use": "official", "type": {"text": "居民身份证", "coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "NI"}]},
        "system": ID_CARD, "value": make_fixtures.PATIENT_ID}]
    patient_entry = next(e for e in m.bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    assert patient_entry["request"]["ifNoneExist"] == f"identifier={ID_CARD}|{make_fixtures.PATIENT_ID}"


def test_lower_case_check_character_is_normalised() -> None:
    xml = (MINIMAL / "C0007.xml").read_bytes().decode()
    xml = xml.replace(make_fixtures.PATIENT_ID, "11010519491231002x")
    patient = one(to_bundle(xml.encode(), SENDER), "Patient")
    assert {"system": ID_CARD, "value": "11010519491231002X"} in [
        {"system": i["system"], "value": i["value"]} for i in patient["identifier"]]


def test_author_without_id_is_a_display_reference() -> None:
    data = (MINIMAL / "C0007.xml").read_bytes().replace(
        b'<id root="2.16.156.10011.1.7" extension="D0231"/>', b"")
    m = to_bundle(data, SENDER)
    assert resources(m, "Practitioner") == []
    assert one(m, "DocumentReference")["author"] == [{"display": "王芳"}]


def test_identifiers_with_search_syntax_are_escaped() -> None:
    data = (MINIMAL / "C0007.xml").read_bytes().replace(b"DOC-C0007-0001", b"A,B|C$D E&amp;F")
    m = to_bundle(data, SENDER)
    assert m.document_id == "A,B|C$D E&F"
    doc_entry = next(e for e in m.bundle["entry"] if e["resource"]["resourceType"] == "DocumentReference")
    assert doc_entry["request"]["ifNoneExist"] == (
        f"identifier={document_system(SENDER.code)}|A\\%2CB\\|C\\%24D%20E%26F")
    assert one(m, "DocumentReference")["meta"]["source"] == f"cda:{SENDER.code}#A%2CB%7CC%24D%20E%26F"
    validate_all(m)


def test_event_time_is_the_encounter_time_when_there_is_one() -> None:
    assert mapped("realistic/C0032_front_page.xml").event_time == "2024-03-13T21:30:00+08:00"
    assert mapped("realistic/C0002_outpatient_record.xml").event_time == "2024-03-10T09:55:12+08:00"


def test_encounter_from_encompassing_encounter() -> None:
    m = mapped("realistic/C0006_exam_report.xml")
    enc = one(m, "Encounter")
    entry = next(e for e in m.bundle["entry"] if e["resource"] is enc)
    assert entry["request"]["ifNoneExist"] == f"identifier={visit_system(SENDER.code)}|ZY0078812-2"
    assert enc["class"]["code"] == "IMP"  # 住院号 in patientRole; 检查报告 has no setting of its own
    assert enc["status"] == "unknown" and enc["period"] == {"start": "2024-03-15T09:30:00+08:00"}
    assert enc["location"] == [{"location": {"display": "呼吸与危重症医学科"}}]
    docref = one(m, "DocumentReference")
    assert docref["context"]["encounter"] == [{"reference": entry["fullUrl"]}]
    assert docref["context"]["practiceSetting"] == {"text": "呼吸与危重症医学科"}


# ---------------------------------------------------------------- through the real store

@pytest.fixture
def service(sqlite_url: str) -> Iterator[FhirService]:
    from hutong.fhir.assembly import open_repository

    repo: SqlRepository = open_repository(sqlite_url)
    yield FhirService(as_operator(repo))
    repo.db.close()


def _run(service: FhirService, bundle: dict[str, Any]) -> list[str]:
    r = BundleProcessor(service).process(orjson.dumps(bundle), {})
    assert r.status == 200, r.body
    body = orjson.loads(r.body)
    return [e["response"]["status"] for e in body["entry"]]


@pytest.mark.parametrize("name", sorted(p.name for p in REALISTIC.glob("*.xml")))
def test_resending_a_document_changes_nothing(service: FhirService, name: str) -> None:
    data = read(REALISTIC / name)
    first = _run(service, to_bundle(data, SENDER).bundle)
    assert all(s.startswith("201") for s in first), first
    second = _run(service, to_bundle(data, SENDER).bundle)
    assert all(s.startswith("200") for s in second), second


def test_an_awkward_document_id_is_matched_on_resend(service: FhirService) -> None:
    data = read(REALISTIC / "C0007_lab_report.xml").replace(b"JY20240315000123", b"JY,1|2$3 4&amp;5#6")
    assert all(s.startswith("201") for s in _run(service, to_bundle(data, SENDER).bundle))
    assert all(s.startswith("200") for s in _run(service, to_bundle(data, SENDER).bundle))


def test_the_stored_attachment_points_at_the_stored_binary(service: FhirService) -> None:
    r = BundleProcessor(service).process(orjson.dumps(mapped("minimal/C0001.xml").bundle), {})
    locations = [e["response"]["location"] for e in orjson.loads(r.body)["entry"]]
    binary = next(loc for loc in locations if loc.startswith("Binary/")).split("/_history")[0]
    doc_id = next(loc for loc in locations if loc.startswith("DocumentReference/")).split("/")[1]
    stored = orjson.loads(service.read("DocumentReference", doc_id, {}).body)
    assert stored["content"][0]["attachment"]["url"] == binary
