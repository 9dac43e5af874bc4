"""Checks of hutong.fhir.searchparam_defs against the R4B model and real data.

The model walk resolves each path step through ``model_fields`` of the
``fhir.resources.R4B`` classes.  Field annotations look like
``typing.Optional[typing.List[abc.AddressType]]`` or ``abc.ReferenceType | None``
or ``Optional[Annotated[datetime.date, Date()]]``: Optional/Union, List and
Annotated are unwrapped, and a complex type is one of fhir_core's ``abc.XxxType``
placeholders whose ``get_model_klass()`` returns the element or backbone model
class; anything else is a primitive (a leaf).
"""

from __future__ import annotations

import json
import types
import typing
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from hutong.fhir.searchparam_defs import DEFINED_TYPES, DEFINITIONS, PATIENT_COMPARTMENT
from hutong.fhir.searchparams import SearchParam, date_range, extract, normalize_string

PARAM_TYPES = {"token", "string", "date", "reference", "quantity", "number", "uri"}
BY_KEY: dict[tuple[str, str], SearchParam] = {(d.resource, d.name): d for d in DEFINITIONS}
SYNTHEA = Path("/work/shared/data/synthea-10")


def param(resource: str, name: str) -> SearchParam:
    return BY_KEY[(resource, name)]


# ---------------------------------------------------------------- model walk


def _unwrap(annotation: Any) -> Any:
    t = annotation
    while True:
        origin = typing.get_origin(t)
        if origin is typing.Annotated:
            t = typing.get_args(t)[0]
        elif origin is typing.Union or origin is types.UnionType:
            t = next(a for a in typing.get_args(t) if a is not type(None))
        elif origin is list:
            t = typing.get_args(t)[0]
        else:
            return t


def _element_class(annotation: Any) -> type | None:
    """The model class of a complex-typed field, or None for a primitive."""
    t = _unwrap(annotation)
    get = getattr(t, "get_model_klass", None)
    return get() if get is not None else None


@cache
def _fields(cls: type) -> dict[str, Any]:
    """JSON name -> pydantic FieldInfo (aliases are the JSON names)."""
    return {(f.alias or n): f for n, f in cls.model_fields.items()}  # type: ignore[attr-defined]


def _walk(resource: str, path: str) -> list[tuple[str, Any, type | None]]:
    """Resolve every step; returns (json name, FieldInfo, element class) per step."""
    cls: type | None = get_fhir_model_class(resource)
    out = []
    for step in path.split("."):
        name, _, flt = step.partition("[")
        assert cls is not None, f"{resource}.{path}: {name!r} follows a primitive"
        fields = _fields(cls)
        assert name in fields, f"{resource}.{path}: {cls.__name__} has no element {name!r}"
        field = fields[name]
        elem = _element_class(field.annotation)
        if flt:
            key = flt.split("=")[0]
            assert elem is not None and key in _fields(elem), f"{resource}.{path}: bad filter key {key!r}"
        out.append((name, field, elem))
        cls = elem
    return out


def test_definitions_cover_the_served_types() -> None:
    counts = Counter(d.resource for d in DEFINITIONS)
    assert set(counts) == set(DEFINED_TYPES) - {"Binary"}
    for rt in DEFINED_TYPES:
        get_fhir_model_class(rt)  # every served type exists in the structural model


@pytest.mark.parametrize("sp", DEFINITIONS, ids=lambda d: f"{d.resource}.{d.name}")
def test_paths_exist_in_r4b_model(sp: SearchParam) -> None:
    assert sp.paths
    for path in sp.paths:
        _walk(sp.resource, path)


def test_walk_rejects_typos() -> None:
    with pytest.raises(AssertionError):
        _walk("Observation", "valueQuantty")
    with pytest.raises(AssertionError):
        _walk("Patient", "telecom[sytem=phone]")
    with pytest.raises(AssertionError):
        _walk("Patient", "gender.code")  # gender is a primitive
    assert [s[0] for s in _walk("Observation", "component.valueCodeableConcept.text")] == [
        "component",
        "valueCodeableConcept",
        "text",
    ]


# ---------------------------------------------------------------- consistency


def test_names_unique_and_types_valid() -> None:
    keys = [(d.resource, d.name) for d in DEFINITIONS]
    dupes = [k for k, n in Counter(keys).items() if n > 1]
    assert not dupes
    for d in DEFINITIONS:
        assert d.type in PARAM_TYPES, d
        assert not d.name.startswith("_"), d
        assert len(set(d.paths)) == len(d.paths), d
        if d.type != "reference":
            assert d.targets == (), d


def test_expected_parameters_present() -> None:
    expected = {
        "Patient": "identifier name family given birthdate gender phone email telecom address address-city "
        "address-state address-postalcode address-country address-use active general-practitioner link "
        "organization language death-date phonetic deceased",
        "Observation": "code category subject patient encounter date status value-quantity value-concept "
        "value-string value-date performer based-on derived-from has-member part-of specimen device method "
        "data-absent-reason identifier combo-code component-code focus combo-value-quantity",
        "Condition": "code patient subject encounter onset-date abatement-date clinical-status "
        "verification-status category asserter recorded-date",
        "Encounter": "patient subject date class type status participant practitioner location "
        "service-provider reason-code diagnosis identifier",
        "MedicationRequest": "code medication patient subject status intent authoredon requester encounter date",
        "AuditEvent": "patient agent entity date type subtype action outcome",
    }
    for rt, names in expected.items():
        have = {d.name for d in DEFINITIONS if d.resource == rt}
        assert set(names.split()) <= have, (rt, set(names.split()) - have)
    absent = {("Observation", "code-value-quantity"), ("Location", "near")}
    assert not absent & set(BY_KEY)


def test_reference_targets_are_sensible() -> None:
    for d in DEFINITIONS:
        if d.type != "reference":
            continue
        for t in d.targets:
            get_fhir_model_class(t)  # a real resource type
        if d.targets:
            # the spec's targets must overlap what the element may reference
            for path in d.paths:
                _, field, elem = _walk(d.resource, path)[-1]
                extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
                allowed = extra.get("enum_reference_types")
                if elem is not None and elem.__name__ == "Reference" and allowed and "Resource" not in allowed:
                    assert set(d.targets) & set(allowed), (d.resource, d.name, path, allowed)
        # every reference parameter reaches a Reference (or a canonical / uri string)
        leaves = [_walk(d.resource, p)[-1][2] for p in d.paths]
        assert any(e is None or e.__name__ == "Reference" for e in leaves), d
    # resolve() is Patient -> Patient only
    for rt in ("Observation", "Encounter", "Condition", "Procedure", "DiagnosticReport", "ServiceRequest",
               "DocumentReference", "ImagingStudy", "MedicationRequest", "AuditEvent"):
        assert param(rt, "patient").targets == ("Patient",)
    assert param("Observation", "subject").targets == ("Group", "Device", "Patient", "Location")
    assert param("Observation", "focus").targets == ()  # Reference(Any)


def test_choice_types_spelled_out() -> None:
    assert param("Observation", "date").paths == (
        "effectiveDateTime", "effectiveInstant", "effectivePeriod", "effectiveTiming")
    assert param("Condition", "onset-date").paths == ("onsetDateTime", "onsetPeriod")
    assert param("Observation", "value-quantity").paths == ("valueQuantity", "valueSampledData")
    assert param("Observation", "value-string").paths == ("valueString", "valueCodeableConcept.text")
    assert param("MedicationRequest", "code").paths == ("medicationCodeableConcept",)
    assert param("MedicationRequest", "medication").paths == ("medicationReference",)
    assert param("Patient", "phone").paths == ("telecom[system=phone]",)


def test_patient_compartment_params_exist() -> None:
    assert PATIENT_COMPARTMENT["Patient"] == ("link",)
    assert PATIENT_COMPARTMENT["Observation"] == ("subject", "performer")
    assert PATIENT_COMPARTMENT["Encounter"] == ("patient",)
    for rt, names in PATIENT_COMPARTMENT.items():
        assert rt in DEFINED_TYPES
        for n in names:
            d = BY_KEY.get((rt, n))
            assert d is not None, (rt, n)
            assert d.type == "reference", (rt, n)
            assert not d.targets or "Patient" in d.targets, (rt, n)


# ---------------------------------------------------------------- real data


@cache
def _synthea() -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for f in sorted(SYNTHEA.glob("*.ndjson")):
        if f.name == "log.ndjson":
            continue
        with f.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    r = json.loads(line)
                    out.setdefault(r["resourceType"], []).append(r)
    return out


needs_data = pytest.mark.skipif(not SYNTHEA.is_dir(), reason="shared Synthea sample not present")


def _by_id(rt: str, rid: str) -> dict[str, Any]:
    return next(r for r in _synthea()[rt] if r["id"] == rid)


def _ms(ts: str) -> int:
    return int(datetime.fromisoformat(ts).timestamp() * 1000)


def _all(rt: str) -> Iterator[SearchParam]:
    return (d for d in DEFINITIONS if d.resource == rt)


@needs_data
def test_every_param_extracts_on_real_data() -> None:
    data = _synthea()
    assert {"Patient", "Encounter", "Condition", "MedicationRequest", "Procedure"} <= set(data)
    hits: Counter[tuple[str, str]] = Counter()
    for rt, resources in data.items():
        for r in resources:
            for d in _all(rt):
                rows = extract(d, r)
                if rows:
                    hits[(rt, d.name)] += 1
    # parameters the Synthea export populates on every resource of its type
    for rt, names in {
        "Patient": "identifier name family given birthdate gender address address-city telecom phone",
        "Encounter": "patient subject date class type status identifier participant-type",
        "Condition": "patient subject code clinical-status category encounter onset-date recorded-date",
        "MedicationRequest": "patient subject code status intent authoredon encounter category",
        "Procedure": "patient subject code status date encounter",
        "Immunization": "patient vaccine-code date status",
        "DocumentReference": "patient subject type status date category contenttype",
        "Organization": "identifier name active type address",
        "Practitioner": "identifier name family given active address email",
        "Device": "patient type status device-name udi-carrier udi-di",
        "AllergyIntolerance": "patient code clinical-status verification-status type date criticality",
        "Location": "identifier status",  # one is "Patient's Home": no name, no address
        "PractitionerRole": "role specialty telecom",
    }.items():
        for n in names.split():
            assert hits[(rt, n)] == len(data[rt]), (rt, n, hits[(rt, n)], len(data[rt]))


@needs_data
@pytest.mark.parametrize(
    ("rt", "element"),
    [("Encounter", "subject"), ("Condition", "subject"), ("MedicationRequest", "subject"),
     ("Procedure", "subject"), ("Immunization", "patient"), ("AllergyIntolerance", "patient"),
     ("DocumentReference", "subject"), ("Device", "patient")],
)
def test_patient_reference_rows(rt: str, element: str) -> None:
    resources = _synthea()[rt]
    patient_ids = {p["id"] for p in _synthea()["Patient"]}
    assert resources
    for r in resources:
        ref = r[element]["reference"]
        rows = extract(param(rt, "patient"), r)
        assert rows == [("Patient", ref.split("/")[1], ref)], (rt, r["id"])
        assert rows[0][1] in patient_ids


@needs_data
def test_patient_rows() -> None:
    for p in _synthea()["Patient"]:
        ident = extract(param("Patient", "identifier"), p)
        assert ("https://github.com/synthetichealth/synthea", p["id"], None) in ident
        names = extract(param("Patient", "name"), p)
        assert names and all(norm == normalize_string(exact) for norm, exact in names)
        fams = {n for n, _ in extract(param("Patient", "family"), p)}
        assert {normalize_string(n["family"]) for n in p["name"]} == fams
        assert extract(param("Patient", "birthdate"), p) == [date_range(p["birthDate"])]


@needs_data
def test_encounter_date_is_period_range() -> None:
    for e in _synthea()["Encounter"]:
        rows = extract(param("Encounter", "date"), e)
        assert len(rows) == 1
        lo, hi = rows[0]
        assert lo == _ms(e["period"]["start"]) and hi == _ms(e["period"]["end"]) + 1000


@needs_data
def test_spot_checks() -> None:
    p = _by_id("Patient", "129c6ac7-8d06-89de-ad63-0204a93e76c3")
    assert extract(param("Patient", "gender"), p) == [(None, "female", None)]
    assert extract(param("Patient", "phone"), p) == [("phone", "555-810-7203", None)]
    assert extract(param("Patient", "email"), p) == []
    assert ("http://hl7.org/fhir/sid/us-ssn", "999-94-5397", "Social Security Number") in extract(
        param("Patient", "identifier"), p)
    assert {n for n, _ in extract(param("Patient", "family"), p)} == {"medhurst46", "cummerata161"}
    assert ("sumiko254", "Sumiko254") in extract(param("Patient", "given"), p)
    assert extract(param("Patient", "death-date"), p) == [date_range("1989-05-09T20:35:22-04:00")]

    e = _by_id("Encounter", "00c7f717-4030-5582-2ed8-888ad2bc878e")
    assert extract(param("Encounter", "class"), e) == [
        ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "AMB", None)]
    assert extract(param("Encounter", "type"), e) == [
        ("http://snomed.info/sct", "185347001", "Encounter for problem (procedure)")]
    assert ("http://snomed.info/sct", "46177005", "End-stage renal disease (disorder)") in extract(
        param("Encounter", "reason-code"), e)
    assert extract(param("Encounter", "date"), e) == [
        (_ms("1989-10-04T06:25:16+00:00"), _ms("1989-10-04T10:20:17+00:00"))]
    # a conditional reference is kept as written, with no type/id to index
    assert extract(param("Encounter", "practitioner"), e) == [
        (None, None, "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999974493")]

    m = _by_id("MedicationRequest", "002eb5b8-2964-effd-3b09-f132017dae04")
    assert extract(param("MedicationRequest", "code"), m) == [
        ("http://www.nlm.nih.gov/research/umls/rxnorm", "314076", "lisinopril 10 MG Oral Tablet")]
    assert extract(param("MedicationRequest", "medication"), m) == []  # a CodeableConcept, not a Reference
    assert extract(param("MedicationRequest", "status"), m) == [(None, "stopped", None)]
    assert extract(param("MedicationRequest", "encounter"), m) == [
        ("Encounter", "86d672c8-3119-04be-9d14-73c7cfb4a6e6", "Encounter/86d672c8-3119-04be-9d14-73c7cfb4a6e6")]

    c = _by_id("Condition", "0023b3a7-2ded-840c-ee5b-6b123fdcfb0b")
    assert extract(param("Condition", "code"), c) == [("http://snomed.info/sct", "91302008", "Sepsis (disorder)")]
    assert extract(param("Condition", "onset-date"), c) == [date_range("1976-01-19T22:58:16-05:00")]
    assert extract(param("Condition", "category"), c) == [
        ("http://terminology.hl7.org/CodeSystem/condition-category", "encounter-diagnosis", "Encounter Diagnosis")]

    pr = _by_id("Procedure", "0007498e-ddd1-0048-bc43-bf238e4b3f01")
    assert extract(param("Procedure", "date"), pr) == [
        (_ms("2022-06-22T16:31:08+00:00"), _ms("2022-06-22T16:46:09+00:00"))]

    d = _by_id("Device", "031165b5-6fd0-d716-ccc3-bbaba3ab379a")
    assert {x for _, x in extract(param("Device", "device-name"), d)} == {"Blood glucose meter (physical object)"}
    assert extract(param("Device", "udi-di"), d) == [("96702913868313", "96702913868313")]

    i = _by_id("Immunization", "04912b69-f775-5a9d-3e8b-9d06c28165ad")
    assert extract(param("Immunization", "vaccine-code"), i) == [
        ("http://hl7.org/fhir/sid/cvx", "62", "HPV, quadrivalent")]

    a = _by_id("AllergyIntolerance", "1b2ce4a9-9773-f40f-6692-cb4d1283a9ca")
    assert extract(param("AllergyIntolerance", "category"), a) == [(None, "medication", None)]
    assert extract(param("AllergyIntolerance", "criticality"), a) == [(None, "low", None)]

    prac = _by_id("Practitioner", "0965e26a-8bc3-395f-b7b0-4620fb6e778c")
    assert extract(param("Practitioner", "email"), prac) == [("email", "Irvin970.Emard19@example.com", None)]
    assert extract(param("Practitioner", "phone"), prac) == []

    loc = _by_id("Location", "0b9875ba-9310-313d-93d4-bf552585d527")
    assert extract(param("Location", "address-city"), loc) == [("burlington", "BURLINGTON")]
    # Location.managingOrganization is a logical (identifier-only) reference: nothing to index
    assert extract(param("Location", "organization"), loc) == []


# ---------------------------------------------------------------- synthetic


def test_telecom_filters() -> None:
    p = {"resourceType": "Patient", "telecom": [
        {"system": "phone", "value": "+86 10 1234 5678", "use": "mobile"},
        {"system": "email", "value": "li.hua@example.cn"},
        {"system": "fax", "value": "010-8888"},
    ]}
    assert extract(param("Patient", "phone"), p) == [("phone", "+86 10 1234 5678", None)]
    assert extract(param("Patient", "email"), p) == [("email", "li.hua@example.cn", None)]
    assert len(extract(param("Patient", "telecom"), p)) == 3
    role = {"resourceType": "PractitionerRole", "telecom": [{"system": "email", "value": "x@y.cn"}]}
    assert extract(param("PractitionerRole", "email"), role) == [("email", "x@y.cn", None)]
    assert extract(param("PractitionerRole", "phone"), role) == []


def test_observation_choice_types() -> None:
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "subject": {"reference": "Group/g1"},
        "effectivePeriod": {"start": "2024-03-01T08:00:00+08:00"},
        "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "373066001"}],
                                 "text": "Yes"},
        "component": [
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
             "valueQuantity": {"value": 120, "unit": "mmHg", "system": "http://unitsofmeasure.org",
                               "code": "mm[Hg]"}},
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
             "valueQuantity": {"value": 80.5, "unit": "mmHg"}},
        ],
    }
    lo, hi = extract(param("Observation", "date"), obs)[0]
    assert lo == _ms("2024-03-01T00:00:00+00:00") and hi == 2**62  # open-ended period
    assert extract(param("Observation", "value-concept"), obs) == [("http://snomed.info/sct", "373066001", "Yes")]
    assert extract(param("Observation", "value-string"), obs) == [("yes", "Yes")]
    assert extract(param("Observation", "value-quantity"), obs) == []
    assert extract(param("Observation", "component-value-quantity"), obs) == [
        (120.0, "http://unitsofmeasure.org", "mm[Hg]"), (80.5, None, "mmHg")]
    assert extract(param("Observation", "combo-value-quantity"), obs) == extract(
        param("Observation", "component-value-quantity"), obs)
    assert [r[1] for r in extract(param("Observation", "combo-code"), obs)] == ["85354-9", "8480-6", "8462-4"]
    # a Group subject is a subject but not a patient
    assert extract(param("Observation", "patient"), obs) == []
    assert extract(param("Observation", "subject"), obs) == [("Group", "g1", "Group/g1")]

    obs2 = {"resourceType": "Observation", "effectiveDateTime": "2024-03-01",
            "valueQuantity": {"value": 37.2, "system": "http://unitsofmeasure.org", "code": "Cel"},
            "subject": {"reference": "Patient/p1"}}
    assert extract(param("Observation", "date"), obs2) == [date_range("2024-03-01")]
    assert extract(param("Observation", "value-quantity"), obs2) == [(37.2, "http://unitsofmeasure.org", "Cel")]
    assert extract(param("Observation", "patient"), obs2) == [("Patient", "p1", "Patient/p1")]


def test_other_choice_types_and_filters() -> None:
    cond = {"resourceType": "Condition", "onsetPeriod": {"start": "2020-01", "end": "2020-02"},
            "abatementString": "in remission", "onsetAge": {"value": 40, "unit": "a"}}
    assert extract(param("Condition", "onset-date"), cond) == [
        (date_range("2020-01")[0], date_range("2020-02")[1])]  # type: ignore[index]
    assert extract(param("Condition", "abatement-string"), cond) == [("in remission", "in remission")]
    assert extract(param("Condition", "onset-age"), cond) == [(40.0, None, "a")]
    proc = {"resourceType": "Procedure", "performedString": "last winter"}
    assert extract(param("Procedure", "date"), proc) == []
    imm = {"resourceType": "Immunization", "occurrenceDateTime": "2021-06-01T10:00:00Z",
           "patient": {"reference": "Patient/p9"}}
    assert extract(param("Immunization", "date"), imm) == [date_range("2021-06-01T10:00:00Z")]
    audit = {"resourceType": "AuditEvent",
             "agent": [{"who": {"reference": "Practitioner/d1"}}],
             "entity": [{"what": {"reference": "Patient/p2"}}, {"what": {"reference": "Observation/o1"}}]}
    assert extract(param("AuditEvent", "patient"), audit) == [("Patient", "p2", "Patient/p2")]
    assert len(extract(param("AuditEvent", "entity"), audit)) == 2
    mr = {"resourceType": "MedicationRequest", "medicationReference": {"reference": "Medication/m1"}}
    assert extract(param("MedicationRequest", "medication"), mr) == [("Medication", "m1", "Medication/m1")]
    assert extract(param("MedicationRequest", "code"), mr) == []
