"""HL7 v2.5.1 messages of a simulated HIS/LIS: ADT^A01/A03/A04/A08, ORM^O01, ORU^R01.

Segments follow HL7 v2.5.1 ch. 2 (MSH), 3 (EVN, PID, PV1), 4 (ORC, OBR) and
7 (OBX); identifiers carry the national OIDs of WS/T 500's header
(身份证 2.16.156.10011.1.3) and the institution's 统一社会信用代码 as the
MRN's assigning authority, as the platform's intake expects.  ``faulty``
variants (an ORU whose OBR-4 is empty; hutong.sim.runner empties PID-3) are the
mistakes real interfaces make, which the platform keeps as dead letters (AE).
"""

from __future__ import annotations

from datetime import datetime

from hutong.sim.clinic import EMERGENCY, INPATIENT, PANELS, Result, Visit
from hutong.sim.region import Hospital, Person

ID_CARD_OID = "2.16.156.10011.1.3"


def ts(t: datetime) -> str:
    return t.strftime("%Y%m%d%H%M%S")


def _esc(text: str) -> str:
    """HL7 v2 escape sequences (ch. 2.7.4) for the delimiters a free text may hold."""
    return (text.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\").replace("&", "\\T\\")
            .replace("~", "\\R\\"))


def msh(h: Hospital, kind: str, control: str, now: datetime, app: str = "HIS") -> str:
    return f"MSH|^~\\&|{app}|{h.code}|HUTONG|REGION|{ts(now)}||{kind}|{control}|P|2.5.1|||AL|NE|CHN|UNICODE UTF-8"


def pid(h: Hospital, p: Person) -> str:
    ids = f"{p.mrn}^^^{h.code}^MR"
    if p.id_number:
        ids += f"~{p.id_number}^^^{ID_CARD_OID}^NNCHN"
    family, given = p.name[:1], p.name[1:]
    return (f"PID|1||{ids}||{_esc(family)}^{_esc(given)}||{p.birth}|{'M' if p.male else 'F'}|||^^北京市^^^CHN"
            f"||{p.phone}")


def pv1(v: Visit) -> str:
    # PV1-2 patient class (table 0004): O outpatient, E emergency, I inpatient; PV1-19 visit number;
    # PV1-44 admit time, PV1-45 discharge time.
    klass = {EMERGENCY: "E", INPATIENT: "I"}.get(v.setting, "O")
    f = ["PV1", "1", klass, f"{_esc(v.department)}^^^^^^^^{_esc(v.department)}"] + [""] * 4
    f += [f"D{sum(map(ord, v.doctor)) % 10000:04d}^{v.doctor[:1]}^{v.doctor[1:]}"] + [""] * 10
    f += [v.number] + [""] * 24
    f += [ts(v.start), ts(v.end) if v.setting == INPATIENT and v.end > v.start else ""]
    return "|".join(f)


def adt(h: Hospital, p: Person, v: Visit, trigger: str, control: str, now: datetime) -> str:
    """ADT^A04 (registration), A01 (admission) or A08 (update), ch. 3.3."""
    event = v.start if trigger in ("A01", "A04") else v.end
    return "\r".join([msh(h, f"ADT^{trigger}^ADT_A01", control, now), f"EVN|{trigger}|{ts(event)}", pid(h, p), pv1(v)])


def orm(h: Hospital, p: Person, v: Visit, panel: str, order: str, control: str, now: datetime) -> str:
    """ORM^O01 new order (ORC-1 NW, ch. 4.5) for a lab panel."""
    code, name = PANELS[panel]
    return "\r".join([msh(h, "ORM^O01^ORM_O01", control, now), pid(h, p), pv1(v),
                      f"ORC|NW|{order}|||SC||||{ts(v.start)}",
                      f"OBR|1|{order}||{code}^{name}^LN|||{ts(v.start)}"])


def _obx(i: int, r: Result, when: datetime) -> str:
    a = r.analyte
    return (f"OBX|{i}|NM|{a.loinc}^{a.name}^LN||{r.text}|{a.unit}|{a.low:g}-{a.high:g}|{r.flag}|||F|||"
            f"{ts(when)}")


def oru(h: Hospital, p: Person, v: Visit, panel: str, order: str, control: str, now: datetime,
        results: list[Result], *, faulty: bool = False) -> str:
    """ORU^R01 final lab results (ch. 7.3.1); ``faulty`` leaves OBR-4 empty (a LIS mapping error)."""
    code, name = PANELS[panel]
    service = "" if faulty else f"{code}^{name}^LN"
    collected = v.start
    segs = [msh(h, "ORU^R01^ORU_R01", control, now, app="LIS"), pid(h, p), pv1(v),
            f"OBR|1|{order}|{order}R|{service}|||{ts(collected)}||||||||||||||{ts(now)}|||F"]
    segs += [_obx(i + 1, r, collected) for i, r in enumerate(results)]
    return "\r".join(segs)
