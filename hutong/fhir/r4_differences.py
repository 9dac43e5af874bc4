"""Where validation differs from FHIR R4 4.0.1 (issue 15, item 5), listed exactly.

Structure is checked against fhir.resources' R4B models (hutong.fhir.validation:
the maintained model set closest to R4; R4 proper exists only for pydantic
v1).  R4B kept R4's resources and data types almost unchanged; this module
says where not, per type, as computed by comparing every R4 StructureDefinition
of the official package with the models' compiled plans
(``python -m hutong.fhir.r4_differences hl7.fhir.r4.examples-4.0.1.tgz``
writes r4_differences.json; tests/fhir/test_official_examples.py checks it is
current).  Kinds of difference:

* an R4 element the R4B model lacks (an R4 resource using it is refused);
* an R4B element R4 lacks (none left: hutong.fhir.fastvalidate.NOT_R4 takes
  them out of the plans, so they are refused as an R4 server must);
* cardinality (R4 list vs R4B single, R4 required vs R4B optional);
* R4 resource types withdrawn in R4B, not served at all (hutong.fhir.registry).

The CapabilityStatement carries the list in each type's ``documentation``
(hutong.fhir.capability) and the README repeats the summary.  Data types
differ only in Extension.value[x] and ElementDefinition (valueMeta, and
R4B's CodeableReference and RatioRange), listed under ``datatypes``.
"""

from __future__ import annotations

import json
import sys
from functools import cache
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "r4_differences.json"
_SKIP_KEYS = frozenset({"resourceType", "resource_type", "fhir_comments", "id", "extension", "modifierExtension"})


@cache
def differences() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DATA.read_text(encoding="utf-8"))
    return doc


# The terminology service's operations (hutong.web.terminology_routes; terminology-service.html),
# as the CapabilityStatement lists them on their types.
_OP = "http://hl7.org/fhir/OperationDefinition/"
TERMINOLOGY_OPERATIONS: dict[str, list[dict[str, str]]] = {
    "CodeSystem": [{"name": "lookup", "definition": _OP + "CodeSystem-lookup"},
                   {"name": "validate-code", "definition": _OP + "CodeSystem-validate-code"}],
    "ValueSet": [{"name": "expand", "definition": _OP + "ValueSet-expand",
                  "documentation": "type level, by url (or a ValueSet in Parameters); count/offset/filter"},
                 {"name": "validate-code", "definition": _OP + "ValueSet-validate-code"}],
    "ConceptMap": [{"name": "translate", "definition": _OP + "ConceptMap-translate"}],
}


def documentation(resource_type: str) -> str | None:
    """One sentence for the CapabilityStatement's entry of ``resource_type`` (None: as R4)."""
    d = differences()["types"].get(resource_type)
    if not d:
        return None
    return "Validated against the R4B model, which differs from R4 4.0.1 here: " + "; ".join(d) + "."


def rest_documentation() -> str:
    d = differences()
    return ("Structure is validated against the R4B models where R4 and R4B agree (all types but those whose "
            "entry documents a difference), with R4's rules where the models are narrower: an extension's "
            "primitive value may carry its own extensions (_valueString ..., json.html#primitive) and a "
            "reference may be any absolute URL, on a FHIR server or not (references.html#literal); and what R4B "
            "added (subjectCanonical, CodeableReference and RatioRange values) is refused as not R4. Required "
            "bindings (but those to MIME types, UCUM and ISO 4217) and the invariants of Patient, Observation, "
            "Condition, AllergyIntolerance, Consent, Immunization, Composition and of contained resources are "
            "checked on write. R4 types withdrawn in R4B are not served: "
            + ", ".join(d["withdrawn"]) + ". Data types: " + "; ".join(d["datatypes"]) + ".")


# ---------------------------------------------------------------- generation (needs the package)

def _compare(sd: dict[str, Any], plan: Any) -> list[str]:
    from hutong.fhir import fastvalidate as fv  # noqa: PLC0415 (generation only)
    from hutong.terminology.generate import _upper  # noqa: PLC0415

    els = sd["snapshot"]["element"]
    children: dict[str, list[dict[str, Any]]] = {}
    for e in els:
        if "." in e["path"]:
            children.setdefault(e["path"].rsplit(".", 1)[0], []).append(e)
    out: list[str] = []

    def walk(path: str, plan: Any, seen: frozenset[str]) -> None:
        if path in seen:
            return
        seen = seen | {path}
        if not plan.built:
            fv._plan(plan.cls)
        r4: dict[str, tuple[dict[str, Any], str | None]] = {}
        for e in children.get(path, []):
            name = e["path"].rsplit(".", 1)[1]
            if e.get("max") == "0":
                continue
            if "contentReference" in e:
                r4[name] = (e, e["contentReference"].lstrip("#"))
                continue
            for t in e.get("type", []):
                key = name[:-3] + _upper(t["code"]) if name.endswith("[x]") else name
                r4[key] = (e, e["path"] if e["path"] in children else None)
        for key, (e, sub) in r4.items():
            f = plan.fields.get(key)
            if f is None:
                out.append(f"{path}.{key} (R4) is not in R4B: refused")
                continue
            if (e.get("max") != "1") != f[1]:
                out.append(f"{path}.{key} is {'a list' if e.get('max') != '1' else 'single'} in R4, "
                           f"{'a list' if f[1] else 'single'} in R4B")
            required = key in plan.required or any(k == key for k, _x, _l in plan.required_primitives)
            if (e.get("min", 0) >= 1) != required and key not in plan.choice_keys:
                out.append(f"{path}.{key} is {'required' if e.get('min', 0) >= 1 else 'optional'} in R4, "
                           f"{'required' if required else 'optional'} in R4B")
            if sub and f[0] == fv.K_OBJECT:
                walk(sub, f[2], seen)
        for key in plan.fields:
            if not key.startswith("_") and key not in _SKIP_KEYS and key not in r4:
                out.append(f"{path}.{key} (R4B) is not in R4: accepted")

    walk(sd["type"], plan, frozenset())
    return out


def build(tgz: Path) -> dict[str, Any]:
    from fhir.resources.R4B import get_fhir_model_class  # noqa: PLC0415

    from hutong.fhir import fastvalidate as fv  # noqa: PLC0415
    from hutong.fhir.registry import RESOURCE_TYPES  # noqa: PLC0415
    from hutong.terminology.generate import SOURCE, _load  # noqa: PLC0415

    sds = _load(tgz)[0]
    types: dict[str, list[str]] = {}
    withdrawn = []
    datatypes: list[str] = []
    for t, sd in sorted(sds.items()):
        if sd["kind"] == "resource":
            if t not in RESOURCE_TYPES:
                if t not in ("Resource", "DomainResource"):
                    withdrawn.append(t)
                continue
            d = _compare(sd, fv._plan(get_fhir_model_class(t)))
            if d:
                types[t] = d
        elif t not in ("Element", "BackboneElement"):
            try:
                cls = get_fhir_model_class(t)
            except ValueError:
                datatypes.append(f"{t} (R4) has no R4B model: refused where used")
                continue
            datatypes += _compare(sd, fv._plan(cls))
    return {"source": SOURCE, "types": types, "withdrawn": withdrawn, "datatypes": datatypes}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m hutong.fhir.r4_differences hl7.fhir.r4.examples-4.0.1.tgz")
    DATA.write_text(json.dumps(build(Path(sys.argv[1])), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
