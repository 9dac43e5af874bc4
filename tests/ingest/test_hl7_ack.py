"""ACK structure for AA / AE / AR, per version and charset, and for messages that did not parse."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hl7_fixtures import build, message, raw

from hutong.ingest.hl7v2.ack import build_ack
from hutong.ingest.hl7v2.message import Hl7Error, get, parse

NOW = datetime(2024, 1, 5, 10, 31, 2, tzinfo=timezone(timedelta(hours=8)))


def _segs(ack: bytes, codec: str = "utf-8") -> list[list[str]]:
    assert ack.endswith(b"\r")
    return [s.split("|") for s in ack.decode(codec).rstrip("\r").split("\r")]


def test_aa_swaps_sender_and_receiver() -> None:
    m = message("nist_elr_oru_r01_case1.hl7")
    ack = build_ack(m, m.raw, "AA", now=NOW)
    msh, msa = _segs(ack)
    assert msh[:3] == ["MSH", "^~\\&", "PH Application^2.16.840.1.113883.3.72.7.3^HL7"]
    assert msh[3] == "PH Facility^2.16.840.1.113883.3.72.7.4^HL7"
    assert msh[4] == "EHR Application^2.16.840.1.113883.3.72.7.1^HL7"
    assert msh[5] == "EHR Facility^2.16.840.1.113883.3.72.7.2^HL7"
    assert msh[6] == "20240105103102+0800"
    assert msh[8] == "ACK^R01^ACK"
    assert msh[9].startswith("HT240105103102") and len(msh[9]) == 20
    assert msh[10:12] == ["P", "2.5.1"]
    assert msa == ["MSA", "AA", "NIST-100929110701660"]
    # the ACK is itself a message we can parse
    back = parse(ack)
    assert (back.message_type, back.trigger, back.version) == ("ACK", "R01", "2.5.1")


def test_new_control_id_each_time() -> None:
    m = message("nist_elr_oru_r01_case1.hl7")
    ids = {_segs(build_ack(m, m.raw, "AA"))[0][9] for _ in range(20)}
    assert len(ids) == 20


def test_ae_has_a_v25_err_segment() -> None:
    m = message("cn_adt_a01_utf8.hl7")
    err = Hl7Error("101", "PID-3 患者标识|为空", segment="PID", field=3)
    msh, msa, e = _segs(build_ack(m, m.raw, "AE", err, now=NOW))
    assert msa == ["MSA", "AE", "ADT20240105001"]
    assert e[0] == "ERR" and e[1] == ""
    assert e[2] == "PID^1^3"  # ERR-2 location
    assert e[3] == "101^Required field missing^HL70357"  # ERR-3
    assert e[4] == "E"  # ERR-4 severity
    assert e[8] == "PID-3 患者标识\\F\\为空"  # ERR-8 user message, escaped
    assert msh[-1] == "UNICODE UTF-8"  # MSH-18 echoed
    assert len(msh) == 18


def test_ar_for_an_old_version_uses_err1_and_msa3() -> None:
    m = parse(build("PID|||1", version="2.4"))
    err = Hl7Error("201", "unsupported event ADT^A11", segment="MSH", field=9, ack="AR")
    _, msa, e = _segs(build_ack(m, m.raw, "AR", err, now=NOW))
    assert msa == ["MSA", "AR", "CTRL1", "unsupported event ADT^A11".replace("^", "\\S\\")]
    assert e == ["ERR", "MSH^1^9^201&Unsupported event code&HL70357"]


def test_ack_in_gb18030_for_a_gb18030_sender() -> None:
    m = message("cn_adt_a03_gb18030.hl7")
    ack = build_ack(m, m.raw, "AE", Hl7Error("103", "性别代码不在表中", segment="PID", field=8), now=NOW)
    with pytest.raises(UnicodeDecodeError):
        ack.decode("utf-8")
    msh, msa, e = _segs(ack, "gb18030")
    assert msh[5] == "12110000400000000X^北京协和医院"  # MSH-6 of the ACK = MSH-4 of the message
    assert msh[11] == "2.4" and msh[-1] == "GB 18030-2000"
    assert e == ["ERR", "PID^1^8^103&Table value not found&HL70357"]
    assert msa[3] == "性别代码不在表中"
    assert parse(ack).charset == "GB 18030-2000"


def test_unparsed_message_gets_its_control_id_back() -> None:
    data = build("PID|||1", version="2.9", control="LOST-42")
    with pytest.raises(Hl7Error) as exc:
        parse(data)
    msh, msa, e = _segs(build_ack(None, data, "AR", exc.value, now=NOW))
    assert msa == ["MSA", "AR", "LOST-42"]
    assert msh[2:6] == ["HUTONG", "BJ-RHIN", "HIS", "12110000400000000X"]
    assert msh[8] == "ACK^R01^ACK" and msh[11] == "2.9"
    assert e[2:4] == ["MSH^1^12", "203^Unsupported version id^HL70357"]


def test_wrong_charset_ack_is_utf8() -> None:
    data = build("PID|||1^^^^MR||张^三", charset="UNICODE UTF-8", enc="gb18030", control="GB1")
    with pytest.raises(Hl7Error) as exc:
        parse(data)
    ack = build_ack(None, data, exc.value.ack, exc.value, now=NOW)
    msh, msa, e = _segs(ack)
    assert msa == ["MSA", "AR", "GB1"]
    assert e[8] == "message is not valid UNICODE UTF-8"


def test_garbage_gets_a_minimal_ack() -> None:
    err = Hl7Error("100", "MLLP framing: data outside a frame", ack="AR")
    msh, msa, e = _segs(build_ack(None, b"\x00\xffnot hl7 at all", "AR", err, now=NOW))
    assert msh[:2] == ["MSH", "^~\\&"] and msh[8] == "ACK" and msh[11] == "2.5.1"
    assert msa == ["MSA", "AR", ""]
    assert e[2:5] == ["", "100^Segment sequence error^HL70357", "E"]


def test_ack_of_the_custom_encoding_characters() -> None:
    data = b"MSH#$*!@#A#B#C#D#20240101##ADT$A08#C9#P#2.5\rPID###1"
    m = parse(data)
    ack = build_ack(m, data, "AA", now=NOW)
    assert ack.startswith(b"MSH#$*!@#C#D#A#B#20240105103102+0800##ACK$A08$ACK#")
    back = parse(ack)
    assert get(back.segment("MSA"), 2) == "C9"


def test_every_fixture_can_be_acknowledged() -> None:
    for name in ("cn_oru_r01_gb18030.hl7", "linuxforhealth_orm_o01_v23.hl7", "python_hl7_adt_a04_v25.hl7"):
        m = message(name)
        assert get(parse(build_ack(m, raw(name), "AA")).segment("MSA"), 2) == m.control_id
