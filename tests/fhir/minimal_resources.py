"""A minimal instance of every resource type, built from the required
elements of the model classes the server validates with (fhir.resources R4B):
each required element gets a plain value of its type (a code: the first
allowed one), so a sample is written for each type without copying anyone's
data (tests/fhir/test_capability_behaviour.py)."""
from __future__ import annotations

import types
import typing
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

from hutong.fhir import bindings
from hutong.terminology import core

PRIMITIVE_VALUES: dict[str, Any] = {
    "String": "样例", "Markdown": "样例", "Uri": "http://example.org/sample", "Url": "http://example.org/sample",
    "Canonical": "http://example.org/sample", "DateTime": "2020-01-01", "Date": "2020-01-01",
    "Instant": "2020-01-01T00:00:00Z", "Time": "10:00:00", "Boolean": True, "Integer": 1, "PositiveInt": 1,
    "UnsignedInt": 1, "Integer64": 1, "Decimal": 1, "Id": "sample", "Oid": "urn:oid:1.2.3",
    "Uuid": "urn:uuid:9b1c3a2e-0000-4000-8000-000000000001", "Base64Binary": "AA==",
    "Xhtml": '<div xmlns="http://www.w3.org/1999/xhtml">样例</div>', "Code": "unknown",
}
SPECIAL: dict[str, Any] = {
    "Reference": {"display": "样例"}, "CodeableConcept": {"text": "样例"},
    "Coding": {"system": "http://example.org/codes", "code": "sample"},
    "Resource": {"resourceType": "Basic", "code": {"text": "样例"}}, "Extension": {"url": "http://example.org/x",
                                                                                "valueString": "样例"},
    "Narrative": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">样例</div>'},
}


def _unwrap(ann: Any) -> tuple[Any, bool]:
    is_list = False
    while True:
        origin = typing.get_origin(ann)
        if origin is typing.Union or origin is types.UnionType:
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            ann = args[0]
        elif origin in (list, typing.List):  # noqa: UP006
            is_list = True
            ann = typing.get_args(ann)[0]
        else:
            return ann, is_list


def _value(ann: Any, extra: dict[str, Any], depth: int) -> Any:
    item, is_list = _unwrap(ann)
    value: Any
    if typing.get_origin(item) is typing.Annotated:
        names = [type(m).__name__ for m in typing.get_args(item)[1:]]
        name = next((n for n in names if n in PRIMITIVE_VALUES), "String")
        enum = [v for v in (extra.get("enum_values") or []) if v != "+"]
        value = enum[0] if name == "Code" and enum else PRIMITIVE_VALUES[name]
    elif item is bool:
        value = True
    elif hasattr(item, "get_model_klass"):
        model = item.get_model_klass()
        value = SPECIAL.get(model.__name__) or minimal_element(model, depth + 1)
    else:
        value = "样例"
    return [value] if is_list else value


def minimal_element(cls: Any, depth: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if depth > 6:
        return out
    fields = cls.model_fields
    required = {n for n, f in fields.items() if f.is_required() and n != "resource_type"}
    required |= {n for n, _ext in cls.get_required_fields(None)}
    for n in sorted(required):
        f = fields[n]
        out[f.alias or n] = _value(f.annotation, f.json_schema_extra or {}, depth)
    for _prefix, names in cls.get_one_of_many_fields(None).items():
        extra = fields[names[0]].json_schema_extra or {}
        if extra.get("one_of_many_required"):
            f = fields[names[0]]
            out[f.alias or names[0]] = _value(f.annotation, extra, depth)
    if not out:
        # An element needs some content (datatypes.html#representation): its first simple element.
        for n, f in fields.items():
            if n in ("id", "extension", "modifierExtension", "fhir_comments") or n.endswith("__ext"):
                continue
            item, _ = _unwrap(f.annotation)
            if typing.get_origin(item) is typing.Annotated:
                out[f.alias or n] = _value(f.annotation, f.json_schema_extra or {}, depth)
                break
    return out


# Invariants a required-elements walk cannot see (ait-1, ppc-1), written by hand.
INVARIANTS: dict[str, dict[str, Any]] = {
    "AllergyIntolerance": {"clinicalStatus": {"coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}]}},
    "Consent": {"policyRule": {"text": "样例"}},
}


def _bound(node: dict[str, Any], type_name: str) -> None:
    """Codes the model does not enumerate take the first code of their required
    value set (the R4 binding table hutong.fhir.bindings checks writes against)."""
    t = bindings.tables()
    table = core().base.meta["elements"].get(type_name) or {}
    for k, v in list(node.items()):
        e = table.get(k)
        if e is None:
            continue
        target, vs = e[0], (e[1] if len(e) > 1 else None)
        items = v if isinstance(v, list) else [v]
        for i, item in enumerate(items):
            if target == "code" and vs in t.codes and isinstance(item, str) and item not in t.codes[vs]:
                first = t.listed[vs].split(",")[0].strip()
                if isinstance(v, list):
                    v[i] = first
                else:
                    node[k] = first
            elif isinstance(item, dict) and not target.startswith("@"):
                _bound(item, target)


def minimal_resource(type: str) -> dict[str, Any]:
    body = {"resourceType": type, **minimal_element(get_fhir_model_class(type)), **INVARIANTS.get(type, {})}
    _bound(body, type)
    return body
