"""HL7 v2 messages as FHIR R4 transaction Bundles (after the HL7 v2-to-FHIR IG's segment maps).

``to_bundle`` is pure: a parsed message and the sending institution in, a
transaction Bundle (FHIR http.html#transaction) out, plus what the ingestion
glue needs around it (event time, merge request, the patient's key).

Write semantics, chosen so a resent or corrected message converges:
- Patient: ADT owns demographics -> conditional update on the sender's MRN
  (``PUT Patient?identifier=...``); results and orders must not overwrite them
  -> conditional create (``ifNoneExist``).  A PID without a name (an A40 often
  carries identifiers only) is never allowed to blank a record: conditional create.
- Encounter (PV1-19 visit number): conditional update from ADT, conditional
  create from results/orders, none from results/orders without a visit number.
- DiagnosticReport / Observation: conditional update on the filler order
  number (OBR-3, else ORC-3), so the final report replaces the preliminary one
  and a corrected result its predecessor; plain creates without a filler number.
- ServiceRequest: conditional update on the placer (else filler) number, so a
  cancel (ORC-1 CA) or status change updates the order.
Every resource carries ``meta.source`` = ``hl7v2:<institution>#<MSH-10>``.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from hutong import systems
from hutong.ingest.hl7v2.message import (
    Hl7Error,
    Hl7Message,
    components,
    get,
    name_of,
    reps,
    rget,
    shown,
    ts_to_fhir,
)
from hutong.mpi.features import EN_REPRESENTATION  # ISO 21090: ABC alphabetic (pinyin), IDE ideographic
from hutong.mpi.idnumber import parse_id_number

SUPPORTED: dict[str, frozenset[str]] = {
    "ADT": frozenset({"A01", "A02", "A03", "A04", "A08", "A28", "A31", "A40"}),
    "ORU": frozenset({"R01"}),
    "ORM": frozenset({"O01"}),
    "OML": frozenset({"O21"}),
}

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
V3_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
V3_ACTCODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
V3_NULLFLAVOR = "http://terminology.hl7.org/CodeSystem/v3-NullFlavor"
V3_PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CODE_PREFIX = "urn:hutong:code:"  # + institution code: that sender's local code system
ID_PREFIX = "urn:hutong:id:"  # + assigning authority: identifiers of other authorities


@dataclass(frozen=True)
class Sender:
    code: str  # the institution's registered identifier value (统一社会信用代码)
    organization_id: str  # its Organization resource id in the store


@dataclass(frozen=True)
class MappingWarning:
    """Something in an accepted message the sender should fix (an ERR of severity W,
    HL7 v2.5.1 ch. 2.15.5.4) and the commission counts as data quality."""

    code: str  # stable Hutong code (hutong.errors), e.g. HT-0260
    condition: str  # HL7 table 0357, e.g. 103 table value not found
    text: str
    segment: str
    field: int | None = None


@dataclass
class Mapped:
    bundle: dict[str, Any]  # a FHIR R4 transaction Bundle
    event_time: str | None  # the clinical event time (FHIR dateTime), None if absent
    kind: str  # "ADT^A01" ...
    merge: tuple[dict[str, str], dict[str, str]] | None  # ADT^A40: (prior from MRG-1, surviving from PID-3)
    patient_identifier: dict[str, str] | None  # the key the Bundle's Patient is matched on (MRN when sent)
    warnings: list[MappingWarning] = field(default_factory=list)


# --------------------------------------------------------------------------- code tables
# HL7 table 0004 patient class -> v3 ActCode (Encounter.class); Chinese HIS spellings too.
PATIENT_CLASS = {"I": "IMP", "IP": "IMP", "B": "IMP", "O": "AMB", "OP": "AMB", "R": "AMB", "C": "AMB",
                 "E": "EMER", "ER": "EMER", "EM": "EMER", "P": "PRENC",
                 "住院": "IMP", "门诊": "AMB", "急诊": "EMER"}
# HL7 table 0001 and GB/T 2261.1 (1 男, 2 女, 0/9 unknown) -> AdministrativeGender.
SEX = {"M": "male", "F": "female", "O": "other", "A": "other", "U": "unknown", "N": "unknown",
       "1": "male", "2": "female", "0": "unknown", "9": "unknown", "男": "male", "女": "female"}
# Values outside both tables that still say one thing (words some HIS write instead of
# the code; 男性/女性 are GB/T 2261.1's display names): mapped, with a warning.
SEX_WORDS = {"MALE": "male", "FEMALE": "female", "OTHER": "other", "UNKNOWN": "unknown",
             "男性": "male", "女性": "female", "未知": "unknown", "未说明的性别": "unknown", "未知的性别": "unknown"}
# The original text of a coded demographic value that was outside its table (kept
# beside the mapped code: Patient.gender has no room for it).
SOURCE_VALUE_EXT = "https://fhir.hutong.dev/StructureDefinition/hl7v2-source-value"
# 复姓 (compound surnames) as hutong.synth.names lists them, and a few more common ones.
COMPOUND_SURNAMES = ("欧阳", "司马", "上官", "诸葛", "皇甫", "东方", "夏侯", "尉迟", "公孙", "慕容", "令狐", "长孙",
                     "宇文", "司徒", "端木", "南宫", "独孤", "轩辕", "呼延", "澹台")
_LATIN_NAME = re.compile(r"[A-Za-z][A-Za-z' \-]*")
# HL7 table 0200 name type -> NameUse.
NAME_USE = {"L": "official", "D": "usual", "M": "maiden", "N": "nickname", "B": "old", "S": "anonymous"}
# HL7 table 0190 address type -> Address.use / Address.type.
ADDRESS_USE = {"H": "home", "B": "work", "O": "work", "C": "temp", "BA": "old"}
# HL7 table 0085 observation result status -> ObservationStatus.
OBX_STATUS = {"C": "corrected", "D": "entered-in-error", "F": "final", "I": "registered", "N": "cancelled",
              "O": "registered", "P": "preliminary", "R": "preliminary", "S": "preliminary", "U": "final",
              "W": "entered-in-error", "X": "cancelled"}
# HL7 table 0123 result status -> DiagnosticReportStatus.
OBR_STATUS = {"O": "registered", "I": "registered", "S": "registered", "A": "partial", "P": "preliminary",
              "C": "corrected", "R": "partial", "F": "final", "X": "cancelled", "Y": "unknown", "Z": "unknown"}
# HL7 table 0038 order status (ORC-5) and 0119 order control (ORC-1) -> ServiceRequest.status.
ORDER_STATUS = {"A": "active", "CA": "revoked", "CM": "completed", "DC": "revoked", "ER": "entered-in-error",
                "HD": "on-hold", "IP": "active", "RP": "revoked", "SC": "active"}
ORDER_CONTROL = {"NW": "active", "OK": "active", "SN": "active", "SC": "active", "XO": "active",
                 "XX": "active", "RP": "active", "RU": "active", "RO": "active", "RL": "active",
                 "CA": "revoked", "OC": "revoked", "CR": "revoked", "DC": "revoked", "OD": "revoked",
                 "DR": "revoked", "HD": "on-hold", "OH": "on-hold"}
PRIORITY = {"S": "stat", "A": "asap", "R": "routine", "P": "urgent", "C": "routine", "T": "routine"}
# HL7 table 0078 abnormal flags -> v3 ObservationInterpretation (same codes); arrows from Chinese LIS.
INTERPRETATION = {c: c for c in ("H", "L", "HH", "LL", "A", "AA", "N", "U", "D", "B", "W", "S", "R", "I",
                                 "MS", "VS", "NEG", "POS", "IND", "DET", "ND", "NR", "<", ">", "HU", "LU")}
INTERPRETATION |= {"↑": "H", "↓": "L", "↑↑": "HH", "↓↓": "LL", "高": "H", "低": "L", "阳性": "POS", "阴性": "NEG",
                   "+": "POS", "-": "NEG"}
CODE_SYSTEMS = {"LN": LOINC, "LOINC": LOINC, "SCT": SNOMED, "SNM": SNOMED, "SNOMED": SNOMED, "UCUM": UCUM,
                "I10": "http://hl7.org/fhir/sid/icd-10", "I10C": "http://hl7.org/fhir/sid/icd-10",
                "ICD10": "http://hl7.org/fhir/sid/icd-10", "I9": "http://hl7.org/fhir/sid/icd-9-cm",
                "I9C": "http://hl7.org/fhir/sid/icd-9-cm", "I9CDX": "http://hl7.org/fhir/sid/icd-9-cm"}
_LOCAL_SYSTEMS = {"", "L", "LOCAL", "99L", "99LOCAL"}

_HAN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_NUMBER = re.compile(r"\s*(<=|>=|<|>|≤|≥)?\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*")
_PLAIN_NUMBER = re.compile(r"\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)\s*")
_RANGE = re.compile(r"\s*([+-]?\d+(?:\.\d+)?)\s*(?:-{1,2}|~|～|—|–)\s*([+-]?\d+(?:\.\d+)?)\s*")
_POWER_UNIT = re.compile(r"\d{1,2}/[A-Za-z]+")
_UCUM_LIKE = re.compile(r"[A-Za-z0-9.%/*\[\]{}()'^+\-]+")
_COMPARATOR = {"<": "<", "<=": "<=", ">": ">", ">=": ">=", "≤": "<=", "≥": ">="}
_LAB = {"coding": [{"system": OBSERVATION_CATEGORY, "code": "laboratory", "display": "Laboratory"}]}


def _num(text: str) -> int | float:
    return float(text) if "." in text else int(text)


_CODE = re.compile(r"[^\s]+( [^\s]+)*")
_URI_SAFE = re.compile(r"[A-Za-z0-9:/.\-_~@]*")


def _q(text: str) -> str:
    """Percent-encode for a URI or search value (keeps what identifiers usually hold)."""
    return text if _URI_SAFE.fullmatch(text) else quote(text, safe=":/.-_~@")


def is_han(text: str) -> bool:
    return _HAN.search(text) is not None


def _han_with_pinyin(family: str, given: str, middle: str, suffix: str, prefix: str) -> bool:
    """PID-5 as many Chinese HIS fill it: the whole Han name in the family name component
    and its pinyin in the given name (``张三丰^zhangsanfeng``).  A Han family name never
    comes with a Latin given name otherwise, so the scripts alone tell."""
    family, given = family.strip(), given.strip()
    return (len(family) >= 2 and all(_HAN.match(c) for c in family) and not (middle or suffix or prefix)
            and _LATIN_NAME.fullmatch(given) is not None)


def split_han_name(full: str) -> tuple[str, str]:
    """A Han full name as (family, given): a 复姓 when the name starts with one and is
    longer than it, else the first character (张三丰 -> 张, 三丰; 欧阳修 -> 欧阳, 修)."""
    for surname in COMPOUND_SURNAMES:
        if full.startswith(surname) and len(full) > len(surname):
            return surname, full[len(surname):]
    return full[:1], full[1:]


def _han_and_pinyin(full: str, pinyin: str, use: str | None) -> list[dict[str, Any]]:
    """The Han name (the name: text 张三丰, family 张, given 三丰; ISO 21090 representation
    IDE) and its pinyin as a second name (representation ABC), so the MPI compares the
    Han names and a display can still show the romanisation."""
    family, given = split_han_name(full)
    han: dict[str, Any] = {"extension": [{"url": EN_REPRESENTATION, "valueCode": "IDE"}]}
    if use:
        han["use"] = use
    han.update({"text": full, "family": family, "given": [given]})
    latin: dict[str, Any] = {"extension": [{"url": EN_REPRESENTATION, "valueCode": "ABC"}]}
    if use:
        latin["use"] = use
    latin["text"] = pinyin
    return [han, latin]


# --------------------------------------------------------------------------- the mapper
def to_bundle(msg: Hl7Message, sender: Sender) -> Mapped:
    """Map one parsed message to a FHIR transaction Bundle (see the module docstring)."""
    triggers = SUPPORTED.get(msg.message_type)
    if triggers is None:
        raise Hl7Error("200", f"unsupported message type {msg.message_type[:10]!r} "
                              f"(accepted: {', '.join(sorted(SUPPORTED))})", segment="MSH", field=9, ack="AR")
    if msg.trigger not in triggers:
        raise Hl7Error("201", f"unsupported event {shown(msg.message_type + '^' + msg.trigger, 20)} (MSH-9; "
                              f"accepted: {', '.join(sorted(triggers))})", segment="MSH", field=9, ack="AR")
    m = _Mapper(msg, sender)
    if msg.message_type == "ADT":
        return m.adt()
    if msg.message_type == "ORU":
        return m.oru()
    return m.orders()


class _Mapper:
    def __init__(self, msg: Hl7Message, sender: Sender) -> None:
        self.msg = msg
        self.sender = sender
        self.kind = f"{msg.message_type}^{msg.trigger}"
        self.source = f"hl7v2:{_q(sender.code)}#{_q(msg.control_id)}"
        self.mrn_system = systems.mrn_system(sender.code)
        self.order_system = systems.order_system(sender.code)
        self.local_codes = CODE_PREFIX + sender.code
        self.org_ref = {"reference": f"Organization/{sender.organization_id}"}
        self.own_authorities = {sender.code, *(c for c in msg.sending_facility if c)}
        self.entries: list[dict[str, Any]] = []
        self._n = 0
        # fullUrls: a UUID-shaped name per entry, from a hash of sender#control id (a resend maps identically)
        h = hashlib.sha1(f"{sender.code}#{msg.control_id}".encode(), usedforsecurity=False).hexdigest()
        self._uuid_prefix = f"urn:uuid:{h[0:8]}-{h[8:12]}-5{h[13:16]}-8{h[17:20]}-{h[20:24]}"
        self._keys: dict[str, str] = {}
        self._systems: dict[str, str] = {}  # conditional criteria -> fullUrl, so one resource is written once
        self.warnings: list[MappingWarning] = []
        self._shared: set[str] = set()  # order numbers that key more than one ORC/OBR group of this message
        self._group_keys: set[str] = set()

    # ----------------------------------------------------------------- bundle
    def _full_url(self) -> str:
        self._n += 1
        return f"{self._uuid_prefix}{self._n:08x}"

    def _add(self, resource: dict[str, Any], request: dict[str, str], key: str | None = None) -> str:
        if key is not None and key in self._keys:
            return self._keys[key]
        resource["meta"] = {"source": self.source}
        full = self._full_url()
        self.entries.append({"fullUrl": full, "resource": resource, "request": request})
        if key is not None:
            self._keys[key] = full
        return full

    def _write(self, resource: dict[str, Any], ident: dict[str, str] | None, *, update: bool) -> str:
        """Add with a conditional update (``update``) or conditional create on ``ident``, else plain POST."""
        rtype = resource["resourceType"]
        if ident is None:
            return self._add(resource, {"method": "POST", "url": rtype})
        crit = f"identifier={_q(ident['system'])}|{_q(ident['value'])}"
        if update:
            return self._add(resource, {"method": "PUT", "url": f"{rtype}?{crit}"}, key=f"{rtype}?{crit}")
        return self._add(resource, {"method": "POST", "url": rtype, "ifNoneExist": crit}, key=f"{rtype}?{crit}")

    def _mapped(self, event_time: str | None, patient_key: dict[str, str] | None,
                merge: tuple[dict[str, str], dict[str, str]] | None = None) -> Mapped:
        return Mapped(bundle={"resourceType": "Bundle", "type": "transaction", "entry": self.entries},
                      event_time=event_time, kind=self.kind, merge=merge, patient_identifier=patient_key,
                      warnings=self.warnings)

    def _ts(self, seg: Any, field: int) -> str | None:
        return ts_to_fhir(get(seg, field), segment=name_of(seg), field=field, zone=self.msg.zone)

    def _required(self, name: str) -> Any:
        seg = self.msg.segment(name)
        if seg is None:
            raise Hl7Error("101", f"{self.kind} needs a {name} segment", segment=name)
        return seg

    # ----------------------------------------------------------------- ADT
    def adt(self) -> Mapped:
        trigger = self.msg.trigger
        pid = self._required("PID")
        patient = self._patient(pid)
        key = patient.pop("_key")
        has_name = "name" in patient
        patient_url = self._write(patient, key, update=has_name)
        evn = self.msg.segment("EVN")
        pv1 = self.msg.segment("PV1")
        event_time = None
        if evn is not None:
            event_time = self._ts(evn, 6) or self._ts(evn, 2)
        if pv1 is not None and event_time is None:
            event_time = self._ts(pv1, 44) or self._ts(pv1, 45)
        merge = None
        if trigger == "A40":
            mrg = self._required("MRG")
            prior = self._identifiers(reps(mrg, 1), pid)
            if not prior:
                raise Hl7Error("101", "MRG-1 prior patient identifier is missing", segment="MRG", field=1)
            prior_key = next((i for i in prior if i["system"] == self.mrn_system), prior[0])
            merge = ({"system": prior_key["system"], "value": prior_key["value"]}, key)
        elif trigger in ("A01", "A02", "A03", "A04", "A08"):
            if pv1 is None:
                if trigger != "A08":
                    raise Hl7Error("101", f"{self.kind} needs a PV1 segment", segment="PV1")
            else:
                enc = self._encounter(pv1, patient_url, evn_time=event_time)
                self._write(enc, enc.pop("_key"), update=True)
        return self._mapped(event_time, key, merge)

    # ----------------------------------------------------------------- shared order numbers
    def _service_code(self, obr: Any) -> str:
        cc = self._cc(obr, 4) if obr is not None else None
        if cc is None:
            return ""
        return str(cc.get("coding", [{}])[0].get("code") or cc.get("text") or "")

    def _group_key(self, number: str, obr: Any, what: str, field: int) -> str:
        """The key of one ORC/OBR group numbered ``number`` (the filler number of a report,
        the placer number of an order).  Several groups of one message may share it (one
        specimen barcode for several tests): each is then keyed on number^service
        (OBR-4), so none replaces another.  Two groups with the same number and the same
        service cannot be told apart: the message is refused (AE 205, HT-0262) rather
        than one of them dropped."""
        if number not in self._shared:
            return number
        code = self._service_code(obr)
        key = f"{number}^{code}"
        if not code or key in self._group_keys:
            raise Hl7Error("205", f"two order groups share {what} {shown(number)}"
                                  + (f" and service {shown(code)} (OBR-4)" if code else " and have no OBR-4")
                                  + ": they cannot be told apart; send one group per order or distinct numbers",
                           segment="OBR" if obr is not None else "ORC", field=field, ht="HT-0262")
        self._group_keys.add(key)
        return key

    def _count_shared(self, numbers: list[str]) -> None:
        self._shared = {n for n, k in Counter(x for x in numbers if x).items() if k > 1}
        self._group_keys = set()

    def _report_numbers(self) -> list[str]:
        """The filler number of each OBR (else of its ORC), as :meth:`_report` reads it."""
        out: list[str] = []
        orc: Any = None
        for seg in self.msg.parsed:
            name = name_of(seg)
            if name == "ORC":
                orc = seg
            elif name == "OBR":
                out.append(get(seg, 3) or (get(orc, 3) if orc is not None else ""))
                orc = None
        return out

    # ----------------------------------------------------------------- ORU
    def oru(self) -> Mapped:
        self._count_shared(self._report_numbers())
        patient_url: str | None = None
        encounter_url: str | None = None
        first_key: dict[str, str] | None = None
        event_time: str | None = None
        report: dict[str, Any] | None = None
        obs: list[tuple[dict[str, Any], dict[str, str] | None]] = []
        orc: Any = None
        last_obs: dict[str, Any] | None = None
        obs_keys: set[str] = set()
        pid_seg: Any = None

        def close() -> None:
            nonlocal report, obs
            if report is None:
                return
            dr_key = report.pop("_key")
            results = []
            for o, k in obs:
                results.append({"reference": self._write(o, k, update=True)})
            if results:
                report["result"] = results
            self._write(report, dr_key, update=True)
            report, obs = None, []

        for seg in self.msg.parsed:
            name = name_of(seg)
            if name == "PID":
                close()
                pid_seg = seg
                patient = self._patient(seg)
                key = patient.pop("_key")
                first_key = first_key or key
                patient_url = self._write(patient, key, update=False)
                encounter_url, orc = None, None
            elif name == "PV1" and patient_url is not None:
                if get(seg, 19):
                    enc = self._encounter(seg, patient_url, evn_time=None)
                    encounter_url = self._write(enc, enc.pop("_key"), update=False)
            elif name == "ORC":
                close()
                orc = seg
            elif name == "OBR":
                close()
                if patient_url is None:
                    raise Hl7Error("101", "ORU^R01 needs a PID segment before the results", segment="PID")
                report = self._report(seg, orc, patient_url, encounter_url)
                obs_keys = set()
                last_obs = None
                if event_time is None:
                    event_time = report.get("effectiveDateTime")
                orc = None
            elif name == "OBX":
                if report is None or patient_url is None:
                    raise Hl7Error("100", "OBX before any OBR", segment="OBX")
                o, k = self._observation(seg, report, patient_url, encounter_url, obs_keys)
                obs.append((o, k))
                last_obs = o
                if event_time is None:
                    event_time = o.get("effectiveDateTime")
            elif name == "NTE" and last_obs is not None:
                text = "\n".join(rget(r) for r in reps(seg, 3))
                if text:
                    last_obs.setdefault("note", []).append({"text": text})
        close()
        if pid_seg is None:
            raise Hl7Error("101", "ORU^R01 needs a PID segment", segment="PID")
        return self._mapped(event_time, first_key)

    def _report(self, obr: Any, orc: Any, patient_url: str, encounter_url: str | None) -> dict[str, Any]:
        code = self._cc(obr, 4)
        if code is None:
            raise Hl7Error("101", "OBR-4 universal service identifier is missing", segment="OBR", field=4)
        status = get(obr, 25)
        report: dict[str, Any] = {
            "resourceType": "DiagnosticReport",
            "status": OBR_STATUS.get(status, "unknown"),
            "category": [self._cc(obr, 24) or {"coding": [{"system": V2_0074, "code": "LAB",
                                                             "display": "Laboratory"}]}],
            "code": code,
            "subject": {"reference": patient_url},
            "performer": [self.org_ref],
        }
        if encounter_url:
            report["encounter"] = {"reference": encounter_url}
        effective = self._ts(obr, 7)
        if effective:
            report["effectiveDateTime"] = effective
        issued = self._ts(obr, 22)
        if issued and "T" in issued:  # an instant needs a time
            report["issued"] = issued
        filler = get(obr, 3) or (get(orc, 3) if orc is not None else "")
        placer = get(obr, 2) or (get(orc, 2) if orc is not None else "")
        idents = []
        if filler:
            idents.append(self._order_id(filler, "FILL"))
        if placer:
            idents.append(self._order_id(placer, "PLAC"))
        key = self._group_key(filler, obr, "filler order number", 3) if filler else None
        if key is not None and key != filler:
            idents.append({"system": self.order_system, "value": key})  # what the conditional update matches
        if idents:
            report["identifier"] = idents
        report["_key"] = {"system": self.order_system, "value": key} if key else None
        return report

    def _order_id(self, value: str, kind: str) -> dict[str, Any]:
        return {"type": {"coding": [{"system": V2_0203, "code": kind}]}, "system": self.order_system,
                "value": value}

    def _observation(self, obx: Any, report: dict[str, Any], patient_url: str, encounter_url: str | None,
                     used: set[str]) -> tuple[dict[str, Any], dict[str, str] | None]:
        code = self._cc(obx, 3)
        if code is None:
            raise Hl7Error("101", "OBX-3 observation identifier is missing", segment="OBX", field=3)
        o: dict[str, Any] = {
            "resourceType": "Observation",
            "status": OBX_STATUS.get(get(obx, 11), "unknown"),
            "category": [_LAB],
            "code": code,
            "subject": {"reference": patient_url},
        }
        if encounter_url:
            o["encounter"] = {"reference": encounter_url}
        effective = self._ts(obx, 14) or report.get("effectiveDateTime")
        if effective:
            o["effectiveDateTime"] = effective
        unit = self._unit(obx)
        self._value(obx, o, unit)
        ref = get(obx, 7)
        if ref:
            o["referenceRange"] = [self._range(ref, unit)]
        flags = [rget(r) for r in reps(obx, 8)]
        interp = [self._interpretation(f) for f in flags if f]
        if interp:
            o["interpretation"] = interp
        o["performer"] = [self.org_ref]
        key = None
        dr_key = report.get("_key")
        if dr_key is not None:
            c = code.get("coding", [{}])[0].get("code") or code.get("text", "")
            k = f"{dr_key['value']}/{c}" + (f"/{get(obx, 4)}" if get(obx, 4) else "")
            if k in used:  # the same test twice without sub-ids: tell them apart by set id
                k += f"#{get(obx, 1) or len(used)}"
            used.add(k)
            key = {"system": self.order_system, "value": k}
            o["identifier"] = [key.copy()]
        return o, key

    def _unit(self, obx: Any) -> dict[str, Any] | None:
        rs = reps(obx, 6)
        if not rs:
            return None
        sym, text, sys_ = components(rs[0], 3, obx)
        if not (sym or text):
            return None
        if sym == "10" and _POWER_UNIT.fullmatch(text) and not sys_:
            # "10^9/L" sent unescaped (common from Chinese LIS): the "^" split it in two
            sym, text = f"10^{text}", ""
        unit: dict[str, Any] = {"unit": sym or text}
        code = sym.replace("^", "*") if sym.startswith("10^") else sym
        if code and _UCUM_LIKE.fullmatch(code):  # declared UCUM or not: only what can be a UCUM code
            unit["system"] = UCUM
            unit["code"] = code
        return unit

    def _value(self, obx: Any, o: dict[str, Any], unit: dict[str, Any] | None) -> None:
        vtype = get(obx, 2).upper()
        values = reps(obx, 5)
        if not values:
            return
        first = values[0]
        if vtype == "NM":
            text = rget(first)
            m = _NUMBER.fullmatch(text)
            if m is None:  # a lab result is never dropped for its type: keep the text
                if text:
                    o["valueString"] = text
                return
            q: dict[str, Any] = {"value": _num(m.group(2))}
            if m.group(1):
                q["comparator"] = _COMPARATOR[m.group(1)]
            if unit:
                q.update(unit)
            o["valueQuantity"] = q
        elif vtype in ("ST", "TX", "FT"):
            text = "\n".join(t for t in (rget(r) for r in values) if t)
            if text:
                o["valueString"] = text
        elif vtype in ("CE", "CWE", "CNE"):
            cc = self._cc_rep(first)
            if cc:
                o["valueCodeableConcept"] = cc
        elif vtype == "SN":
            self._structured_numeric(first, o, unit)
        elif vtype in ("DT", "TS", "DTM"):
            dt = ts_to_fhir(rget(first), segment="OBX", field=5, zone=self.msg.zone)
            if dt:
                o["valueDateTime"] = dt
        elif vtype not in ("ED", "RP"):  # encapsulated data and pointers are not values
            text = rget(first)
            if text:
                o["valueString"] = text

    def _structured_numeric(self, r: Any, o: dict[str, Any], unit: dict[str, Any] | None) -> None:
        """SN (ch. 2A.75): comparator ^ num1 ^ separator/suffix ^ num2."""
        comp, n1, sep, n2 = rget(r, 1), rget(r, 2), rget(r, 3), rget(r, 4)
        text = "".join((comp, n1, sep, n2))

        def quantity(v: str) -> dict[str, Any]:
            q: dict[str, Any] = {"value": _num(v)}
            if unit:
                q.update(unit)
            return q

        num = _PLAIN_NUMBER.fullmatch
        if n1 and num(n1) and not sep and not n2 and comp in ("", "=", "<", ">", "<=", ">="):
            q = quantity(n1.strip())
            if comp in _COMPARATOR:
                q["comparator"] = _COMPARATOR[comp]
            o["valueQuantity"] = q
        elif sep == "-" and n1 and n2 and num(n1) and num(n2) and not comp:
            o["valueRange"] = {"low": quantity(n1.strip()), "high": quantity(n2.strip())}
        elif sep in (":", "/") and n1 and n2 and num(n1) and num(n2) and not comp:
            o["valueRatio"] = {"numerator": {"value": _num(n1.strip())}, "denominator": {"value": _num(n2.strip())}}
        elif text:
            o["valueString"] = text

    def _range(self, text: str, unit: dict[str, Any] | None) -> dict[str, Any]:
        """OBX-7 "3.5-5.5", "<5", ">1.0" -> low/high; anything else stays text."""
        rr: dict[str, Any] = {"text": text}

        def quantity(v: str) -> dict[str, Any]:
            q: dict[str, Any] = {"value": _num(v)}
            if unit:
                q.update(unit)
            return q

        m = _RANGE.fullmatch(text)
        if m is not None:
            rr["low"] = quantity(m.group(1))
            rr["high"] = quantity(m.group(2))
            return rr
        m = _NUMBER.fullmatch(text)
        if m is not None and m.group(1):
            rr["high" if m.group(1) in ("<", "<=", "≤") else "low"] = quantity(m.group(2))
        return rr

    def _interpretation(self, flag: str) -> dict[str, Any]:
        code = INTERPRETATION.get(flag) or INTERPRETATION.get(flag.upper())
        if code is None:
            return {"text": flag}
        return {"coding": [{"system": V3_INTERPRETATION, "code": code}], "text": flag}

    # ----------------------------------------------------------------- orders
    def orders(self) -> Mapped:
        pid = self._required("PID")
        patient = self._patient(pid)
        key = patient.pop("_key")
        patient_url = self._write(patient, key, update=False)
        encounter_url = None
        pv1 = self.msg.segment("PV1")
        if pv1 is not None and get(pv1, 19):
            enc = self._encounter(pv1, patient_url, evn_time=None)
            encounter_url = self._write(enc, enc.pop("_key"), update=False)
        groups: list[list[Any]] = []  # [orc or None, obr or None]
        for seg in self.msg.parsed:
            name = name_of(seg)
            if name == "ORC":
                groups.append([seg, None])
            elif name == "OBR":
                if groups and groups[-1][1] is None:
                    groups[-1][1] = seg
                else:
                    groups.append([None, seg])
        if not groups:
            raise Hl7Error("101", f"{self.kind} needs an ORC or OBR segment", segment="ORC")
        self._count_shared([self._order_number(orc, obr) for orc, obr in groups])
        event_time = None
        for orc, obr in groups:
            sr, sr_key = self._service_request(orc, obr, patient_url, encounter_url)
            self._write(sr, sr_key, update=True)
            if event_time is None:
                event_time = sr.get("authoredOn") or (self._ts(obr, 6) if obr is not None else None)
        return self._mapped(event_time, key)

    def _service_request(self, orc: Any, obr: Any, patient_url: str,
                         encounter_url: str | None) -> tuple[dict[str, Any], dict[str, str] | None]:
        status = "unknown"
        if orc is not None:
            status = ORDER_STATUS.get(get(orc, 5)) or ORDER_CONTROL.get(get(orc, 1), "unknown")
        sr: dict[str, Any] = {"resourceType": "ServiceRequest", "status": status, "intent": "order"}
        placer = (get(orc, 2) if orc is not None else "") or (get(obr, 2) if obr is not None else "")
        filler = (get(orc, 3) if orc is not None else "") or (get(obr, 3) if obr is not None else "")
        idents = []
        if placer:
            idents.append(self._order_id(placer, "PLAC"))
        if filler:
            idents.append(self._order_id(filler, "FILL"))
        if idents:
            sr["identifier"] = idents
        if obr is not None:
            code = self._cc(obr, 4)
            if code is not None:
                sr["code"] = code
        sr["subject"] = {"reference": patient_url}
        if encounter_url:
            sr["encounter"] = {"reference": encounter_url}
        if orc is not None:
            authored = self._ts(orc, 9)
            if authored:
                sr["authoredOn"] = authored
        priority = (get(orc, 7, 6) if orc is not None else "") or (get(obr, 27, 6) if obr is not None else "")
        if priority in PRIORITY:
            sr["priority"] = PRIORITY[priority]
        requester = self._person_name(orc, 12) if orc is not None else None
        if requester is None and obr is not None:
            requester = self._person_name(obr, 16)
        if requester:
            sr["requester"] = {"display": requester}
        number = placer or filler
        key_value = self._group_key(number, obr, "placer order number" if placer else "filler order number",
                                    2 if placer else 3) if number else ""
        if key_value and key_value != number:
            sr["identifier"].append({"system": self.order_system, "value": key_value})
        return sr, ({"system": self.order_system, "value": key_value} if key_value else None)

    @staticmethod
    def _order_number(orc: Any, obr: Any) -> str:
        """The number a ServiceRequest is keyed on, as :meth:`_service_request` reads it."""
        placer = (get(orc, 2) if orc is not None else "") or (get(obr, 2) if obr is not None else "")
        filler = (get(orc, 3) if orc is not None else "") or (get(obr, 3) if obr is not None else "")
        return placer or filler

    def _person_name(self, seg: Any, field: int) -> str | None:
        """XCN id ^ family ^ given ^ middle ...: display text (Han names without spaces)."""
        family, given, middle = get(seg, field, 2, 1), get(seg, field, 3), get(seg, field, 4)
        if family or given:
            if is_han(family + given):
                return family + given + middle
            return " ".join(x for x in (given, middle, family) if x)
        return get(seg, field, 1) or None

    # ----------------------------------------------------------------- Patient
    def _patient(self, pid: Any) -> dict[str, Any]:
        idents = self._identifiers(reps(pid, 3), pid)
        national = self._ssn_id_card(pid, idents)
        if national is not None:
            idents.append(national)
        if not idents:
            raise Hl7Error("101", "PID-3 patient identifier list is empty", segment="PID", field=3)
        key = next((i for i in idents if i["system"] == self.mrn_system), idents[0])
        p: dict[str, Any] = {"resourceType": "Patient", "identifier": idents}
        names = self._names(pid)
        if names:
            p["name"] = names
        telecom = self._telecoms(pid, 13, "home") + self._telecoms(pid, 14, "work")
        if telecom:
            p["telecom"] = telecom
        sex = get(pid, 8)
        if sex:
            gender = SEX.get(sex.strip().upper())
            if gender is None:
                # A demographic code outside its table never costs the sender its results
                # (PID-8 is IS, user-defined table 0001, ch. 3.4.2.8): map what says one
                # thing, keep the text as sent, accept with a warning (HT-0260).
                gender = SEX_WORDS.get(" ".join(sex.split()).upper())
                p["extension"] = [{"url": SOURCE_VALUE_EXT, "extension": [
                    {"url": "field", "valueString": "PID-8"}, {"url": "value", "valueString": sex}]}]
                self.warnings.append(MappingWarning(
                    "HT-0260", "103", f"PID-8 sex {shown(sex, 20)} is not in HL7 table 0001 or GB/T 2261.1: "
                    + (f"read as {gender}" if gender else "gender left unknown") + ", the value kept as sent",
                    "PID", 8))
            if gender is not None:
                p["gender"] = gender
        birth = self._ts(pid, 7)
        if birth:
            p["birthDate"] = birth[:10]
        death = self._ts(pid, 29)
        if death:
            p["deceasedDateTime"] = death
        elif get(pid, 30) == "Y":
            p["deceasedBoolean"] = True
        addresses = self._addresses(pid)
        if addresses:
            p["address"] = addresses
        p["managingOrganization"] = self.org_ref
        p["_key"] = {"system": key["system"], "value": key["value"]}
        return p

    def _ssn_id_card(self, pid: Any, idents: list[dict[str, Any]]) -> dict[str, Any] | None:
        """PID-19 (SSN, ch. 3.4.2.19) as the 居民身份证 number: Chinese HIS put it there.
        Read only when PID-3 carries no 身份证 number and PID-19 is a valid 18-character
        GB 11643 number (its check character, region and birth date agree), so a social
        insurance number or a typo is never taken for one."""
        if any(i["system"] == systems.ID_CARD for i in idents):
            return None
        raw = get(pid, 19).strip()
        if len(raw) != 18:
            return None
        parsed = parse_id_number(raw)
        if not parsed.valid or parsed.value is None or parsed.legacy:
            return None
        return {"use": "official", "system": systems.ID_CARD, "value": parsed.value}

    def _identifiers(self, cxs: list[Any], pid: Any) -> list[dict[str, Any]]:
        """PID-3 / MRG-1 CX repetitions as identifiers, one per system and value."""
        out: list[dict[str, Any]] = []
        seen: set[tuple[str, str]] = set()
        for r in cxs:
            value, _, _, _, typ, _, _, _, jurisdiction = components(r, 9, pid)
            value, typ = value.strip(), typ.upper()
            if not value:
                continue
            namespace, universal = rget(r, 4, 1, pid), rget(r, 4, 2, pid)
            auths = {a for a in (namespace, universal) if a}
            ident: dict[str, Any]
            if typ == "NNCHN" or auths & {"2.16.156.10011.1.3", "身份证", "ID"}:
                ident = {"use": "official", "system": systems.ID_CARD, "value": value.upper()}
            elif typ == "HC" or "2.16.156.10011.1.19" in auths:
                ident = {"system": systems.HEALTH_CARD, "value": value}
            elif typ == "PPN":
                country = jurisdiction or (namespace if re.fullmatch(r"[A-Z]{2,3}", namespace) else "")
                country = country or get(pid, 28)
                ident = {"system": systems.PASSPORT, "value": f"{country}:{value}" if country else value}
            elif typ in ("MR", "PI", "PT") or (not typ and (not auths or auths & self.own_authorities)):
                ident = {"use": "usual", "system": self.mrn_system, "value": value}
            elif auths:
                ident = {"system": ID_PREFIX + _q(universal or namespace), "value": value}
            else:
                ident = {"system": f"{ID_PREFIX}{_q(self.sender.code)}:{_q(typ)}", "value": value}
            k = (ident["system"], ident["value"])
            if k not in seen:
                seen.add(k)
                out.append(ident)
        return out

    def _names(self, pid: Any) -> list[dict[str, Any]]:
        out = []
        for r in reps(pid, 5):
            family, given, middle, suffix, prefix, _, use = components(r, 7, pid)
            if not (family or given):
                continue
            if _han_with_pinyin(family, given, middle, suffix, prefix):
                out.extend(_han_and_pinyin(family.strip(), given.strip(), NAME_USE.get(use)))
                continue
            name: dict[str, Any] = {}
            if use in NAME_USE:
                name["use"] = NAME_USE[use]
            if is_han(family + given + middle):
                name["text"] = family + given + middle  # 张三, never "张 三"
            else:
                name["text"] = " ".join(x for x in (prefix, given, middle, family, suffix) if x)
            if family:
                name["family"] = family
            given_names = [g for g in (given, middle) if g]
            if given_names:
                name["given"] = given_names
            if prefix:
                name["prefix"] = [prefix]
            if suffix:
                name["suffix"] = [suffix]
            out.append(name)
        return out

    def _telecoms(self, pid: Any, field: int, default_use: str) -> list[dict[str, Any]]:
        out = []
        for r in reps(pid, field):
            number, use_code, equipment, email, cc, area, local, ext, _, _, _, unformatted = components(r, 12, pid)
            if equipment.lower() == "internet" or use_code == "NET":
                email = email or number
                if email:
                    out.append({"system": "email", "value": email, "use": default_use})
                continue
            number = number or unformatted
            if not number:
                number = (f"+{cc} " if cc else "") + (f"{area}-" if area else "") + local
                number += f" ext {ext}" if ext and local else ""
            number = number.strip()
            if not number:
                continue
            system = {"FX": "fax", "BP": "pager"}.get(equipment.upper(), "phone")
            use = "mobile" if equipment.upper() == "CP" else default_use
            out.append({"system": system, "value": number, "use": use})
        return out

    def _addresses(self, pid: Any) -> list[dict[str, Any]]:
        out = []
        for r in reps(pid, 11):
            street, other, city, state, postal, country, typ, _, district = components(r, 9, pid)
            if not (street or other or city or state or postal or country or district):
                continue
            a: dict[str, Any] = {}
            if typ in ADDRESS_USE:
                a["use"] = ADDRESS_USE[typ]
            elif typ == "M":
                a["type"] = "postal"
            lines = [x for x in (street, other) if x]
            if is_han("".join((state, city, district, street, other))):
                # 北京市朝阳区..., no spaces; Chinese senders often repeat province and city in the line
                joined = "".join(lines)
                head = [x for x in (state, city, district) if x and not x.isdigit() and x not in joined]
                a["text"] = "".join(dict.fromkeys(head)) + joined
            if lines:
                a["line"] = lines
            if city:
                a["city"] = city
            if district:
                a["district"] = district
            if state:
                a["state"] = state
            if postal:
                a["postalCode"] = postal
            if country:
                a["country"] = country
            out.append(a)
        return out

    # ----------------------------------------------------------------- Encounter
    def _encounter(self, pv1: Any, patient_url: str, *, evn_time: str | None) -> dict[str, Any]:
        trigger = self.msg.trigger if self.msg.message_type == "ADT" else ""
        start, end = self._ts(pv1, 44), self._ts(pv1, 45)
        if trigger == "A03":
            status = "finished"
            end = end or evn_time
        elif trigger in ("A01", "A02", "A04"):
            status = "in-progress"
        else:
            status = "finished" if end else ("in-progress" if trigger else "unknown")
        pclass = get(pv1, 2)
        act = PATIENT_CLASS.get(pclass) or PATIENT_CLASS.get(pclass.upper())
        enc: dict[str, Any] = {
            "resourceType": "Encounter",
            "status": status,
            "class": ({"system": V3_ACTCODE, "code": act} if act else
                      {"system": V3_NULLFLAVOR, "code": "UNK", "display": pclass or "unknown"}),
        }
        visit = get(pv1, 19)
        key = {"system": systems.visit_system(self.sender.code), "value": visit} if visit else None
        if key:
            enc["identifier"] = [dict(key, use="official")]
        enc["subject"] = {"reference": patient_url}
        attending = self._person_name(pv1, 7)
        if attending:
            enc["participant"] = [{"type": [{"coding": [{"system": V3_PARTICIPATION, "code": "ATND"}]}],
                                   "individual": {"display": attending}}]
        period = {k: v for k, v in (("start", start), ("end", end)) if v}
        if period:
            enc["period"] = period
        locations = []
        here = self._location(pv1, 3)
        if here:
            locations.append({"location": {"display": here}, "status": "completed" if status == "finished"
                              else "active"})
        before = self._location(pv1, 6) if trigger == "A02" else None
        if before and before != here:
            locations.append({"location": {"display": before}, "status": "completed"})
        if locations:
            enc["location"] = locations
        enc["serviceProvider"] = self.org_ref
        enc["_key"] = key
        return enc

    def _location(self, pv1: Any, field: int) -> str | None:
        """PL: point of care ^ room ^ bed ^ facility ... as "ward/room/bed"."""
        parts = [get(pv1, field, i) for i in (1, 2, 3)]
        text = "/".join(p for p in parts if p)
        return text or None

    # ----------------------------------------------------------------- codes
    def _system(self, system_id: str) -> str:
        hit = self._systems.get(system_id)
        if hit is None:
            hit = self._systems[system_id] = self._system_uncached(system_id)
        return hit

    def _system_uncached(self, system_id: str) -> str:
        s = system_id.upper()
        known = CODE_SYSTEMS.get(s)
        if known:
            return known
        if s.startswith("HL7") and s[3:].isdigit():
            return f"http://terminology.hl7.org/CodeSystem/v2-{s[3:]}"
        if s in _LOCAL_SYSTEMS or s.startswith("99"):
            return self.local_codes
        return f"{self.local_codes}:{_q(system_id)}"  # a named system we do not know

    def _cc(self, seg: Any, field: int) -> dict[str, Any] | None:
        rs = reps(seg, field)
        return self._cc_rep(rs[0]) if rs else None

    def _cc_rep(self, r: Any) -> dict[str, Any] | None:
        """CE/CWE: code ^ text ^ system ^ alt code ^ alt text ^ alt system (^ ... ^ original text)."""
        code, text, system, alt, alt_text, alt_system, _, _, original = components(r, 9)
        if code and not _CODE.fullmatch(code):  # a FHIR code has no outer or double whitespace
            code = " ".join(code.split())
        if alt and not _CODE.fullmatch(alt):
            alt = " ".join(alt.split())
        codings = []
        if code:
            c = {"system": self._system(system), "code": code}
            if text:
                c["display"] = text
            codings.append(c)
        if alt:
            c = {"system": self._system(alt_system), "code": alt}
            if alt_text:
                c["display"] = alt_text
            codings.append(c)
        cc: dict[str, Any] = {}
        if codings:
            cc["coding"] = codings
        original = original or text or alt_text
        if original:
            cc["text"] = original
        return cc or None
