"""_summary and _elements (search.html#summary, search.html#elements)."""

from __future__ import annotations

from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

# v3-ObservationValue SUBSETTED: the resource is not complete.
SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED",
             "display": "Resource encoded in summary mode"}
MANDATORY = ("resourceType", "id", "meta")


@cache
def summary_elements(type: str) -> frozenset[str]:
    """Top-level elements flagged isSummary in the R4 definitions."""
    cls = get_fhir_model_class(type)
    out = set()
    for name, f in cls.model_fields.items():
        extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
        if extra.get("summary_element_property"):
            out.add(f.alias or name)
    return frozenset(out)


def subset(resource: dict[str, Any], elements: list[str] | None, summary: str | None) -> dict[str, Any]:
    rt = resource["resourceType"]
    if elements:
        keep = set(MANDATORY) | {e.split(".", 1)[-1] if e.startswith(rt + ".") else e for e in elements}
        out = {k: v for k, v in resource.items() if k in keep}
    elif summary == "true":
        keep = set(MANDATORY) | summary_elements(rt)
        out = {k: v for k, v in resource.items() if k in keep}
    elif summary == "text":
        out = {k: v for k, v in resource.items() if k in (*MANDATORY, "text")}
    elif summary == "data":
        out = {k: v for k, v in resource.items() if k != "text"}
    else:
        return resource
    meta = dict(out.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    out["meta"] = meta
    return out
