"""Small, forgiving readers of FHIR R4 JSON datatypes for display.

The record is built from whatever the senders wrote (datatypes.html:
CodeableConcept, Coding, Quantity, Reference, Period); a missing or malformed
element reads as empty, never as an error, so one odd resource cannot hide
the rest of a person's record.
"""

from __future__ import annotations

from typing import Any


def text(cc: Any, *, code_fallback: bool = True) -> str:
    """Plain words of a CodeableConcept: its text, else the first coding's display, else its
    code (``code_fallback=False``: no code, for pages where a raw code must not be shown)."""
    if not isinstance(cc, dict):
        return ""
    if isinstance(cc.get("text"), str) and cc["text"]:
        return str(cc["text"])
    for c in cc.get("coding") or ():
        if isinstance(c, dict) and c.get("display"):
            return str(c["display"])
    if not code_fallback:
        return ""
    for c in cc.get("coding") or ():
        if isinstance(c, dict) and c.get("code"):
            return str(c["code"])
    return ""


def coding(cc: Any, system: str | None = None) -> tuple[str, str]:
    """(system, code) of the first coding (of ``system`` when given, else of any system)."""
    if not isinstance(cc, dict):
        return "", ""
    codings = [c for c in cc.get("coding") or () if isinstance(c, dict) and c.get("code")]
    for c in codings:
        if system is None or c.get("system") == system:
            return str(c.get("system") or ""), str(c["code"])
    return (str(codings[0].get("system") or ""), str(codings[0]["code"])) if codings else ("", "")


def preferred_code(cc: Any, system: str) -> tuple[str, str]:
    """(system, code): the coding of ``system`` (ICD-10, LOINC) when there is one, else the first."""
    found = coding(cc, system)
    return found if found[1] else coding(cc)


def code(cc: Any) -> str:
    return coding(cc)[1]


def ref_id(ref: Any, type: str | None = None) -> str | None:
    """The id of a Reference (relative or absolute, version suffix dropped), of ``type`` when given."""
    if not isinstance(ref, dict) or not isinstance(ref.get("reference"), str):
        return None
    path = ref["reference"].split("/_history")[0].rstrip("/")
    kind, _, rid = path.rpartition("/")
    if type is not None and kind.rsplit("/", 1)[-1] != type:
        return None
    return rid or None


def number(v: Any) -> float | None:
    """A JSON number (not a boolean) as float."""
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def quantity_value(q: Any) -> float | None:
    return number(q.get("value")) if isinstance(q, dict) else None


def fmt_number(x: float) -> str:
    """7.0 -> '7', 7.25 -> '7.25', 316227.0 -> '316227' (no exponent for ordinary lab values)."""
    return str(int(x)) if x == int(x) and abs(x) < 1e15 else f"{x:.10g}"


def day(s: str) -> str:
    return s[:10]


def minute(s: str) -> str:
    """'2025-10-07T08:44:00+08:00' -> '2025-10-07 08:44' (the institution's own local time)."""
    return s[:10] + (" " + s[11:16] if len(s) >= 16 and s[10] == "T" else "")


def patient_of(res: dict[str, Any]) -> str | None:
    """The Patient a resource is about (subject, patient, or Task.for)."""
    for key in ("subject", "patient", "for"):
        rid = ref_id(res.get(key), "Patient")
        if rid:
            return rid
    return None


def clinical_date(res: dict[str, Any]) -> str:
    """The clinically relevant date of any resource (for ordering and display)."""
    for k in ("effectiveDateTime", "issued", "authoredOn", "recordedDate", "onsetDateTime", "occurrenceDateTime",
              "performedDateTime", "started", "date"):
        if isinstance(res.get(k), str):
            return str(res[k])
    for k in ("period", "effectivePeriod", "performedPeriod"):
        p = res.get(k)
        if isinstance(p, dict) and isinstance(p.get("start"), str):
            return str(p["start"])
    return ""
