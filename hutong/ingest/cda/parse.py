"""Reading a WS/T 500 document: safe XML parsing, the CDA R2 header, CDA data types.

Safety (documents arrive from hundreds of institutions' systems): the parser
never touches the network, never resolves or loads entities or DTDs, keeps
libxml2's size limits (``huge_tree=False``), and any document with a
``<!DOCTYPE`` is rejected outright (``cda-dtd``) before or after parsing, so a
"billion laughs" or an XXE ``file:///etc/passwd`` entity is refused, never
expanded.  Documents are bounded by :data:`MAX_DOCUMENT_BYTES`.

Header validation follows CDA R2 (HL7 CDA R2 §4.2, the header) as WS/T 500
constrains it (WS/T 500.n §5 文档头规范): realmCode CN; typeId
2.16.840.1.113883.1.3 with POCD_HD000040 (the CDA R2 hierarchical description)
or POCD_MT000040 (what every WS/T 500 sample we found carries: bzrrr/cda,
HenrySomke/ConvertServer templates); templateId; id; code under 2.16.4 of the
national arc; title; effectiveTime; confidentialityCode; languageCode zh-CN;
recordTarget/patientRole; author/assignedAuthor; custodian with the institution
identifier (root 2.16.156.10011.1.5).  Every problem is collected, so one
rejection lists every missing or malformed header element with its XPath.

lxml ships without type information (no ``lxml-stubs`` here): :class:`Node`
is the one typed wrapper every other module reads the tree through.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lxml import etree

from hutong.ingest.cda.doctypes import requires_gender
from hutong.ingest.cda.errors import CdaError as CdaError  # re-exported: callers catch parse.CdaError

NS = "urn:hl7-org:v3"
_XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
MAX_DOCUMENT_BYTES = 32 * 1024 * 1024

CDA_TYPE_ID_ROOT = "2.16.840.1.113883.1.3"
CDA_TYPE_ID_EXTENSIONS = frozenset({"POCD_HD000040", "POCD_MT000040"})
DOCTYPE_CODE_SYSTEM = "2.16.156.10011.2.4"
DOCUMENT_ID_ROOT = "2.16.156.10011.1.1"      # 文档流水号: the extension is the id
ORGANIZATION_ROOT = "2.16.156.10011.1.5"     # 医疗卫生机构标识 (custodian, organisations)
AUTHOR_ROOT = "2.16.156.10011.1.7"           # 文档创作者标识
GB_SEX_OID = "2.16.156.10011.2.3.3.4"        # GB/T 2261.1
GB_SEX_CODES = frozenset({"0", "1", "2", "9"})
# patientRole/id roots that WS/T 500 puts beside the patient's identifiers but that name
# something else: 文档流水号, 病理号, 标本编号, 病房/病床/科室/病区, 电子申请单, 检查/检验报告单号.
NOT_PATIENT_ID_ROOTS = frozenset({
    "2.16.156.10011.1.1", "2.16.156.10011.1.8", "2.16.156.10011.1.14", "2.16.156.10011.1.21",
    "2.16.156.10011.1.22", "2.16.156.10011.1.26", "2.16.156.10011.1.27", "2.16.156.10011.1.24",
    "2.16.156.10011.1.32", "2.16.156.10011.1.33",
})
CHINA_OFFSET = "+08:00"  # WS/T 500 timestamps carry no zone in practice; China keeps one (UTC+8)


# ----------------------------------------------------------------- the tree

_CLARK: dict[str, str] = {}


def _clark(path: str) -> str:
    """'a/b' -> '{urn:hl7-org:v3}a/{urn:hl7-org:v3}b' (cached: paths are literals)."""
    hit = _CLARK.get(path)
    if hit is None:
        hit = "/".join(p if p in (".", "..", "*") else f"{{{NS}}}{p}" for p in path.split("/"))
        _CLARK[path] = hit
    return hit


class Node:
    """A CDA element (urn:hl7-org:v3 namespace): typed access for the mapping code."""

    __slots__ = ("_e",)

    def __init__(self, element: Any) -> None:
        self._e = element

    @property
    def name(self) -> str:
        return str(etree.QName(self._e).localname)

    def first(self, path: str) -> Node | None:
        """The first element at ``path`` ('a/b/c', local names in the CDA namespace)."""
        if "/" in path:
            e = self._e.find(_clark(path))
        else:  # one step, the common case: lxml's C-level child filter beats path matching
            e = next(self._e.iterchildren(_clark(path)), None)
        return None if e is None else Node(e)

    def all(self, path: str) -> list[Node]:
        return [Node(e) for e in self._e.iterfind(_clark(path))]

    def elements(self) -> Iterator[Node]:
        """Child elements in the CDA namespace (comments and foreign elements skipped)."""
        for e in self._e:
            if isinstance(e.tag, str) and e.tag.startswith("{" + NS + "}"):
                yield Node(e)

    def attr(self, name: str) -> str | None:
        """An attribute, stripped; None when absent or blank."""
        v = self._e.get(name)
        if v is None:
            return None
        v = str(v).strip()
        return v or None

    def at(self, path: str, name: str) -> str | None:
        """Attribute ``name`` of the element at ``path``."""
        n = self.first(path)
        return None if n is None else n.attr(name)

    @property
    def text(self) -> str:
        """All text inside, whitespace-collapsed."""
        return " ".join("".join(str(t) for t in self._e.itertext()).split())

    def text_at(self, path: str) -> str:
        n = self.first(path)
        return "" if n is None else n.text

    @property
    def xsi_type(self) -> str | None:
        v = self._e.get(_XSI_TYPE)
        return None if v is None else str(v).rpartition(":")[2].strip() or None

    @property
    def null(self) -> bool:
        return self._e.get("nullFlavor") is not None

    def xpath(self) -> str:
        """A readable absolute path ('/ClinicalDocument/component/structuredBody/component[2]/section'),
        for error messages."""
        parts: list[str] = []
        e = self._e
        while e is not None:
            parent = e.getparent()
            local = str(etree.QName(e).localname)
            if parent is None:
                parts.append(local)
            else:
                same = [s for s in parent if s.tag == e.tag]
                parts.append(local if len(same) == 1 else f"{local}[{same.index(e) + 1}]")
            e = parent
        return "/" + "/".join(reversed(parts))


_local = threading.local()


def _parser() -> Any:
    # lxml parsers are not shared between threads; one per thread.
    p = getattr(_local, "parser", None)
    if p is None:
        p = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, load_dtd=False,
                            dtd_validation=False, collect_ids=False)
        _local.parser = p
    return p


# The DOCTYPE prefix in the encodings a declaration-less or declared document may use.
_DOCTYPE_MARKS = (b"<!DOCTYPE", "<!DOCTYPE".encode("utf-16-le"), "<!DOCTYPE".encode("utf-16-be"))


def parse_xml(xml: bytes) -> Node:
    """Parse ``xml`` safely into its ``ClinicalDocument`` root, or raise CdaError."""
    if not isinstance(xml, bytes | bytearray | memoryview):
        raise CdaError("cda-xml", "/: the document must be bytes as received")
    data = bytes(xml)
    if not data or data.isspace():
        raise CdaError("cda-xml", "/: empty document")
    if len(data) > MAX_DOCUMENT_BYTES:
        raise CdaError("cda-xml", f"/: document of {len(data)} bytes exceeds {MAX_DOCUMENT_BYTES}")
    if any(m in data for m in _DOCTYPE_MARKS):
        raise CdaError("cda-dtd", "/: documents with a DOCTYPE (DTD, entity declarations) are refused")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as e:
        raise CdaError("cda-xml", f"/: not well-formed XML: {str(e)[:200]}") from None
    except ValueError as e:  # e.g. an unsupported encoding declaration
        raise CdaError("cda-xml", f"/: not readable XML: {str(e)[:200]}") from None
    info = root.getroottree().docinfo
    if info.doctype or info.internalDTD is not None or info.externalDTD is not None:
        raise CdaError("cda-dtd", "/: documents with a DOCTYPE (DTD, entity declarations) are refused")
    if root.tag != f"{{{NS}}}ClinicalDocument":
        raise CdaError("cda-xml", f"/{etree.QName(root).localname}: the root element must be ClinicalDocument "
                                  f"in namespace {NS}")
    return Node(root)


# ---------------------------------------------------------------- data types

_TS = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,6})?([+-]\d{4})?$")


@dataclass(frozen=True, slots=True)
class Timestamp:
    """A CDA TS as FHIR sees it: ``value`` is a FHIR dateTime at the source's precision."""

    value: str
    has_time: bool

    @property
    def date(self) -> str:
        return self.value[:10]

    @property
    def instant(self) -> str | None:
        """A FHIR instant, when the source is precise to the minute or better."""
        return self.value if self.has_time else None


def timestamp(ts: str) -> Timestamp:
    """CDA TS 'YYYY[MM[DD[HH[MM[SS[.f]]]]]][+ZZZZ]' -> FHIR dateTime.  A time
    without a zone is China time (+08:00); FHIR requires a zone with a time.
    Raises ValueError for anything else, including impossible dates."""
    m = _TS.match(ts.strip())
    if m is None:
        raise ValueError(f"{ts[:40]!r} is not a CDA timestamp (YYYYMMDDHHMMSS)")
    y, mo, d, h, mi, s, frac, tz = m.groups()
    if mo is None:
        datetime(int(y), 1, 1)
        return Timestamp(y, False)
    if d is None:
        datetime(int(y), int(mo), 1)
        return Timestamp(f"{y}-{mo}", False)
    if h is None:
        datetime(int(y), int(mo), int(d))
        return Timestamp(f"{y}-{mo}-{d}", False)
    datetime(int(y), int(mo), int(d), int(h), int(mi or 0), int(s or 0))
    zone = CHINA_OFFSET if tz is None else f"{tz[:3]}:{tz[3:]}"
    if tz is not None and not (int(tz[1:3]) <= 14 and int(tz[3:]) < 60):
        raise ValueError(f"{ts[:40]!r} has an impossible zone offset")
    return Timestamp(f"{y}-{mo}-{d}T{h}:{mi or '00'}:{s or '00'}{frac or ''}{zone}", True)


@dataclass(frozen=True, slots=True)
class InstanceId:
    """A CDA II."""

    root: str
    extension: str | None


@dataclass(frozen=True, slots=True)
class Coded:
    """A CDA CD/CE/CV: code, its code system OID, display name, and free text."""

    code: str | None
    system: str | None
    display: str | None
    text: str | None = None


def instance_id(n: Node | None) -> InstanceId | None:
    if n is None or n.null:
        return None
    root = n.attr("root")
    return None if root is None else InstanceId(root, n.attr("extension"))


def coded(n: Node | None) -> Coded | None:
    """A coded value, or None when it carries neither a code nor text."""
    if n is None:
        return None
    code, display = n.attr("code"), n.attr("displayName")
    orig = n.first("originalText")
    # Some senders write the display as element text (<value xsi:type="CD" code="..">名称</value>);
    # read it only when there is no displayName (it is the costly part on a hot path).
    text = (orig.text if orig is not None else n.text if display is None else "") or None
    if code is None and display is None and text is None:
        return None
    return Coded(code, n.attr("codeSystem"), display, text)


# ------------------------------------------------------------------- header

@dataclass(frozen=True, slots=True)
class Address:
    use: str | None
    state: str | None          # 省(自治区、直辖市)
    city: str | None           # 市(地区、州)
    county: str | None         # 县(区)
    township: str | None       # 乡(镇、街道办事处)
    street: str | None         # 村(街、路、里、弄等)
    house: str | None          # 门牌号码
    postal_code: str | None
    text: str | None           # unstructured text, when the parts are absent


@dataclass(frozen=True, slots=True)
class Telecom:
    use: str | None
    value: str


@dataclass(frozen=True, slots=True)
class PatientHeader:
    role_ids: tuple[InstanceId, ...]     # patientRole/id: 门(急)诊号, 住院号, 健康档案号 ... (and report numbers)
    person_ids: tuple[InstanceId, ...]   # patientRole/patient/id: 身份证
    name: str
    family: str | None
    given: tuple[str, ...]
    gender_code: str | None              # GB/T 2261.1
    gender_display: str | None
    birth: Timestamp | None
    addresses: tuple[Address, ...]
    telecoms: tuple[Telecom, ...]

    @property
    def ids(self) -> tuple[InstanceId, ...]:
        """The patient's own identifiers (report and order numbers left out)."""
        return tuple(i for i in self.role_ids + self.person_ids if i.root not in NOT_PATIENT_ID_ROOTS)


@dataclass(frozen=True, slots=True)
class AuthorHeader:
    id: InstanceId | None
    name: str | None
    time: Timestamp | None
    organization_name: str | None


@dataclass(frozen=True, slots=True)
class Department:
    """One level of encompassingEncounter/location's organisation chain (病床, 病房, 科室, 病区, 机构)."""

    root: str | None
    extension: str | None
    name: str | None


@dataclass(frozen=True, slots=True)
class EncounterHeader:
    ids: tuple[InstanceId, ...]
    code: Coded | None
    start: Timestamp | None
    end: Timestamp | None
    locations: tuple[Department, ...]


@dataclass(frozen=True, slots=True)
class CdaHeader:
    document_id: InstanceId
    type_code: str
    template_ids: tuple[str, ...]
    title: str
    effective: Timestamp
    confidentiality: str
    language: str
    set_id: InstanceId | None
    version: str | None
    patient: PatientHeader
    author: AuthorHeader
    custodian_id: str            # custodian organisation identifier (extension under 2.16.156.10011.1.5)
    custodian_name: str | None
    encounter: EncounterHeader | None


@dataclass
class CdaDocument:
    header: CdaHeader
    root: Node
    body: Node | None   # component/structuredBody


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}")

    def ts(self, n: Node | None, path: str, *, required: bool = False) -> Timestamp | None:
        """The TS at ``n``/@value (or None); malformed -> a problem."""
        v = None if n is None else n.attr("value")
        if v is None:
            if required:
                self.add(path + "/@value", "missing")
            return None
        try:
            return timestamp(v)
        except ValueError as e:
            self.add(path + "/@value", str(e))
            return None


_H = "/ClinicalDocument"


def _address(n: Node) -> Address:
    def part(name: str) -> str | None:
        return n.text_at(name) or None

    parts = ("state", "city", "county", "township", "streetName", "houseNumber", "postalCode",
             "streetAddressLine", "additionalLocator")
    structured = any(n.first(p) is not None for p in parts)
    # ``houserNumber`` is a misspelling seen in public WS/T 500 templates; read it as houseNumber.
    house = part("houseNumber") or part("houserNumber")
    return Address(n.attr("use"), part("state"), part("city"), part("county"), part("township"),
                   part("streetName") or part("streetAddressLine"), house, part("postalCode"),
                   None if structured else (n.text or None))


def _patient(doc: Node, p: _Problems, gender_required: bool = True) -> PatientHeader | None:
    role = doc.first("recordTarget/patientRole")
    if role is None:
        p.add(f"{_H}/recordTarget/patientRole", "missing")
        return None
    base = f"{_H}/recordTarget/patientRole"
    person = role.first("patient")
    if person is None:
        p.add(base + "/patient", "missing")
        return None
    role_ids = tuple(i for i in (instance_id(n) for n in role.all("id")) if i is not None and i.extension)
    person_ids = tuple(i for i in (instance_id(n) for n in person.all("id")) if i is not None and i.extension)
    name_node = person.first("name")
    name = "" if name_node is None else name_node.text
    family = None if name_node is None else (name_node.text_at("family") or None)
    given = () if name_node is None else tuple(g.text for g in name_node.all("given") if g.text)
    if not name:
        p.add(base + "/patient/name", "missing (患者姓名)")
    g = person.first("administrativeGenderCode")
    gender = None if g is None else g.attr("code")
    if gender is None:
        if gender_required:
            p.add(base + "/patient/administrativeGenderCode/@code", "missing (GB/T 2261.1 性别代码)")
    elif gender not in GB_SEX_CODES:
        p.add(base + "/patient/administrativeGenderCode/@code", f"{gender[:10]!r} is not a GB/T 2261.1 code "
                                                               "(0, 1, 2, 9)")
    elif g is not None and g.attr("codeSystem") not in (None, GB_SEX_OID):
        p.add(base + "/patient/administrativeGenderCode/@codeSystem", f"must be {GB_SEX_OID} (GB/T 2261.1)")
    birth = p.ts(person.first("birthTime"), base + "/patient/birthTime")
    telecoms = tuple(Telecom(t.attr("use"), v) for t in role.all("telecom")
                     if (v := t.attr("value")) is not None and v.strip("-/ ") != "")
    addresses = tuple(_address(a) for a in role.all("addr") if not a.null)
    header = PatientHeader(role_ids, person_ids, name, family, given, gender,
                           None if g is None else g.attr("displayName"), birth, addresses, telecoms)
    if not header.ids:
        p.add(base + "/id", "no patient identifier with an extension (门(急)诊号, 住院号, 身份证号 ...)")
    return header


def _author(doc: Node, p: _Problems) -> AuthorHeader | None:
    author = doc.first("author")
    assigned = None if author is None else author.first("assignedAuthor")
    if author is None or assigned is None:
        p.add(f"{_H}/author/assignedAuthor", "missing (文档创作者)")
        return None
    time = p.ts(author.first("time"), f"{_H}/author/time")
    aid = instance_id(assigned.first("id"))
    if aid is not None and aid.extension is None:
        aid = None
    name = assigned.text_at("assignedPerson/name") or None
    if aid is None and name is None:
        p.add(f"{_H}/author/assignedAuthor", "neither id (root 2.16.156.10011.1.7) nor assignedPerson/name")
    org = assigned.text_at("representedOrganization/name") or None
    return AuthorHeader(aid, name, time, org)


def _departments(enc: Node) -> tuple[Department, ...]:
    """Walk location/healthCareFacility/serviceProviderOrganization/asOrganizationPartOf/wholeOrganization...,
    innermost (病床) first, as WS/T 500 nests them."""
    out: list[Department] = []
    n = enc.first("location/healthCareFacility/serviceProviderOrganization")
    depth = 0
    while n is not None and depth < 10:
        w = n.first("asOrganizationPartOf/wholeOrganization")
        if w is None:
            break
        i = w.first("id")
        out.append(Department(None if i is None else i.attr("root"), None if i is None else i.attr("extension"),
                              w.text_at("name") or None))
        n, depth = w, depth + 1
    return tuple(out)


def _encounter(doc: Node, p: _Problems) -> EncounterHeader | None:
    enc = doc.first("componentOf/encompassingEncounter")
    if enc is None:
        return None
    base = f"{_H}/componentOf/encompassingEncounter/effectiveTime"
    et = enc.first("effectiveTime")
    start = end = None
    if et is not None and not et.null:
        if et.attr("value") is not None:
            start = p.ts(et, base)
        else:
            start = p.ts(et.first("low"), base + "/low")
            end = p.ts(et.first("high"), base + "/high")
    ids = tuple(i for i in (instance_id(n) for n in enc.all("id")) if i is not None)
    return EncounterHeader(ids, coded(enc.first("code")), start, end, _departments(enc))


def read_header(doc: Node) -> CdaHeader:
    """Validate and read the header of the ``ClinicalDocument`` at ``doc``; one
    CdaError("cda-header") lists every problem."""
    p = _Problems()
    if doc.at("realmCode", "code") != "CN":
        p.add(f"{_H}/realmCode/@code", "must be CN")
    tid = doc.first("typeId")
    if tid is None or tid.attr("root") != CDA_TYPE_ID_ROOT:
        p.add(f"{_H}/typeId/@root", f"must be {CDA_TYPE_ID_ROOT}")
    elif tid.attr("extension") not in CDA_TYPE_ID_EXTENSIONS:
        p.add(f"{_H}/typeId/@extension", "must be POCD_HD000040 (or POCD_MT000040)")
    template_ids = tuple(r for t in doc.all("templateId") if (r := t.attr("root")) is not None)
    if not template_ids:
        p.add(f"{_H}/templateId/@root", "missing (WS/T 500 document template)")
    did = instance_id(doc.first("id"))
    if did is None:
        p.add(f"{_H}/id/@root", "missing (文档标识)")
    elif did.root == DOCUMENT_ID_ROOT and did.extension is None:
        p.add(f"{_H}/id/@extension", f"missing: under root {DOCUMENT_ID_ROOT} the extension is the document id")
    code_node = doc.first("code")
    type_code = None if code_node is None else code_node.attr("code")
    if type_code is None:
        p.add(f"{_H}/code/@code", "missing (文档类型 C0001-C0053)")
    elif code_node is not None and code_node.attr("codeSystem") != DOCTYPE_CODE_SYSTEM:
        p.add(f"{_H}/code/@codeSystem", f"must be {DOCTYPE_CODE_SYSTEM} (卫生信息共享文档规范编码体系)")
    title = doc.text_at("title")
    if not title:
        p.add(f"{_H}/title", "missing")
    effective = p.ts(doc.first("effectiveTime"), f"{_H}/effectiveTime", required=True)
    confidentiality = doc.at("confidentialityCode", "code")
    if confidentiality is None:
        p.add(f"{_H}/confidentialityCode/@code", "missing")
    language = doc.at("languageCode", "code")
    if language != "zh-CN":
        p.add(f"{_H}/languageCode/@code", "must be zh-CN")
    # Which header elements are required depends on the document type (hutong.ingest.cda.doctypes).
    patient = _patient(doc, p, requires_gender(type_code, template_ids))
    author = _author(doc, p)
    org = doc.first("custodian/assignedCustodian/representedCustodianOrganization")
    custodian_id = None
    if org is None:
        p.add(f"{_H}/custodian/assignedCustodian/representedCustodianOrganization", "missing (保管机构)")
    else:
        cid = instance_id(org.first("id"))
        if cid is None or cid.root != ORGANIZATION_ROOT or not cid.extension:
            p.add(f"{_H}/custodian/assignedCustodian/representedCustodianOrganization/id",
                  f"needs root {ORGANIZATION_ROOT} and the institution identifier as extension")
        else:
            custodian_id = cid.extension
    encounter = _encounter(doc, p)
    if p.items:
        n = len(p.items)
        raise CdaError("cda-header", f"{n} header problem{'s' if n > 1 else ''}: " + "; ".join(p.items), p.items)
    assert did is not None and type_code is not None and effective is not None and confidentiality is not None
    assert patient is not None and author is not None and custodian_id is not None and language is not None
    return CdaHeader(did, type_code, template_ids, title, effective, confidentiality, language,
                     instance_id(doc.first("setId")), doc.at("versionNumber", "value"), patient, author,
                     custodian_id, None if org is None else (org.text_at("name") or None), encounter)


def parse_document(xml: bytes) -> CdaDocument:
    """Parse (safely) and validate the header of one WS/T 500 document."""
    root = parse_xml(xml)
    header = read_header(root)
    return CdaDocument(header, root, root.first("component/structuredBody"))


def sections(body: Node | None) -> Iterator[Node]:
    """Every section of the structured body, nested ones included (CDA R2 §4.3.5)."""
    if body is None:
        return
    stack = [s for c in body.all("component") if (s := c.first("section")) is not None]
    stack.reverse()
    while stack:
        s = stack.pop()
        yield s
        nested = [x for c in s.all("component") if (x := c.first("section")) is not None]
        stack.extend(reversed(nested))


def stray_sections(root: Node) -> int:
    """How many sections sit outside ``component/structuredBody`` (CDA R2 §4.3: a
    structured body's sections are in structuredBody/component/section); such a
    document is stored, but nothing is extracted from them."""
    body = f"{{{NS}}}structuredBody"
    n = 0
    for e in root._e.iter(f"{{{NS}}}section"):
        if not any(a.tag == body for a in e.iterancestors()):
            n += 1
    return n


def content_key(root: Node) -> bytes:
    """What makes two deliveries the same document: its canonical XML (C14N 2.0, text
    stripped of surrounding whitespace), SHA-256.  Attribute order, namespace prefixes,
    the XML declaration and indentation do not count."""
    return hashlib.sha256(etree.canonicalize(root._e, strip_text=True).encode()).digest()


def section_code(section: Node) -> str | None:
    return section.at("code", "code")
