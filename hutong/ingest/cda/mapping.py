"""A WS/T 500 document -> one FHIR R4 transaction Bundle (a pure function).

Entries, all ``POST`` with ``urn:uuid`` fullUrls that are stable for a given
document and sender (bundle.html#transaction):

* Patient (recordTarget), conditional on the institution's MRN
  (``mrn_system(sender.code)``: 门(急)诊号, else 住院号, else 病案号), else the
  身份证 number, else 健康卡 / 健康档案号 (patient.html);
* Practitioner (author), conditional on the author's id scoped to the
  institution (see :func:`staff_system`), also carrying the national
  2.16.156.10011.1.7 identifier;
* Encounter, when the header has componentOf/encompassingEncounter or the
  type is one of the three visit documents, conditional on its visit number
  (encompassingEncounter/id) under ``visit_system(sender.code)``;
* Binary: the document's exact bytes (contentType ``application/hl7-cda+xml``),
  conditional on ``_source`` (one per document), ``securityContext`` the Patient;
* DocumentReference (MHD-style, documentreference.html), conditional on the
  document id under ``document_system(sender.code)``;
* for C0002, C0006, C0007, C0032 and C0053 the structured resources of
  :mod:`hutong.ingest.cda.extract`, each conditional on a document-scoped id.

Every entry is a conditional create, so the same document sent twice changes
nothing.  Every resource carries ``meta.source`` = ``cda:<sender>#<document id>``.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from hutong.ingest.cda.body import Context, identifier_query, new_uuid
from hutong.ingest.cda.doctypes import WS445_PARTS, DocType, recognise
from hutong.ingest.cda.extract import extract
from hutong.ingest.cda.parse import (
    DOCUMENT_ID_ROOT,
    Address,
    CdaDocument,
    CdaError,
    CdaHeader,
    InstanceId,
    Telecom,
    content_key,
    parse_document,
    stray_sections,
)
from hutong.systems import (
    AUTHOR,
    CODESYSTEM_BASE,
    EXT_BASE,
    GB_SEX,
    HEALTH_CARD,
    HEALTH_RECORD,
    ID_CARD,
    WST500_DOCTYPE,
    document_system,
    mrn_system,
    visit_system,
)

CDA_CONTENT_TYPE = "application/hl7-cda+xml"
GB_SEX_EXT = EXT_BASE + "gb-sex"  # as hutong.synth.patients writes it
WS445_PART_SYSTEM = CODESYSTEM_BASE + "ws445-part"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
V3_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
V3_CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
VISIT_TYPES = frozenset({"C0002", "C0032", "C0053"})  # an Encounter even without encompassingEncounter
STAFF_PREFIX = "urn:hutong:staff:"

_OID = re.compile(r"^[0-2](\.(0|[1-9]\d*))+$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def staff_system(institution_code: str) -> str:
    """Identifier system of one institution's staff numbers.

    WS/T 500 authors are identified under root 2.16.156.10011.1.7 with the
    hospital's own staff number as extension ('0231' in two hospitals is two
    people), so the conditional create is scoped like MRNs and visits are."""
    return STAFF_PREFIX + institution_code


@dataclass(frozen=True)
class Sender:
    code: str            # the sending institution's registered identifier (统一社会信用代码)
    organization_id: str  # its Organization resource id


@dataclass
class CdaMapped:
    bundle: dict[str, Any]        # FHIR R4 transaction Bundle
    doc_type: DocType
    event_time: str | None        # the clinical time: encompassingEncounter effectiveTime, else the document's
    document_id: str              # id extension (root/extension when the root is not 2.16.156.10011.1.1)
    patient_identifier: dict[str, str] | None  # {"system", "value"} the Patient is matched on
    content: bytes = b""          # parse.content_key: tells a resend from another document under the same id
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (HT code, text): stored, but ...


# patientRole/id and patient/id roots -> (system or None for the institution MRN system,
# identifier type text, HL7 v2 0203 code, Identifier.use); ranked for the conditional create.
_PATIENT_IDS: dict[str, tuple[str | None, str, str | None, str]] = {
    "2.16.156.10011.1.11": (None, "门(急)诊号", "MR", "usual"),
    "2.16.156.10011.1.12": (None, "住院号", "MR", "secondary"),
    "2.16.156.10011.1.13": (None, "病案号", "MR", "secondary"),
    "2.16.156.10011.1.3": (ID_CARD, "居民身份证", "NI", "official"),
    "2.16.156.10011.1.19": (HEALTH_CARD, "居民健康卡", "HC", "secondary"),
    "2.16.156.10011.1.2": (HEALTH_RECORD, "健康档案号", None, "secondary"),
}
_RANK = {root: i for i, root in enumerate(_PATIENT_IDS)}
_GENDER = {"1": "male", "2": "female", "0": "unknown", "9": "unknown"}
_GENDER_DISPLAY = {"0": "未知的性别", "1": "男性", "2": "女性", "9": "未说明的性别"}
_ADDRESS_USE = {"H": "home", "HP": "home", "HV": "home", "WP": "work", "TMP": "temp", "OLD": "old"}
_TELECOM_USE = {"MP": "mobile", "H": "home", "HP": "home", "WP": "work", "TMP": "temp"}
_ENCOUNTER_CLASSES = {"AMB": "ambulatory", "IMP": "inpatient encounter", "EMER": "emergency",
                      "OBSENC": "observation encounter", "SS": "short stay", "HH": "home health",
                      "VR": "virtual", "ACUTE": "inpatient acute", "NONAC": "inpatient non-acute",
                      "PRENC": "pre-admission", "FLD": "field"}


def document_id(i: InstanceId) -> str:
    """The document's id as the institution's document number: the extension under
    WS/T 500's 文档流水号 root, root^extension under another root, else the root."""
    if i.extension is None:
        return i.root
    return i.extension if i.root == DOCUMENT_ID_ROOT else f"{i.root}^{i.extension}"


def _ii_system(root: str) -> str:
    if _OID.match(root):
        return "urn:oid:" + root
    if _UUID.match(root):
        return "urn:uuid:" + root.lower()
    return "urn:hutong:ii:" + quote(root, safe="")


def to_bundle(xml: bytes, sender: Sender) -> CdaMapped:
    """Map one WS/T 500 document received from ``sender`` (raises CdaError)."""
    doc = parse_document(xml)
    h = doc.header
    doc_type = recognise(h.type_code, list(h.template_ids))
    if h.custodian_id != sender.code:
        raise CdaError("cda-sender", "/ClinicalDocument/custodian/assignedCustodian/representedCustodianOrganization"
                                     f"/id/@extension {h.custodian_id[:40]!r} is not the sending institution "
                                     f"{sender.code!r}")
    return _Builder(doc, doc_type, sender, bytes(xml)).build()


class _Builder:
    def __init__(self, doc: CdaDocument, doc_type: DocType, sender: Sender, raw: bytes) -> None:
        self.doc, self.h, self.doc_type, self.sender, self.raw = doc, doc.header, doc_type, sender, raw
        self.document_id = document_id(self.h.document_id)
        self.source = f"cda:{quote(sender.code, safe='')}#{quote(self.document_id, safe='')}"
        self.namespace = f"{sender.code}|{self.document_id}"
        self.org_ref = f"Organization/{sender.organization_id}"
        self.entries: list[dict[str, Any]] = []

    def add(self, resource: dict[str, Any], if_none_exist: str) -> str:
        rtype = resource["resourceType"]
        full_url = new_uuid(self.namespace, f"{rtype}?{if_none_exist}")
        self.entries.append({"fullUrl": full_url, "resource": resource,
                             "request": {"method": "POST", "url": rtype, "ifNoneExist": if_none_exist}})
        return full_url

    def build(self) -> CdaMapped:
        h = self.h
        patient, patient_ident = self.patient()
        patient_ref = self.add(patient, identifier_query(patient_ident["system"], patient_ident["value"]))
        practitioner = self.practitioner()
        encounter, encounter_ref = self.encounter(patient_ref, practitioner)
        binary_ref = self.add({"resourceType": "Binary", "meta": {"source": self.source},
                               "contentType": CDA_CONTENT_TYPE, "securityContext": {"reference": patient_ref},
                               "data": base64.b64encode(self.raw).decode("ascii")},
                              "_source=" + quote(self.source, safe=":/"))
        docref, docref_query = self.document_reference(patient_ref, practitioner, encounter_ref, binary_ref)
        docref_ref = self.add(docref, docref_query)
        if self.doc_type.extracted:
            extract(Context(
                doc=self.doc, doc_type=self.doc_type, sender_code=self.sender.code, document_id=self.document_id,
                source=self.source, document_system=document_system(self.sender.code),
                organization_ref=self.org_ref, patient_ref=patient_ref, docref_ref=docref_ref,
                practitioner=practitioner, encounter=encounter, encounter_ref=encounter_ref,
                add=self.add))
        enc = h.encounter
        event = enc.start if enc is not None and enc.start is not None else h.effective
        warnings = []
        stray = stray_sections(self.doc.root)
        if stray:
            warnings.append(("HT-0264", f"{stray} section{'s' if stray > 1 else ''} outside "
                                        "/ClinicalDocument/component/structuredBody (CDA R2 §4.3): the document "
                                        "is stored, nothing was extracted from them"))
        return CdaMapped(
            bundle={"resourceType": "Bundle", "type": "transaction", "entry": self.entries},
            doc_type=self.doc_type, event_time=event.value, document_id=self.document_id,
            patient_identifier=patient_ident, content=content_key(self.doc.root), warnings=warnings)

    # ------------------------------------------------------------ Patient
    def patient(self) -> tuple[dict[str, Any], dict[str, str]]:
        p = self.h.patient
        mrn = mrn_system(self.sender.code)
        idents: list[dict[str, Any]] = []
        ranked: list[tuple[int, dict[str, str]]] = []
        seen: set[tuple[str, str]] = set()
        for i in p.ids:
            value = (i.extension or "").strip()
            if i.root == "2.16.156.10011.1.3":
                value = value.upper()  # the check character 'x' of GB 11643 is written 'X'
            known = _PATIENT_IDS.get(i.root)
            ident: dict[str, Any]
            if known is None:
                system, ident = _ii_system(i.root), {"assigner": {"reference": self.org_ref}}
                rank = len(_RANK)
            else:
                system_or_none, text, v2, use = known
                system = system_or_none or mrn
                type_: dict[str, Any] = {"text": text}
                if v2 is not None:
                    type_["coding"] = [{"system": V2_0203, "code": v2}]
                ident = {"use": use, "type": type_}
                rank = _RANK[i.root]
            if not value or (system, value) in seen:
                continue
            seen.add((system, value))
            idents.append({**ident, "system": system, "value": value})
            ranked.append((rank, {"system": system, "value": value}))
        best = min(ranked, key=lambda r: r[0])[1]
        res: dict[str, Any] = {"resourceType": "Patient", "meta": {"source": self.source}}
        if p.gender_code is not None:
            res["extension"] = [{"url": GB_SEX_EXT, "valueCoding": {
                "system": GB_SEX, "code": p.gender_code,
                "display": _GENDER_DISPLAY.get(p.gender_code, p.gender_display or "")}}]
        res["identifier"] = idents
        name: dict[str, Any] = {"use": "official", "text": p.name}
        if p.family:
            name["family"] = p.family
        if p.given:
            name["given"] = list(p.given)
        res["name"] = [name]
        telecom = [t for t in (_telecom(x) for x in p.telecoms) if t is not None]
        if telecom:
            res["telecom"] = telecom
        if p.gender_code in _GENDER:
            res["gender"] = _GENDER[p.gender_code]
        if p.birth is not None:
            res["birthDate"] = p.birth.date
        addresses = [a for a in (_address(x) for x in p.addresses) if a is not None]
        if addresses:
            res["address"] = addresses
        res["managingOrganization"] = {"reference": self.org_ref}
        return res, best

    # ------------------------------------------------------------ Practitioner
    def practitioner(self) -> dict[str, str] | None:
        a = self.h.author
        if a.id is None or a.id.extension is None:
            return {"display": a.name} if a.name else None
        staff = staff_system(self.sender.code)
        res: dict[str, Any] = {
            "resourceType": "Practitioner", "meta": {"source": self.source},
            "identifier": [{"system": staff, "value": a.id.extension},
                           {"system": AUTHOR if a.id.root == "2.16.156.10011.1.7" else _ii_system(a.id.root),
                            "value": a.id.extension, "assigner": {"reference": self.org_ref}}]}
        if a.name:
            res["name"] = [{"text": a.name}]
        ref = self.add(res, identifier_query(staff, a.id.extension))
        out = {"reference": ref}
        if a.name:
            out["display"] = a.name
        return out

    # ------------------------------------------------------------ Encounter
    def encounter(self, patient_ref: str, practitioner: dict[str, str] | None
                  ) -> tuple[dict[str, Any] | None, str | None]:
        h, enc = self.h, self.h.encounter
        if enc is None and self.doc_type.code not in VISIT_TYPES:
            return None, None
        visit = next((i for i in (enc.ids if enc is not None else ()) if i.extension), None)
        res: dict[str, Any] = {"resourceType": "Encounter", "meta": {"source": self.source}}
        if visit is not None:
            system, value = visit_system(self.sender.code), visit.extension or ""
            res["identifier"] = [{"system": system, "value": value}]
        else:  # no visit number: the visit as this document describes it
            system, value = document_system(self.sender.code), f"{self.document_id}#Encounter-1"
            res["identifier"] = [{"system": system, "value": value}]
        start = enc.start if enc is not None else None
        end = enc.end if enc is not None else None
        if start is None and self.doc_type.code == "C0002" and h.author.time is not None:
            start = h.author.time  # 门(急)诊病历: author/time is 就诊日期时间
        finished = end is not None or self.doc_type.code in VISIT_TYPES
        res["status"] = "finished" if finished else "unknown"
        res["class"] = self.encounter_class()
        res["subject"] = {"reference": patient_ref}
        if practitioner is not None:
            res["participant"] = [{"type": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "ATND",
                "display": "attender"}]}], "individual": practitioner}]
        period = {k: ts.value for k, ts in (("start", start), ("end", end)) if ts is not None}
        if period:
            res["period"] = period
        dept = self.department()
        if dept:
            res["location"] = [{"location": {"display": dept}}]
        res["serviceProvider"] = {"reference": self.org_ref}
        return res, self.add(res, identifier_query(system, value))

    def encounter_class(self) -> dict[str, str]:
        enc = self.h.encounter
        code = enc.code.code if enc is not None and enc.code is not None else None
        if code not in _ENCOUNTER_CLASSES or (enc is not None and enc.code is not None
                                              and enc.code.system not in (None, "2.16.840.1.113883.5.4")):
            code = self.doc_type.setting
        if code is None:
            roots = {i.root for i in self.h.patient.role_ids}
            code = "IMP" if "2.16.156.10011.1.12" in roots else "AMB" if "2.16.156.10011.1.11" in roots else None
        if code is None:
            return {"system": "http://terminology.hl7.org/CodeSystem/v3-NullFlavor", "code": "UNK",
                    "display": "unknown"}
        return {"system": V3_ACT_CODE, "code": code, "display": _ENCOUNTER_CLASSES[code]}

    def department(self) -> str | None:
        """科室: encompassingEncounter's location chain (root 2.16.156.10011.1.26), else the
        patientRole/providerOrganization that 门(急)诊病历 uses for it."""
        enc = self.h.encounter
        for d in enc.locations if enc is not None else ():
            if d.root == "2.16.156.10011.1.26" and d.name:
                return d.name
        org = self.doc.root.first("recordTarget/patientRole/providerOrganization")
        if org is not None and org.at("id", "root") == "2.16.156.10011.1.26":
            return org.text_at("name") or None
        return None

    # ------------------------------------------------------------ DocumentReference
    def document_reference(self, patient_ref: str, practitioner: dict[str, str] | None,
                           encounter_ref: str | None, binary_ref: str) -> tuple[dict[str, Any], str]:
        h, t = self.h, self.doc_type
        system = document_system(self.sender.code)
        did = h.document_id
        master = ({"system": _ii_system(did.root), "value": did.extension} if did.extension
                  else {"system": "urn:ietf:rfc:3986", "value": _ii_system(did.root)})
        res: dict[str, Any] = {
            "resourceType": "DocumentReference", "meta": {"source": self.source},
            "masterIdentifier": master,
            "identifier": [{"system": system, "value": self.document_id}],
            "status": "current",
            "type": {"coding": [{"system": WST500_DOCTYPE, "code": t.code, "display": t.title}],
                     "text": h.title or t.title},
            "category": [{"coding": [{"system": WS445_PART_SYSTEM, "code": t.part, "display": WS445_PARTS[t.part]}]}],
            "subject": {"reference": patient_ref},
        }
        if h.effective.instant is not None:
            res["date"] = h.effective.instant
        if practitioner is not None:
            res["author"] = [practitioner]
        res["custodian"] = {"reference": self.org_ref}
        res["description"] = h.title
        res["securityLabel"] = [{"coding": [{"system": V3_CONFIDENTIALITY, "code": h.confidentiality}]}]
        res["content"] = [{"attachment": {
            "contentType": CDA_CONTENT_TYPE, "language": h.language, "url": binary_ref, "size": len(self.raw),
            "hash": base64.b64encode(hashlib.sha1(self.raw).digest()).decode("ascii"),  # noqa: S324 - Attachment.hash is SHA-1
            "title": h.title, "creation": h.effective.value}}]
        context = _context(h, encounter_ref, patient_ref, self.department())
        if context:
            res["context"] = context
        return res, identifier_query(system, self.document_id)


def _context(h: CdaHeader, encounter_ref: str | None, patient_ref: str, dept: str | None) -> dict[str, Any]:
    ctx: dict[str, Any] = {}
    if encounter_ref is not None:
        ctx["encounter"] = [{"reference": encounter_ref}]
    enc = h.encounter
    if enc is not None:
        period = {k: ts.value for k, ts in (("start", enc.start), ("end", enc.end)) if ts is not None}
        if period:
            ctx["period"] = period
    if dept:
        ctx["practiceSetting"] = {"text": dept}
    ctx["sourcePatientInfo"] = {"reference": patient_ref}
    return ctx


def _telecom(t: Telecom) -> dict[str, Any] | None:
    v = t.value.strip()
    system = "phone"
    for prefix, sys in (("tel:", "phone"), ("mailto:", "email"), ("fax:", "fax")):
        if v.lower().startswith(prefix):
            v, system = v[len(prefix):].strip(), sys
            break
    else:
        if "@" in v:
            system = "email"
    if not v:
        return None
    out: dict[str, Any] = {"system": system, "value": v}
    use = _TELECOM_USE.get(t.use or "")
    if use is not None:
        out["use"] = use
    return out


def _address(a: Address) -> dict[str, Any] | None:
    parts = [a.state, a.city, a.county, a.township, a.street, a.house]
    text = "".join(p for p in parts if p) or a.text
    if not text:
        return None
    out: dict[str, Any] = {}
    use = _ADDRESS_USE.get(a.use or "")
    if use is not None:
        out["use"] = use
    out["text"] = text
    line = "".join(p for p in (a.township, a.street, a.house) if p)
    if line:
        out["line"] = [line]
    for key, value in (("city", a.city), ("district", a.county), ("state", a.state), ("postalCode", a.postal_code)):
        if value:
            out[key] = value
    if any(parts):
        out["country"] = "CN"
    return out
