"""Core invariants of the resource types Hutong stores most (FHIR R4 conformance-rules.html#constraints).

The FHIRPath expressions of the R4 StructureDefinitions, written out in
Python (a FHIRPath engine on the write path would cost more than the whole
structural check); each function names its key and quotes the expression.
Errors only: warnings (con-3, and the best-practice rules) are not refused.
Encounter, DiagnosticReport, MedicationRequest and DocumentReference have no
invariants of their own in R4 beyond the ones every resource has (dom-*),
which apply to them here too; ext-1 is checked by hutong.fhir.bindings' walk.

ref-1 (a "#id" reference names a contained resource) is checked from the
references the structural walk collects (:func:`local_references`).  Not
checked: dom-3 (every contained resource referenced from the container: it needs
a walk of every reference, canonical and uri of the resource; a deviation)
and ppc-2..ppc-5 (their expressions test ``system='something'``, an error in
the R4 publication, so they can never fail).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Problem = tuple[str, str, str]  # (element path, message, HT code)
Json = dict[str, Any]
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VER = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
ALLERGY_VER = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"


def _exists(v: Any) -> bool:
    return v is not None and v != [] and v != {} and v != ""


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else ([] if v is None else [v])


def _has_value(d: Json) -> bool:
    return any(k.startswith("value") and _exists(v) for k, v in d.items())


def _coded(cc: Any, system: str, codes: tuple[str, ...]) -> bool:
    return isinstance(cc, dict) and any(isinstance(c, dict) and c.get("system") == system and c.get("code") in codes
                                        for c in _list(cc.get("coding")))


def _bad(out: list[Problem], path: str, key: str, text: str) -> None:
    out.append((path, f"{key}: {text}", "HT-0241"))


def _patient(r: Json, p: str, out: list[Problem]) -> None:
    for i, c in enumerate(_list(r.get("contact"))):
        # pat-1: name.exists() or telecom.exists() or address.exists() or organization.exists()
        if isinstance(c, dict) and not any(_exists(c.get(k)) for k in ("name", "telecom", "address", "organization")):
            _bad(out, f"{p}.contact[{i}]", "pat-1", "a contact SHALL contain a name, telecom, address or "
                                                     "organization")


def _ranges(r: Json, p: str, out: list[Problem]) -> None:
    for i, rr in enumerate(_list(r.get("referenceRange"))):
        # obs-3: low.exists() or high.exists() or text.exists()
        if isinstance(rr, dict) and not any(_exists(rr.get(k)) for k in ("low", "high", "text")):
            _bad(out, f"{p}.referenceRange[{i}]", "obs-3", "a reference range SHALL have a low, a high or a text")


def _observation(r: Json, p: str, out: list[Problem]) -> None:
    has_value = _has_value(r)
    # obs-6: dataAbsentReason.empty() or value.empty()
    if has_value and _exists(r.get("dataAbsentReason")):
        _bad(out, f"{p}.dataAbsentReason", "obs-6", "dataAbsentReason SHALL only be present if value[x] is not")
    _ranges(r, p, out)
    code_codings = [c for c in _list((r.get("code") or {}).get("coding")) if isinstance(c, dict)]
    for i, comp in enumerate(_list(r.get("component"))):
        if not isinstance(comp, dict):
            continue
        _ranges(comp, f"{p}.component[{i}]", out)
        # obs-7: value.empty() or component.code.where(coding.intersect(%resource.code.coding).exists()).empty()
        if has_value and any(c in code_codings for c in _list((comp.get("code") or {}).get("coding"))):
            _bad(out, f"{p}.component[{i}].code", "obs-7", "when the component's code is the Observation's code, "
                                                            "the value SHALL be in the component, not the Observation")


def _condition(r: Json, p: str, out: list[Problem]) -> None:
    for i, st in enumerate(_list(r.get("stage"))):
        # con-1: summary.exists() or assessment.exists()
        if isinstance(st, dict) and not (_exists(st.get("summary")) or _exists(st.get("assessment"))):
            _bad(out, f"{p}.stage[{i}]", "con-1", "a stage SHALL have a summary or an assessment")
    for i, ev in enumerate(_list(r.get("evidence"))):
        # con-2: code.exists() or detail.exists()
        if isinstance(ev, dict) and not (_exists(ev.get("code")) or _exists(ev.get("detail"))):
            _bad(out, f"{p}.evidence[{i}]", "con-2", "evidence SHALL have a code or a detail")
    clinical = r.get("clinicalStatus")
    # con-4: abatement.empty() or clinicalStatus.coding.where(system=... and (code='resolved' or
    # code='remission' or code='inactive')).exists()
    if any(k.startswith("abatement") and _exists(v) for k, v in r.items()) and not _coded(
            clinical, CONDITION_CLINICAL, ("resolved", "remission", "inactive")):
        _bad(out, f"{p}.clinicalStatus", "con-4", "an abated condition's clinicalStatus SHALL be inactive, "
                                                   "resolved or remission")
    # con-5: verificationStatus.coding.where(system=... and code='entered-in-error').empty() or clinicalStatus.empty()
    if _coded(r.get("verificationStatus"), CONDITION_VER, ("entered-in-error",)) and _exists(clinical):
        _bad(out, f"{p}.clinicalStatus", "con-5", "clinicalStatus SHALL NOT be present if verificationStatus is "
                                                   "entered-in-error")


def _allergy(r: Json, p: str, out: list[Problem]) -> None:
    error = _coded(r.get("verificationStatus"), ALLERGY_VER, ("entered-in-error",))
    clinical = _exists(r.get("clinicalStatus"))
    if not error and not clinical:  # ait-1
        _bad(out, f"{p}.clinicalStatus", "ait-1", "clinicalStatus SHALL be present if verificationStatus is not "
                                                   "entered-in-error")
    if error and clinical:  # ait-2
        _bad(out, f"{p}.clinicalStatus", "ait-2", "clinicalStatus SHALL NOT be present if verificationStatus is "
                                                   "entered-in-error")


def _consent(r: Json, p: str, out: list[Problem]) -> None:
    # ppc-1: policy.exists() or policyRule.exists()
    if not (_exists(r.get("policy")) or _exists(r.get("policyRule"))):
        _bad(out, p, "ppc-1", "a Consent SHALL name a policy or a policyRule")


def _immunization(r: Json, p: str, out: list[Problem]) -> None:
    for i, ed in enumerate(_list(r.get("education"))):
        # imm-1: documentType.exists() or reference.exists()
        if isinstance(ed, dict) and not (_exists(ed.get("documentType")) or _exists(ed.get("reference"))):
            _bad(out, f"{p}.education[{i}]", "imm-1", "education SHALL have a documentType or a reference")


def _sections(sections: Any, p: str, out: list[Problem]) -> None:
    for i, s in enumerate(_list(sections)):
        if not isinstance(s, dict):
            continue
        sp = f"{p}.section[{i}]"
        # cmp-1: text.exists() or entry.exists() or section.exists()
        if not any(_exists(s.get(k)) for k in ("text", "entry", "section")):
            _bad(out, sp, "cmp-1", "a section SHALL contain a text, entries or sub-sections")
        # cmp-2: emptyReason.empty() or entry.empty()
        if _exists(s.get("emptyReason")) and _exists(s.get("entry")):
            _bad(out, sp, "cmp-2", "a section can only have an emptyReason if it is empty")
        _sections(s.get("section"), sp, out)


def _composition(r: Json, p: str, out: list[Problem]) -> None:
    _sections(r.get("section"), p, out)


RULES: dict[str, Callable[[Json, str, list[Problem]], None]] = {
    "Patient": _patient, "Observation": _observation, "Condition": _condition, "AllergyIntolerance": _allergy,
    "Consent": _consent, "Immunization": _immunization, "Composition": _composition,
}


def check(resource: Json) -> list[Problem]:
    """The invariant errors of a structurally valid resource and of its contained resources."""
    out: list[Problem] = []
    rt = resource.get("resourceType")
    rule = RULES.get(rt) if isinstance(rt, str) else None
    if rule is not None:
        rule(resource, str(rt), out)
    for i, c in enumerate(_list(resource.get("contained"))):
        if not isinstance(c, dict):
            continue
        cp = f"{rt}.contained[{i}]"
        # dom-2: contained.contained.empty(); dom-4: contained.meta.versionId.empty() and
        # contained.meta.lastUpdated.empty(); dom-5: contained.meta.security.empty()
        if _exists(c.get("contained")):
            _bad(out, f"{cp}.contained", "dom-2", "a contained resource SHALL NOT contain resources")
        meta: Json = c["meta"] if isinstance(c.get("meta"), dict) else {}
        if _exists(meta.get("versionId")) or _exists(meta.get("lastUpdated")):
            _bad(out, f"{cp}.meta", "dom-4", "a contained resource SHALL NOT have a versionId or lastUpdated")
        if _exists(meta.get("security")):
            _bad(out, f"{cp}.meta.security", "dom-5", "a contained resource SHALL NOT have a security label")
        inner = RULES.get(c.get("resourceType", ""))
        if inner is not None:
            inner(c, cp, out)
    return out


def local_references(resource: Json, references: list[str]) -> list[Problem]:
    """ref-1 (references.html#contained): "reference.startsWith('#').not() or
    (reference.substring(1).trace('url') in %rootResource.contained.id)": a local reference
    names a contained resource of the resource it is in ("#" alone: the container itself).
    ``references`` are the "#..." Reference.reference values the structural walk met.  In a
    Bundle or Parameters each entry is its own root, so they are left to their entries'
    own validation (transactions validate each entry)."""
    rt = resource.get("resourceType")
    if not references or rt in ("Bundle", "Parameters"):
        return []
    ids = {c.get("id") for c in _list(resource.get("contained")) if isinstance(c, dict)}
    return [(str(rt), f"ref-1: the local reference {ref[:70]!r} names no contained resource", "HT-0241")
            for ref in dict.fromkeys(references) if ref != "#" and ref[1:] not in ids][:10]
