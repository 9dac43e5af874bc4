"""HL7 v2 as real senders send it (issue 15, items 10-13, 15, 18, 19): real bytes over
a real MLLP socket into the store, on SQLite and PostgreSQL.

Every message here is written for the test after the class of quirk the issue
describes (Chinese lab analysers' MSH-18 UNICODE, HIS name and SSN conventions,
padded MSH-9, shared specimen barcodes, re-used control ids); none is copied
from anyone's data."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import test_mllp_pipeline as base
from test_mllp_pipeline import HOSPITAL, Mllp, err, fhir, id_number, msa, msh, oru, pid

from hutong.ingest import inbox
from hutong.mpi.features import extract
from hutong.systems import ID_CARD, ORGANIZATION, REGION_TZ, mrn_system

# The MLLP fixtures of test_mllp_pipeline: a served region and a listener on a real socket.
mllp = base.mllp
dev_loopback = base.dev_loopback

EN_REPRESENTATION = "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation"
SOURCE_VALUE_EXT = "https://fhir.hutong.dev/StructureDefinition/hl7v2-source-value"

OBR = "OBR|1|P123|{filler}^LIS|{code}^{name}^LN|||20261120080000||||||||||||||||20261120100000|||F"
OBX = "OBX|{n}|NM|{code}^{name}^LN||{value}|mmol/L|3.1-5.7||||F|||20261120080000"


def patient(server: Any, mrn: str = "MR0001") -> dict[str, Any]:
    b = fhir(server, "/Patient", identifier=f"{mrn_system(HOSPITAL)}|{mrn}")
    assert len(b["entry"]) == 1, b
    return dict(b["entry"][0]["resource"])


def total(server: Any, path: str, **params: Any) -> int:
    return int(fhir(server, path, _summary="count", **params)["total"])


def err_fields(ack: str) -> list[str]:
    return err(ack).split("|")


def unescape_err(text: str) -> str:
    """An ERR-8 text as the sender's parser reads it (HL7 v2.5.1 ch. 2.7.4 escapes)."""
    for code, ch in (("F", "|"), ("S", "^"), ("T", "&"), ("R", "~"), ("E", "\\")):
        text = text.replace(f"\\{code}\\", ch)
    return text


# ----------------------------------------------------------------------------- item 10
def test_msh18_unicode_is_read_as_utf8(mllp: Mllp) -> None:
    """HL7 table 0211 "UNICODE" (ISO/IEC 10646, no byte encoding named), as lab analysers
    send it with UTF-8 bytes: accepted, the Han name intact, the ACK echoing UNICODE."""
    message = oru("U1", name="欧阳^娜娜").replace("UNICODE UTF-8", "UNICODE")
    assert "|UNICODE" in message.split("\r")[0]
    [ack] = mllp.send(message.encode("utf-8"))
    assert msa(ack)[1:3] == ["AA", "U1"], ack
    assert ack.split("\r")[0].endswith("|UNICODE")
    assert patient(mllp.server)["name"][0]["text"] == "欧阳娜娜"
    assert total(mllp.server, "/Observation") == 3


def test_msh18_unicode_with_other_bytes_is_refused_saying_why(mllp: Mllp) -> None:
    message = oru("U2", name="欧阳^娜娜").replace("UNICODE UTF-8", "UNICODE")
    [ack] = mllp.send(message.encode("gb18030"))
    assert msa(ack)[1:3] == ["AR", "U2"], ack
    e = err_fields(ack)
    assert e[2] == "MSH^1^18" and e[3].startswith("102^"), ack
    assert "UNICODE" in unescape_err(e[8]) and "is not UTF-8" in unescape_err(e[8])
    assert total(mllp.server, "/Observation") == 0
    [dead] = inbox.dead_letters(mllp.server.repo)
    assert dead.reason is not None and "is not UTF-8" in dead.reason


# ----------------------------------------------------------------------------- item 11
def test_sex_outside_the_table_does_not_cost_the_results(mllp: Mllp) -> None:
    [ack] = mllp.send(oru("S1", sex="Female"))
    assert msa(ack)[1:3] == ["AA", "S1"], ack
    e = err_fields(ack)
    assert e[2] == "PID^1^8" and e[3].startswith("103^") and e[4] == "W", ack
    assert "'Female'" in unescape_err(e[8])
    assert total(mllp.server, "/Observation") == 3 and total(mllp.server, "/DiagnosticReport") == 1
    p = patient(mllp.server)
    assert p["gender"] == "female"
    [ext] = [x for x in p["extension"] if x["url"] == SOURCE_VALUE_EXT]
    assert {"url": "value", "valueString": "Female"} in ext["extension"]
    # a value that says nothing known: no gender, the text kept
    [ack2] = mllp.send(oru("S2", mrn="MR0002", sex="Q7", idno=None))
    assert msa(ack2)[1] == "AA" and err_fields(ack2)[4] == "W"
    p2 = patient(mllp.server, "MR0002")
    assert "gender" not in p2
    assert any(x["url"] == SOURCE_VALUE_EXT for x in p2["extension"])
    # counted as data quality for the sending institution, and listable
    from hutong.quality.data_quality import data_quality
    today = datetime.now(REGION_TZ).date()
    counts = data_quality(mllp.server.repo, start=today - timedelta(days=1), end=today + timedelta(days=1))
    assert [(c.institution, c.code, c.messages) for c in counts] == [(HOSPITAL, "HT-0260", 2)]
    assert [r.control_id for r in inbox.flagged(mllp.server.repo, code="HT-0260")] == ["S1", "S2"]
    # a resend gets the same warning again
    [again] = mllp.send(oru("S1", sex="Female"))
    assert again == ack


# ----------------------------------------------------------------------------- item 12
def test_padded_msh9_components_are_read(mllp: Mllp) -> None:
    message = oru("P1").replace("|ORU^R01^ORU_R01|", "|ORU ^R01 ^ORU_R01 |")
    [ack] = mllp.send(message)
    assert msa(ack)[1:3] == ["AA", "P1"], ack
    assert total(mllp.server, "/Observation") == 3


def test_error_text_shows_the_received_value_exactly(mllp: Mllp) -> None:
    message = oru("P2").replace("|ORU^R01^ORU_R01|", "|ORU^R0  1|")
    [ack] = mllp.send(message)
    assert msa(ack)[1] == "AR"
    text = unescape_err(err_fields(ack)[8])
    assert "'ORU^R0  1'" in text, text  # both spaces, quoted


# ----------------------------------------------------------------------------- item 13
def _two_groups(control: str, second_code: str) -> str:
    segs = [msh("ORU^R01^ORU_R01", control), pid(),
            OBR.format(filler="BC778812", code="2093-3", name="总胆固醇"),
            OBX.format(n=1, code="2093-3", name="总胆固醇", value="5.9"),
            OBR.format(filler="BC778812", code=second_code, name="甘油三酯").replace("OBR|1|", "OBR|2|"),
            OBX.format(n=1, code="2571-8", name="甘油三酯", value="1.2")]
    return "\r".join(segs)


def test_two_reports_sharing_a_filler_number_are_both_kept(mllp: Mllp) -> None:
    [ack] = mllp.send(_two_groups("G1", "2571-8"))
    assert msa(ack)[1:3] == ["AA", "G1"], ack
    assert total(mllp.server, "/DiagnosticReport") == 2
    assert total(mllp.server, "/Observation") == 2
    # a corrected resend of both groups converges on the same two reports
    [ack2] = mllp.send(_two_groups("G2", "2571-8").replace("|5.9|", "|6.1|"))
    assert msa(ack2)[1] == "AA"
    assert total(mllp.server, "/DiagnosticReport") == 2 and total(mllp.server, "/Observation") == 2


def test_two_groups_that_cannot_be_told_apart_are_refused(mllp: Mllp) -> None:
    [ack] = mllp.send(_two_groups("G3", "2093-3"))
    assert msa(ack)[1:3] == ["AE", "G3"], ack
    e = err_fields(ack)
    assert e[3].startswith("205^") and "BC778812" in unescape_err(e[8])
    assert total(mllp.server, "/DiagnosticReport") == 0 and total(mllp.server, "/Observation") == 0


def test_two_orders_sharing_a_placer_number_are_both_kept(mllp: Mllp) -> None:
    segs = [msh("ORM^O01^ORM_O01", "O1"), pid(),
            "ORC|NW|ORD5501||||||||20261120090000",
            "OBR|1|ORD5501||58410-2^血常规^LN",
            "ORC|NW|ORD5501||||||||20261120090000",
            "OBR|2|ORD5501||1988-5^C反应蛋白^LN"]
    [ack] = mllp.send("\r".join(segs))
    assert msa(ack)[1:3] == ["AA", "O1"], ack
    assert total(mllp.server, "/ServiceRequest") == 2


# ----------------------------------------------------------------------------- item 15
def test_han_name_with_pinyin_keeps_the_han_name(mllp: Mllp) -> None:
    [ack] = mllp.send(oru("N1", name="张三丰^zhangsanfeng", idno=None))
    assert msa(ack)[1] == "AA", ack
    p = patient(mllp.server)
    han, latin = p["name"]
    assert (han["text"], han["family"], han["given"]) == ("张三丰", "张", ["三丰"])
    assert {"url": EN_REPRESENTATION, "valueCode": "IDE"} in han["extension"]
    assert latin["text"] == "zhangsanfeng"
    assert {"url": EN_REPRESENTATION, "valueCode": "ABC"} in latin["extension"]
    assert extract(p).names == ("张三丰",)  # the MPI compares the Han name
    # a compound surname splits as one
    mllp.send(oru("N2", mrn="MR0002", name="欧阳修文^ouyang xiuwen", idno=None))
    assert patient(mllp.server, "MR0002")["name"][0]["family"] == "欧阳"


# ----------------------------------------------------------------------------- item 18
def _with_ssn(control: str, mrn: str, ssn: str) -> str:
    segs = oru(control, mrn=mrn, idno=None).split("\r")
    fields = segs[1].split("|")
    fields += [""] * (20 - len(fields))
    fields[19] = ssn
    segs[1] = "|".join(fields)
    return "\r".join(segs)


def test_pid19_is_read_as_the_national_id_when_valid(mllp: Mllp) -> None:
    good = id_number("19800517")
    [ack] = mllp.send(_with_ssn("I1", "MR0001", good))
    assert msa(ack)[1] == "AA", ack
    ids = [i for i in patient(mllp.server)["identifier"] if i["system"] == ID_CARD]
    assert [i["value"] for i in ids] == [good]
    # a wrong check character (a social insurance number, a typo) is not taken for one
    bad = good[:17] + ("0" if good[17] != "0" else "1")
    mllp.send(_with_ssn("I2", "MR0002", bad))
    assert not [i for i in patient(mllp.server, "MR0002")["identifier"] if i["system"] == ID_CARD]


def test_msh7_offset_is_the_default_zone_of_the_other_times(mllp: Mllp) -> None:
    message = oru("Z1").replace("|20261120093000||ORU", "|20261120093000+0700||ORU")
    [ack] = mllp.send(message)
    assert msa(ack)[1] == "AA", ack
    report = fhir(mllp.server, "/DiagnosticReport")["entry"][0]["resource"]
    assert report["effectiveDateTime"] == "2026-11-20T08:00:00+07:00"


# ----------------------------------------------------------------------------- item 19
def test_reused_control_id_with_other_content_is_stored_and_flagged(mllp: Mllp) -> None:
    def other() -> str:  # another patient's report, sent under the same MSH-10
        return oru("R7", mrn="MR0009", idno=None).replace("F456^LIS", "F457^LIS")

    [first] = mllp.send(oru("R7"))
    [reused] = mllp.send(other())
    assert msa(first)[1:3] == ["AA", "R7"] and not err(first)
    assert msa(reused)[1:3] == ["AA", "R7"], reused
    e = err_fields(reused)
    assert e[2] == "MSH^1^10" and e[3].startswith("205^") and e[4] == "W"
    assert "different content" in unescape_err(e[8])
    assert total(mllp.server, "/DiagnosticReport", subject=f"Patient/{patient(mllp.server, 'MR0009')['id']}") == 1
    [row] = inbox.flagged(mllp.server.repo, code="HT-0265")
    assert row.control_id == "R7" and row.sender == HOSPITAL
    # the commission's views: the flagged row and the count, over HTTP
    client, root = mllp.server.client, mllp.server.root
    [item] = client.get(root + "/ingest/flagged", params={"code": "HT-0265"}).json()["items"]
    assert (item["id"], item["control_id"], item["status"]) == (row.id, "R7", "ok")
    assert item["reason"].startswith("HT-0265 MSH-10 'R7' was already used")
    counts = client.get(root + "/ingest/quality").json()["items"]
    assert [(c["institution"], c["code"], c["messages"]) for c in counts] == [(HOSPITAL, "HT-0265", 1)]
    # true resends of either stay plain duplicates: the same ACK, nothing new
    assert mllp.send(oru("R7")) == [first]
    assert mllp.send(other()) == [reused]
    # a resend restamped with a new MSH-7 is still the same message
    restamped = oru("R7").replace("|20261120093000||ORU", "|20261120093500||ORU")
    assert msa(mllp.send(restamped)[0])[1] == "AA" and not err(mllp.send(restamped)[0])
    assert len(inbox.flagged(mllp.server.repo, code="HT-0265")) == 1
    assert total(mllp.server, "/DiagnosticReport") == 2


def test_a_hospital_registered_after_a_refusal_is_accepted_at_once(mllp: Mllp) -> None:
    """An unknown sending facility is refused (AR, HT-0311); once the operator registers the
    hospital its next message is accepted, not refused again for a minute because the
    listener remembered "unknown" (it did: SENDER_TTL_S cached misses too)."""
    other = "12110000400000002X"
    first = oru("NEW1").replace(f"|{HOSPITAL}|HUTONG", f"|{other}|HUTONG", 1)
    [ack] = mllp.send(first)
    assert msa(ack)[1] == "AR" and "unknown sending" in unescape_err(err(ack)), ack
    org = {"resourceType": "Organization", "name": "北京市新开医院",
           "identifier": [{"system": ORGANIZATION, "value": other}]}
    assert mllp.server.client.post("/Organization", json=org).status_code == 201
    [ack] = mllp.send(oru("NEW2").replace(f"|{HOSPITAL}|HUTONG", f"|{other}|HUTONG", 1))
    assert msa(ack)[1:3] == ["AA", "NEW2"], ack
