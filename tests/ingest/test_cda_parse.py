"""Safe parsing and header validation of WS/T 500 documents (hutong.ingest.cda.parse)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cda_helpers import INVALID, MINIMAL, make_fixtures, read
from lxml import etree

from hutong.ingest.cda import parse
from hutong.ingest.cda.parse import CdaError, parse_document, parse_xml, timestamp

LAB = MINIMAL / "C0007.xml"


def header_error(xml: bytes) -> CdaError:
    with pytest.raises(CdaError) as e:
        parse_document(xml)
    return e.value


def mutate(old: str, new: str) -> bytes:
    data = LAB.read_bytes().decode()
    assert old in data, old
    return data.replace(old, new).encode()


def test_minimal_header_is_read() -> None:
    doc = parse_document(LAB.read_bytes())
    h = doc.header
    assert h.document_id.root == "2.16.156.10011.1.1" and h.document_id.extension == "DOC-C0007-0001"
    assert (h.type_code, h.template_ids, h.title) == ("C0007", ("2.16.156.10011.2.1.1.27",), "检验报告")
    assert h.effective.value == "2024-03-15T10:30:00+08:00" and h.effective.instant == h.effective.value
    assert (h.confidentiality, h.language, h.custodian_id) == ("N", "zh-CN", make_fixtures.SENDER_CODE)
    assert h.patient.name == "李建国" and h.patient.gender_code == "1"
    assert h.patient.birth is not None and h.patient.birth.value == "1985-03-12"
    assert {(i.root, i.extension) for i in h.patient.ids} == {
        ("2.16.156.10011.1.11", "MZ20240001"), ("2.16.156.10011.1.3", make_fixtures.PATIENT_ID)}
    assert h.author.id is not None and (h.author.id.root, h.author.id.extension) == ("2.16.156.10011.1.7", "D0231")
    assert h.author.name == "王芳" and h.encounter is None and doc.body is None


# (what is broken, the replacement, the XPath the error must name)
HEADER_CASES = [
    ("realm", '<realmCode code="CN"/>', '<realmCode code="US"/>', "/ClinicalDocument/realmCode/@code"),
    ("typeId root", 'root="2.16.840.1.113883.1.3"', 'root="2.16.840.1.113883.1.9"', "/ClinicalDocument/typeId/@root"),
    ("typeId extension", "POCD_HD000040", "POCD_IN000040", "/ClinicalDocument/typeId/@extension"),
    ("templateId", '<templateId root="2.16.156.10011.2.1.1.27"/>', "", "/ClinicalDocument/templateId/@root"),
    ("id", '<id root="2.16.156.10011.1.1" extension="DOC-C0007-0001"/>', "", "/ClinicalDocument/id/@root"),
    ("id extension", 'extension="DOC-C0007-0001"', "", "/ClinicalDocument/id/@extension"),
    ("code", 'code="C0007" codeSystem="2.16.156.10011.2.4"', 'codeSystem="2.16.156.10011.2.4"',
     "/ClinicalDocument/code/@code"),
    ("code system", 'codeSystem="2.16.156.10011.2.4"', 'codeSystem="2.16.840.1.113883.6.1"',
     "/ClinicalDocument/code/@codeSystem"),
    ("title", "<title>检验报告</title>", "<title> </title>", "/ClinicalDocument/title"),
    ("effectiveTime", '<effectiveTime value="20240315103000"/>', "<effectiveTime/>",
     "/ClinicalDocument/effectiveTime/@value: missing"),
    ("effectiveTime malformed", '<effectiveTime value="20240315103000"/>', '<effectiveTime value="2024-03-15"/>',
     "/ClinicalDocument/effectiveTime/@value: '2024-03-15' is not a CDA timestamp"),
    ("effectiveTime impossible", '<effectiveTime value="20240315103000"/>', '<effectiveTime value="20240230"/>',
     "/ClinicalDocument/effectiveTime/@value"),
    ("confidentiality", 'confidentialityCode code="N"', "confidentialityCode",
     "/ClinicalDocument/confidentialityCode/@code"),
    ("language", '<languageCode code="zh-CN"/>', '<languageCode code="en-US"/>', "/ClinicalDocument/languageCode/@code"),
    ("recordTarget", "recordTarget", "recordTargetX", "/ClinicalDocument/recordTarget/patientRole: missing"),
    ("patient name", "<name>李建国</name>", "", "/ClinicalDocument/recordTarget/patientRole/patient/name"),
    ("gender", '<administrativeGenderCode code="1"', '<administrativeGenderCode',
     "/ClinicalDocument/recordTarget/patientRole/patient/administrativeGenderCode/@code: missing"),
    ("gender code", '<administrativeGenderCode code="1"', '<administrativeGenderCode code="M"',
     "administrativeGenderCode/@code: 'M' is not a GB/T 2261.1 code"),
    ("gender system", 'codeSystem="2.16.156.10011.2.3.3.4"', 'codeSystem="2.16.840.1.113883.5.1"',
     "administrativeGenderCode/@codeSystem"),
    ("birthTime", '<birthTime value="19850312"/>', '<birthTime value="1985-03-12"/>',
     "/ClinicalDocument/recordTarget/patientRole/patient/birthTime/@value"),
    ("patient ids", 'extension="MZ20240001"', 'extension=""', None),  # the ID number is still there: fine
    ("author", "assignedAuthor", "assignedAuthorX", "/ClinicalDocument/author/assignedAuthor: missing"),
    ("author time", '<time value="20240315103000"/>', '<time value="yesterday"/>',
     "/ClinicalDocument/author/time/@value"),
    ("custodian", "representedCustodianOrganization", "representedCustodianOrganizationX",
     "/ClinicalDocument/custodian/assignedCustodian/representedCustodianOrganization: missing"),
    ("custodian root", 'root="2.16.156.10011.1.5"', 'root="2.16.156.10011.1.50"',
     "/ClinicalDocument/custodian/assignedCustodian/representedCustodianOrganization/id"),
]


@pytest.mark.parametrize(("case", "old", "new", "xpath"), HEADER_CASES, ids=[c[0] for c in HEADER_CASES])
def test_each_header_problem_is_named(case: str, old: str, new: str, xpath: str | None) -> None:
    data = mutate(old, new)
    if xpath is None:
        parse_document(data)
        return
    err = header_error(data)
    assert err.code == "cda-header"
    assert any(p.startswith(xpath) or xpath in p for p in err.problems), err.problems
    assert xpath in err.text


def test_every_problem_is_listed_not_only_the_first() -> None:
    err = header_error(read(INVALID / "many_header_problems.xml"))
    assert err.code == "cda-header"
    assert err.text.startswith("5 header problems: ")
    assert [p.split(":")[0] for p in err.problems] == [
        "/ClinicalDocument/realmCode/@code", "/ClinicalDocument/title", "/ClinicalDocument/effectiveTime/@value",
        "/ClinicalDocument/languageCode/@code", "/ClinicalDocument/author/assignedAuthor"]


def test_no_patient_identifier() -> None:
    data = mutate('extension="MZ20240001"', 'extension=""').decode()
    data = data.replace(f'extension="{make_fixtures.PATIENT_ID}"', 'extension=""')
    err = header_error(data.encode())
    assert "/ClinicalDocument/recordTarget/patientRole/id: no patient identifier" in err.text


def test_report_numbers_are_not_patient_identifiers() -> None:
    data = mutate('<id root="2.16.156.10011.1.11" extension="MZ20240001"/>',
                  '<id root="2.16.156.10011.1.33" extension="LIS001"/>').decode()
    data = data.replace(f'extension="{make_fixtures.PATIENT_ID}"', 'extension=""')
    err = header_error(data.encode())
    assert "no patient identifier" in err.text


def test_missing_custodian_fixture() -> None:
    err = header_error(read(INVALID / "missing_custodian.xml"))
    assert err.code == "cda-header" and "representedCustodianOrganization: missing" in err.text


@pytest.mark.parametrize(("ts", "value", "has_time"), [
    ("2024", "2024", False),
    ("202403", "2024-03", False),
    ("20240315", "2024-03-15", False),
    ("2024031510", "2024-03-15T10:00:00+08:00", True),
    ("202403151030", "2024-03-15T10:30:00+08:00", True),
    ("20240315103005", "2024-03-15T10:30:05+08:00", True),
    ("20240315103005.123", "2024-03-15T10:30:05.123+08:00", True),
    ("20240315103005+0000", "2024-03-15T10:30:05+00:00", True),
    ("20240315103005-0500", "2024-03-15T10:30:05-05:00", True),
])
def test_timestamps(ts: str, value: str, has_time: bool) -> None:
    t = timestamp(ts)
    assert (t.value, t.has_time) == (value, has_time)
    assert t.instant == (value if has_time else None)


@pytest.mark.parametrize("ts", ["", "2024-03-15", "20241315", "20240230", "20240315250000", "2024031510300",
                                "20240315103000+2500", "today"])
def test_bad_timestamps(ts: str) -> None:
    with pytest.raises(ValueError):
        timestamp(ts)


# ---------------------------------------------------------------- XML and attacks

@pytest.mark.parametrize(("name", "code", "fragment"), [
    ("malformed.xml", "cda-xml", "not well-formed XML"),
    ("not_cda.xml", "cda-xml", "/Bundle: the root element must be ClinicalDocument"),
    ("billion_laughs.xml", "cda-dtd", "DOCTYPE"),
    ("xxe_file.xml", "cda-dtd", "DOCTYPE"),
    ("xxe_parameter.xml", "cda-dtd", "DOCTYPE"),
])
def test_bad_xml_is_refused(name: str, code: str, fragment: str) -> None:
    with pytest.raises(CdaError) as e:
        parse_xml(read(INVALID / name))
    assert e.value.code == code and fragment in e.value.text


@pytest.mark.parametrize("data", [b"", b"   \n", b"<ClinicalDocument", b"\xff\xfe\x00garbage"])
def test_empty_or_garbage(data: bytes) -> None:
    with pytest.raises(CdaError) as e:
        parse_xml(data)
    assert e.value.code == "cda-xml"


def test_not_bytes() -> None:
    with pytest.raises(CdaError) as e:
        parse_xml("<ClinicalDocument/>")  # type: ignore[arg-type]
    assert e.value.code == "cda-xml"


def test_too_large() -> None:
    with pytest.raises(CdaError) as e:
        parse_xml(b" " * 10 + b"<a>" + b"x" * parse.MAX_DOCUMENT_BYTES + b"</a>")
    assert e.value.code == "cda-xml" and "exceeds" in e.value.text


def test_wrong_namespace() -> None:
    with pytest.raises(CdaError) as e:
        parse_xml(b"<ClinicalDocument><title>x</title></ClinicalDocument>")
    assert e.value.code == "cda-xml" and "urn:hl7-org:v3" in e.value.text


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_billion_laughs_in_other_encodings(encoding: str) -> None:
    text = read(INVALID / "billion_laughs.xml").decode().replace('encoding="UTF-8"', f'encoding="{encoding}"')
    with pytest.raises(CdaError) as e:
        parse_xml(text.encode(encoding))
    assert e.value.code in ("cda-dtd", "cda-xml")


def test_undeclared_entity_is_not_well_formed() -> None:
    with pytest.raises(CdaError) as e:
        parse_xml(b'<ClinicalDocument xmlns="urn:hl7-org:v3"><title>&xxe;</title></ClinicalDocument>')
    assert e.value.code == "cda-xml"


def test_the_parser_itself_never_reads_a_file_nor_expands(tmp_path: Path) -> None:
    """Defence in depth: even past the DOCTYPE refusal, the configured parser
    neither resolves an external entity nor expands internal ones."""
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    xxe = (f'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY xxe SYSTEM "file://{secret}">]>'
           '<d xmlns="urn:hl7-org:v3">&xxe;</d>').encode()
    root = etree.fromstring(xxe, parse._parser())
    assert "TOP-SECRET" not in etree.tostring(root).decode()
    laughs = read(INVALID / "billion_laughs.xml")
    try:
        root = etree.fromstring(laughs, parse._parser())
    except etree.XMLSyntaxError:
        return  # libxml2 refused the amplification: fine too
    assert len(etree.tostring(root)) < 10_000
    with pytest.raises(CdaError) as e:  # and through the front door it is refused outright
        parse_xml(xxe)
    assert e.value.code == "cda-dtd"


def test_node_xpath_names_positions() -> None:
    root = parse_xml(read("realistic/C0007_lab_report.xml"))
    value = root.all("component/structuredBody/component")[1].first("section")
    assert value is not None
    entry = value.all("entry")[2]
    assert entry.xpath() == "/ClinicalDocument/component/structuredBody/component[2]/section/entry[3]"
