"""A small generated region: complete ground truth, valid FHIR, resolvable references, kept invariants."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from synth_helpers import SMALL, read_ndjson, resources

from hutong.synth import Resident, idcard
from hutong.synth.records import RESOURCE_TYPES
from hutong.systems import EXT_BASE, ID_CARD, ORGANIZATION, PASSPORT, mrn_system

ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


def _validate(resource: dict[str, Any]) -> None:
    try:  # the store's validator (structure + reference syntax) when it is there
        from hutong.fhir.validation import validate
    except ImportError:  # pragma: no cover - the store is built concurrently
        from fhir.resources.R4B import get_fhir_model_class

        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    else:
        validate(resource)


def test_every_resource_validates(small_region: Path) -> None:
    by_type = resources(small_region)
    assert set(by_type) == set(RESOURCE_TYPES), "every resource type is generated"
    for items in by_type.values():
        for r in items:
            _validate(r)


def test_ids_valid_unique_and_references_resolve(small_region: Path) -> None:
    by_type = resources(small_region)
    known: set[str] = set()
    for t, items in by_type.items():
        ids = [r["id"] for r in items]
        assert len(ids) == len(set(ids)), f"duplicate {t} ids"
        assert all(ID_RE.match(i) for i in ids)
        known.update(f"{t}/{i}" for i in ids)

    def refs(node: Any) -> Any:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "reference" and isinstance(v, str):
                    yield v
                else:
                    yield from refs(v)
        elif isinstance(node, list):
            for v in node:
                yield from refs(v)

    dangling = [(t, ref) for t, items in by_type.items() for r in items for ref in refs(r) if ref not in known]
    assert not dangling, dangling[:5]


def test_ground_truth_complete(small_region: Path, small_residents: dict[str, Resident]) -> None:
    truth = list(read_ndjson(small_region / "ground_truth.ndjson"))
    patients = list(read_ndjson(small_region / "Patient.ndjson"))
    assert sorted(t["patient"] for t in truth) == sorted(p["id"] for p in patients)
    assert all(t["resident"] in small_residents and isinstance(t["noise"], list) for t in truth)
    assert {t["resident"] for t in truth} == set(small_residents), "every resident was seen somewhere"
    # Several source Patients per resident, at different institutions.
    per = Counter(t["resident"] for t in truth)
    assert 1.5 < sum(per.values()) / len(per) < 5
    by_res: dict[str, list[str]] = {}
    patient_org = {p["id"]: p["managingOrganization"]["reference"] for p in patients}
    for t in truth:
        by_res.setdefault(t["resident"], []).append(patient_org[t["patient"]])
    assert all(len(v) == len(set(v)) for v in by_res.values()), "one source Patient per institution"


def test_patients_agree_with_residents(small_region: Path, small_residents: dict[str, Resident]) -> None:
    truth = {t["patient"]: t for t in read_ndjson(small_region / "ground_truth.ndjson")}
    orgs = {o["id"]: o for o in read_ndjson(small_region / "Organization.ndjson")}
    for p in read_ndjson(small_region / "Patient.ndjson"):
        t = truth[p["id"]]
        r = small_residents[t["resident"]]
        noise = set(t["noise"])
        org = orgs[p["managingOrganization"]["reference"].split("/")[1]]
        org_code = org["identifier"][0]["value"]
        assert org["identifier"][0]["system"] == ORGANIZATION
        systems = {i["system"]: i["value"] for i in p["identifier"]}
        assert mrn_system(org_code) in systems
        assert p["gender"] == r.sex
        if "birthdate_swap" not in noise:
            assert p["birthDate"] == r.birth.isoformat()
        number: str = systems.get(ID_CARD, "")
        if r.id_number is None or "id_missing" in noise:
            assert not number
        elif "id_legacy15" in noise:
            assert len(number) == 15 and idcard.from_legacy15(number) == r.id_number
        elif "id_transposed" in noise:
            assert number != r.id_number and sorted(number) == sorted(r.id_number)
        else:
            assert number == r.id_number and idcard.is_valid(number)
            assert idcard.birth_date(number) == r.birth and idcard.sex(number) == r.sex
        if r.passport:
            assert systems[PASSPORT] == r.passport
        if not noise & {"name_homophone", "name_typo", "name_traditional"}:
            assert p["name"][0]["family"] == r.surname and p["name"][0]["given"] == [r.given]
        else:
            assert p["name"][0]["text"].replace(" ", "") != (r.surname + r.given)
        phone = p["telecom"][0]["value"]
        assert phone == (r.old_phone if "phone_changed" in noise else r.phone)


def test_manifest_counts_match_files(small_region: Path) -> None:
    manifest = json.loads((small_region / "manifest.json").read_text())
    for t, n in manifest["counts"].items():
        assert (small_region / f"{t}.ndjson").read_bytes().count(b"\n") == n
    assert manifest["total_resources"] == sum(manifest["counts"].values())
    assert manifest["config"]["residents"] == SMALL.residents
    truth = list(read_ndjson(small_region / "ground_truth.ndjson"))
    assert manifest["source_patients"] == len(truth)
    applied = Counter(k for t in truth for k in t["noise"])
    assert {k: v["applied"] for k, v in manifest["noise"]["observed"].items() if v["applied"]} == dict(applied)
    assert sorted(p.name for p in small_region.iterdir()) == manifest["files"]


def test_clinical_content_is_chinese_and_coded(small_region: Path) -> None:
    by_type = resources(small_region)
    obs = by_type["Observation"]
    assert all(o["code"]["coding"][0]["system"] == "http://loinc.org" for o in obs)
    flags = Counter(o["interpretation"][0]["coding"][0]["code"] for o in obs)
    assert flags["H"] + flags["L"] > 0.03 * len(obs) and flags["N"] > 0.5 * len(obs)
    assert all(c["code"]["coding"][0]["system"] == "http://hl7.org/fhir/sid/icd-10" for c in by_type["Condition"])
    assert any("高血压" in c["code"]["text"] for c in by_type["Condition"])
    classes = Counter(e["class"]["code"] for e in by_type["Encounter"])
    assert classes["AMB"] and classes["EMER"] and classes["IMP"]
    modalities = {s["modality"][0]["code"] for s in by_type["ImagingStudy"]}
    assert {"DX", "US", "CT"} <= modalities
    doc_codes = {d["type"]["coding"][0]["code"] for d in by_type["DocumentReference"]}
    assert {"C0002", "C0004"} <= doc_codes
    assert all(d["content"][0]["attachment"]["contentType"] for d in by_type["DocumentReference"])
    levels = {o["type"][0]["coding"][0]["code"] for o in by_type["Organization"]}
    assert {"3A", "2", "chc", "clinic"} <= levels
    assert any(e["url"] == EXT_BASE + "medical-alliance" for o in by_type["Organization"] for e in o["extension"])


def _role_index(by_type: dict[str, list[dict[str, Any]]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["practitioner"]["reference"], r["organization"]["reference"]): r for r in by_type["PractitionerRole"]}


def _ext(resource: dict[str, Any], name: str) -> dict[str, Any] | None:
    for e in resource.get("extension", ()):
        if e["url"] == EXT_BASE + name:
            return e  # type: ignore[no-any-return]
    return None


TIER_RANK = {"non-restricted": 1, "restricted": 2, "special": 3}


def test_privileges_are_respected(small_region: Path) -> None:
    """Antibiotics by physicians of sufficient tier; operations by surgeons of sufficient grade."""
    by_type = resources(small_region)
    roles = _role_index(by_type)
    encounters = {e["id"]: e for e in by_type["Encounter"]}
    tiers_seen = set()
    for mr in by_type["MedicationRequest"]:
        enc = encounters[mr["encounter"]["reference"].split("/")[1]]
        role = roles[(mr["requester"]["reference"], enc["serviceProvider"]["reference"])]
        assert _ext(role, "prescribing-right")["valueBoolean"] is True  # type: ignore[index]
        tier = _ext(mr, "antibiotic-tier")
        if tier is None:
            continue
        code = tier["valueCoding"]["code"]
        tiers_seen.add(code)
        held = _ext(role, "antibiotic-tier")
        assert held is not None and TIER_RANK[held["valueCoding"]["code"]] >= TIER_RANK[code]
        if code == "special":
            assert enc["class"]["code"] == "IMP", "special-tier antibiotics are inpatient only"
    assert {"non-restricted", "restricted"} <= tiers_seen
    for p in by_type["Procedure"]:
        grade = int(_ext(p, "surgery-grade")["valueCoding"]["code"])  # type: ignore[index]
        actor = p["performer"][0]
        role = roles[(actor["actor"]["reference"], actor["onBehalfOf"]["reference"])]
        held = _ext(role, "surgery-grade")
        assert held is not None and int(held["valueCoding"]["code"]) >= grade


def test_sensitive_records_are_labelled(small_region: Path) -> None:
    by_type = resources(small_region)
    labelled = Counter(
        s["code"] for items in by_type.values() for r in items for s in r.get("meta", {}).get("security", ())
        if s["system"] == ACT_CODE
    )
    assert labelled["PSY"] and labelled["SEX"]
    psych = {c["id"] for c in by_type["Condition"] if c["code"]["coding"][0]["code"].startswith("F")}
    for c in by_type["Condition"]:
        if c["id"] in psych:
            assert c["meta"]["security"][0]["code"] == "PSY"
    # Encounters that treat a labelled condition carry the label too.
    cond_label = {c["id"]: c.get("meta", {}).get("security", [{}])[0].get("code") for c in by_type["Condition"]}
    for e in by_type["Encounter"]:
        codes = {cond_label[d["condition"]["reference"].split("/")[1]] for d in e.get("diagnosis", ())} - {None}
        if codes:
            assert e["meta"]["security"][0]["code"] in codes


def test_repeat_tests_at_other_institutions_within_days(small_region: Path) -> None:
    """The case mutual recognition (检查检验结果互认) must catch: same test, another institution, days later."""
    from datetime import datetime

    owner = {t["patient"]: t["resident"] for t in read_ndjson(small_region / "ground_truth.ndjson")}
    seen: dict[tuple[str, str], list[tuple[datetime, str]]] = {}
    for dr in read_ndjson(small_region / "DiagnosticReport.ndjson"):
        resident = owner[dr["subject"]["reference"].split("/")[1]]
        code = dr["code"]["coding"][-1]["code"]
        when = datetime.fromisoformat(dr["effectiveDateTime"])
        seen.setdefault((resident, code), []).append((when, dr["performer"][0]["reference"]))
    repeats = 0
    for events in seen.values():
        events.sort()
        for (t1, org1), (t2, org2) in zip(events, events[1:], strict=False):
            if org1 != org2 and (t2 - t1).days <= 10:
                repeats += 1
    manifest = json.loads((small_region / "manifest.json").read_text())
    assert manifest["repeat_test_visits"] > 0
    assert repeats >= manifest["repeat_test_visits"]


def test_times_fall_in_their_encounters(small_region: Path) -> None:
    from datetime import datetime

    by_type = resources(small_region)
    period = {e["id"]: (datetime.fromisoformat(e["period"]["start"]), datetime.fromisoformat(e["period"]["end"]),
                        e["class"]["code"]) for e in by_type["Encounter"]}
    assert all(start <= end for start, end, _ in period.values())
    checks = [("Observation", "effectiveDateTime"), ("DiagnosticReport", "effectiveDateTime"),
              ("ImagingStudy", "started"), ("MedicationRequest", "authoredOn")]
    for t, field in checks:
        for r in by_type[t]:
            start, end, cls = period[r["encounter"]["reference"].split("/")[1]]
            when = datetime.fromisoformat(r[field])
            assert when >= start, (t, r["id"])
            if cls == "IMP":
                assert when <= end, (t, r["id"])
            if "issued" in r:
                assert datetime.fromisoformat(r["issued"]) >= when
    for p in by_type["Procedure"]:
        start, end, cls = period[p["encounter"]["reference"].split("/")[1]]
        began = datetime.fromisoformat(p["performedPeriod"]["start"])
        assert began >= start and (cls != "IMP" or began <= end)
