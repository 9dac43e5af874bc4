"""The simulated hospitals' own data: their institutions and registered patients.

Read from a synthetic region written by ``hutong synth`` (Organization.ndjson,
Patient.ndjson): each hospital's HIS knows its own patients (MRN, name, ID
number, birth date, sex), exactly what a real HIS puts in PID.  Nothing is
read from the platform.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from hutong.errors import InvalidRequest
from hutong.systems import ID_CARD, MRN_PREFIX, ORGANIZATION


@dataclass(frozen=True, slots=True)
class Person:
    mrn: str
    name: str
    id_number: str | None
    birth: str  # YYYYMMDD
    male: bool
    phone: str


@dataclass(slots=True)
class Hospital:
    code: str  # 统一社会信用代码 (MSH-4, CDA custodian)
    name: str
    type_text: str  # 综合 / 专科(传染病) / 中医 / 妇幼 ...
    level: str  # 3A / 3 / 2 / 1 / chc / clinic
    patients: list[Person] = field(default_factory=list)

    @property
    def inpatient(self) -> bool:
        return self.level in ("3A", "3", "2", "1")

    @property
    def weight(self) -> float:
        """Relative daily volume (a 三甲 sees far more than a clinic)."""
        return {"3A": 8.0, "3": 5.0, "2": 3.0, "1": 1.5, "chc": 1.5, "clinic": 0.5}.get(self.level, 1.0)


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise InvalidRequest("HT-0400", f"{path.name} not found in the region directory "
                                        "(write one with `hutong synth`)")
    return [orjson.loads(x) for x in path.read_bytes().splitlines() if x.strip()]


def _person(p: dict[str, Any], code: str) -> Person | None:
    mrn = next((i["value"] for i in p.get("identifier", []) if i.get("system") == MRN_PREFIX + code), None)
    names = p.get("name") or [{}]
    name = names[0].get("text") or "".join(names[0].get("family", "") + "".join(names[0].get("given", [])))
    if not mrn or not name or not p.get("birthDate"):
        return None
    idno = next((i["value"] for i in p.get("identifier", []) if i.get("system") == ID_CARD), None)
    phone = next((t["value"] for t in p.get("telecom", []) if t.get("system") == "phone"), "")
    return Person(mrn, name, idno, p["birthDate"].replace("-", ""), p.get("gender") == "male", phone)


def load(region: Path) -> list[Hospital]:
    """The hospitals of a synthetic region with their registered patients."""
    by_id: dict[str, Hospital] = {}
    for o in _lines(region / "Organization.ndjson"):
        code = next((i["value"] for i in o.get("identifier", []) if i.get("system") == ORGANIZATION), None)
        if code is None:
            continue
        types = o.get("type") or []
        level = next((c["code"] for t in types for c in t.get("coding", [])
                      if c.get("system", "").endswith("level")), "")
        type_text = " ".join(t.get("text", "") for t in types)
        by_id[o["id"]] = Hospital(code, o.get("name", code), type_text, level)
    for p in _lines(region / "Patient.ndjson"):
        ref = (p.get("managingOrganization") or {}).get("reference", "")
        h = by_id.get(ref.split("/")[-1])
        if h is None:
            continue
        person = _person(p, h.code)
        if person is not None:
            h.patients.append(person)
    hospitals = [h for h in by_id.values() if h.patients]
    if not hospitals:
        raise InvalidRequest("HT-0400", "the region has no institution with registered patients")
    return sorted(hospitals, key=lambda h: h.code)
