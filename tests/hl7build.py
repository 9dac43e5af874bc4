"""HL7 v2 ADT^A04 messages built from synthetic FHIR Patients (hutong.synth
output), shared by the ingestion and encryption tests."""

from __future__ import annotations

from typing import Any

from hutong.systems import ID_CARD, MRN_PREFIX


def adt_from_patient(patient: dict[str, Any], n: int, *, charset: str = "UNICODE UTF-8", control: str = "SYN",
                     mrn_suffix: str = "") -> bytes:
    """One registration of ``patient`` at the institution of its MRN; MSH-10 is
    ``control`` + ``n``; encoded as MSH-18 ``charset`` says."""
    mrn = next(i for i in patient["identifier"] if i["system"].startswith(MRN_PREFIX))
    institution = mrn["system"][len(MRN_PREFIX):]
    ids = f"{mrn['value']}{mrn_suffix}^^^{institution}^MR"
    idno = next((i["value"] for i in patient["identifier"] if i["system"] == ID_CARD), None)
    if idno:
        ids += f"~{idno}^^^2.16.156.10011.1.3^NNCHN"
    name = patient["name"][0]
    xpn = f"{name.get('family', '')}^{''.join(name.get('given', []))}" if name.get("family") else name["text"]
    phone = next((t["value"] for t in patient.get("telecom", [])), "")
    addr = patient.get("address", [{}])[0].get("text", "")
    sex = {"male": "M", "female": "F"}.get(patient.get("gender", ""), "U")
    birth = patient.get("birthDate", "").replace("-", "")
    segs = [f"MSH|^~\\&|HIS|{institution}|HUTONG|REGION|20261101090000||ADT^A04^ADT_A01|{control}{n}|P|2.4|||||CHN|"
            f"{charset}",
            "EVN|A04|20261101090000",
            f"PID|1||{ids}||{xpn}||{birth}|{sex}|||{addr}||{phone}",
            "PV1|1|O"]
    encoding = "gb18030" if charset.startswith("GB") else "utf-8"
    return "\r".join(segs).encode(encoding)
