"""Parsing: versions, character sets (UTF-8, GB 18030), header fields, timestamps, errors."""

from __future__ import annotations

import hl7
import pytest
from hl7_fixtures import FIXTURES, build, message, raw

from hutong.ingest.hl7v2.message import Hl7Error, get, parse, parse_tree, reps, rget, ts_to_fhir


def _err(data: bytes) -> Hl7Error:
    with pytest.raises(Hl7Error) as e:
        parse(data)
    return e.value


def test_header_fields_of_a_public_sample() -> None:
    m = message("nist_elr_oru_r01_case1.hl7")
    assert (m.message_type, m.trigger, m.structure) == ("ORU", "R01", "ORU_R01")
    assert m.control_id == "NIST-100929110701660"
    assert m.version == "2.5.1"
    assert m.processing_id == "P"
    assert m.sending_app == "EHR Application"
    assert m.sending_facility == ["EHR Facility", "2.16.840.1.113883.3.72.7.2", "HL7"]
    assert m.receiving_app == "PH Application"
    assert m.receiving_facility == ["PH Facility", "2.16.840.1.113883.3.72.7.4", "HL7"]
    assert m.timestamp == "2010-09-29T11:07:02+08:00"  # no zone in MSH-7: Beijing time
    assert m.charset == "UNICODE UTF-8"  # MSH-18 absent
    assert isinstance(m.parsed, hl7.Message)
    assert [s[0][0] for s in m.parsed] == ["MSH", "SFT", "PID", "ORC", "OBR", "OBX", "SPM"]


def test_parse_tree_is_python_hl7s_tree() -> None:
    for path in sorted(FIXTURES.glob("*.hl7")):
        text = parse(path.read_bytes()).text
        ours, theirs = parse_tree(text), hl7.parse(text)
        assert ours == theirs, path.name
        assert str(ours) == str(theirs)
        assert isinstance(ours[0], hl7.Segment) and isinstance(ours[0][3], hl7.Field)


def test_field_access_follows_python_hl7() -> None:
    m = message("nist_elr_oru_r01_case1.hl7")
    pid = m.segment("PID")
    assert get(pid, 3) == "9817566735"
    assert get(pid, 3, 4, 2) == "2.16.840.1.113883.19.3.2.1"
    assert get(pid, 3, 5) == "MR"
    assert get(pid, 5, 2) == "Philip"
    assert get(pid, 99) == "" and get(pid, 3, 9) == "" and get(pid, 3, rep=2) == ""
    assert m.parsed.segment("PID").extract_field(1, 3, 1, 4, 2) == get(pid, 3, 4, 2)


def test_repetitions_and_escapes() -> None:
    m = parse(build(r"PID|||A1^^^^MR~B2^^^^NNCHN||O\T\Brien^Tom \F\ Jr\S\x||19800101|M"))
    pid = m.segment("PID")
    assert [rget(r) for r in reps(pid, 3)] == ["A1", "B2"]
    assert [rget(r, 5) for r in reps(pid, 3)] == ["MR", "NNCHN"]
    assert get(pid, 5, 1) == "O&Brien"
    assert get(pid, 5, 2) == "Tom | Jr^x"
    assert get(pid, 6) == "" and reps(pid, 6) == []


def test_hl7_null_is_no_value() -> None:
    pid = parse(build('PID|||1^^^^MR||""^""||""|M')).segment("PID")
    assert get(pid, 5, 1) == "" and get(pid, 7) == ""


@pytest.mark.parametrize("ending", [b"\r", b"\n", b"\r\n"])
def test_segment_endings(ending: bytes) -> None:
    data = build("PID|||1^^^^MR", "PV1|1|O").replace(b"\r", ending)
    m = parse(data)
    assert [s[0][0] for s in m.parsed] == ["MSH", "PID", "PV1"]
    assert "\n" not in m.text


def test_lf_separated_public_sample() -> None:
    m = message("linuxforhealth_orm_o01_v23.hl7")
    assert m.version == "2.3" and m.processing_id == "T"
    assert [s[0][0] for s in m.parsed] == ["MSH", "PID", "PV1", "PV2", "ORC", "OBR"]


@pytest.mark.parametrize("version", ["2.3", "2.3.1", "2.4", "2.5", "2.5.1"])
def test_supported_versions(version: str) -> None:
    assert parse(build("PID|||1", version=version)).version == version


@pytest.mark.parametrize("version", ["2.2", "2.6", "2.8", "3.0"])
def test_other_versions_are_rejected(version: str) -> None:
    e = _err(build("PID|||1", version=version))
    assert (e.code, e.ack, e.segment, e.field) == ("203", "AR", "MSH", 12)
    assert version in e.text


def test_utf8_chinese_names() -> None:
    m = message("cn_adt_a01_utf8.hl7")
    assert m.charset == "UNICODE UTF-8"
    assert m.sending_facility == ["12110000400000000X", "北京协和医院"]
    pid = m.segment("PID")
    assert (get(pid, 5, 1), get(pid, 5, 2)) == ("张", "伟")
    assert m.segment("ZPI") is not None  # Z-segments are kept


def test_gb18030_chinese_names() -> None:
    data = raw("cn_adt_a03_gb18030.hl7")
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    m = parse(data)
    assert m.charset == "GB 18030-2000"
    assert m.sending_facility == ["12110000400000000X", "北京协和医院"]
    assert get(m.segment("PID"), 5, 1) == "张"
    assert get(m.segment("PV1"), 3) == "心内科"


def _trail_byte_pipe_char() -> str:
    """A Han character whose GB 18030 encoding has "|" (0x7C) as its second byte."""
    for cp in range(0x4E00, 0x9FA6):
        b = chr(cp).encode("gb18030")
        if b[1:2] == b"|":
            return chr(cp)
    raise AssertionError("none")


def test_gb18030_trail_byte_equal_to_the_field_separator() -> None:
    ch = _trail_byte_pipe_char()
    facility = f"北京{ch}医院"
    data = (f"MSH|^~\\&|HIS|{facility}|HUTONG|BJ|20240105||ADT^A08^ADT_A01|C7|P|2.4|||||CHN|GB 18030-2000\r"
            f"PID|||1^^^^MR||{ch}^三").encode("gb18030")
    assert data.split(b"|")[17:18] != [b"GB 18030-2000"]  # a byte-wise split misses MSH-18
    m = parse(data)
    assert m.charset == "GB 18030-2000"
    assert m.sending_facility == [facility]
    assert get(m.segment("PID"), 5, 1) == ch


@pytest.mark.parametrize("declared", ["GB18030", "GBK", "gb 18030-2000"])
def test_gb18030_spellings(declared: str) -> None:
    m = parse(build("PID|||1^^^^MR||王^芳", charset=declared, enc="gb18030"))
    assert get(m.segment("PID"), 5, 2) == "芳"
    assert m.codec == "gb18030"


def test_ascii_and_absent_charset() -> None:
    assert parse(build("PID|||1", charset="ASCII")).codec == "ascii"
    m = parse(build("PID|||1^^^^MR||李^娜", charset=None))  # absent: UTF-8
    assert m.charset == "UNICODE UTF-8"
    assert get(m.segment("PID"), 5, 2) == "娜"


def test_gb18030_bytes_declared_utf8_are_rejected() -> None:
    e = _err(build("PID|||1^^^^MR||张^三", charset="UNICODE UTF-8", enc="gb18030"))
    assert (e.code, e.ack, e.segment, e.field) == ("102", "AR", "MSH", 18)
    assert e.text == "message is not valid UNICODE UTF-8"


def test_utf8_bytes_declared_ascii_are_rejected() -> None:
    e = _err(build("PID|||1^^^^MR||张^三", charset="ASCII"))
    assert (e.code, e.ack) == ("102", "AR")
    assert e.text == "message is not valid ASCII"


def test_unknown_charset_is_rejected() -> None:
    e = _err(build("PID|||1", charset="CHINESE"))
    assert (e.code, e.ack, e.field) == ("103", "AR", 18)
    assert "CHINESE" in e.text


def test_no_msh_is_rejected() -> None:
    e = _err(b"PID|||1\rPV1|1|O")
    assert (e.code, e.ack, e.segment) == ("101", "AR", "MSH")


def test_missing_type_or_control_id_is_rejected() -> None:
    e = _err(b"MSH|^~\\&|A|B|C|D|20240101|||X1|P|2.5\r")
    assert (e.code, e.ack, e.field) == ("101", "AR", 9)
    e = _err(b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01||P|2.5\r")
    assert (e.code, e.ack, e.field) == ("101", "AR", 10)


def test_processing_id_and_batches() -> None:
    e = _err(build("PID|||1").replace(b"|CTRL1|P|", b"|CTRL1|Q|"))
    assert (e.code, e.ack, e.field) == ("202", "AR", 11)
    e = _err(build("PID|||1") + build("PID|||2"))
    assert (e.code, e.ack) == ("100", "AR")


def test_malformed_msh7_is_a_content_error() -> None:
    e = _err(build("PID|||1").replace(b"|20240105103000|", b"|2024-01-05 10:30|"))
    assert (e.code, e.ack, e.segment, e.field) == ("102", "AE", "MSH", 7)


def test_adt_trigger_from_evn_when_msh9_has_none() -> None:
    m = parse(build("EVN|A04|20240101", "PID|||1", msg_type="ADT", version="2.3"))
    assert (m.message_type, m.trigger) == ("ADT", "A04")


def test_custom_encoding_characters() -> None:
    data = b"MSH#$*!@#A#B#C#D#20240101##ADT$A08#C9#P#2.5\rPID###1$$$$MR*2$$$$PI##Li$Lei"
    m = parse(data)
    assert (m.message_type, m.trigger, m.control_id) == ("ADT", "A08", "C9")
    pid = m.segment("PID")
    assert [rget(r) for r in reps(pid, 3)] == ["1", "2"]
    assert get(pid, 5, 2) == "Lei"


@pytest.mark.parametrize(("value", "expected"), [
    ("2024", "2024"),
    ("202401", "2024-01"),
    ("20240105", "2024-01-05"),
    ("2024010510", "2024-01-05T10:00:00+08:00"),
    ("202401051030", "2024-01-05T10:30:00+08:00"),
    ("20240105103015", "2024-01-05T10:30:15+08:00"),
    ("20240105103015.123", "2024-01-05T10:30:15.123+08:00"),
    ("20240105103015-0700", "2024-01-05T10:30:15-07:00"),
    ("200808151030-0700", "2008-08-15T10:30:00-07:00"),
    ("20240105+0000", "2024-01-05"),
    ("", None),
])
def test_ts_to_fhir(value: str, expected: str | None) -> None:
    assert ts_to_fhir(value) == expected


@pytest.mark.parametrize("value", ["2024-01-05", "196203520", "20241305", "20240230", "2024010525", "0000",
                                   "20240105103075", "20240105+1500", "yesterday"])
def test_ts_to_fhir_rejects(value: str) -> None:
    with pytest.raises(Hl7Error) as e:
        ts_to_fhir(value, segment="PID", field=7)
    assert (e.value.code, e.value.ack, e.value.segment, e.value.field) == ("102", "AE", "PID", 7)


def test_a_line_without_separators_is_a_segment_of_its_own() -> None:
    from hutong.ingest.hl7v2.message import name_of

    m = parse(build("PID|||1^^^^MR", "GARBAGE", "PV1|1|O"))
    assert [name_of(s) for s in m.parsed] == ["MSH", "PID", "GARBAGE", "PV1"]
    assert m.segment("PV1") is not None and get(m.segment("GARBAGE"), 1) == ""


def test_malformed_escapes_log_no_patient_data(caplog: pytest.LogCaptureFixture) -> None:
    m = parse(build("PID|||1^^^^MR||张\\\\三^\\Zq"))
    with caplog.at_level("DEBUG"):
        name = get(m.segment("PID"), 5, 1) + get(m.segment("PID"), 5, 2)
    assert "张" in name
    assert not any("张" in r.getMessage() for r in caplog.records)
