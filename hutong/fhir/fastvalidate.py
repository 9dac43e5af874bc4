"""Fast structural validation compiled from fhir.resources' R4B models.

``hutong.fhir.validation`` used to run every resource through
``get_fhir_model_class(rt).model_validate(resource)``.  fhir_core makes that
slow (~160-200 us a resource): every complex element goes through Python wrap
validators, a before-validator (``reject_null_complex_elements``), an
after-validator (required primitives, ``one_of_many`` choice groups) and the
primitive checks are Python functions around pydantic's.

This module reads the same model classes (``model_fields``: alias = JSON name,
annotation = type and cardinality, ``get_required_fields()``,
``get_one_of_many_fields()``) and compiles, lazily and once per model class, a
*plan*: a dict of JSON key -> (kind, is-a-list, argument) plus the class's
required keys, choice groups and special rules.  ``validate_fast`` then walks a
JSON dict against the plans in one tight loop.  The model is compiled, not
hand-written: a new fhir.resources release brings its own plans.

Semantics mirrored (each found by running the library on probe inputs):

* unknown keys are rejected (``extra="forbid"``); the models also accept
  their Python field names (``populate_by_name``: ``family__ext``,
  ``class_fhir``) - a dict using one is handed to the library (see below);
* ``resourceType`` / ``resource_type`` are accepted on *every* element when
  null or equal to the class's type name (``FHIRAbstractModel.__init__``);
  ``resourceType`` wins when both are present, unless it is an element of
  the model (``ExampleScenario.instance.resourceType``);
* contained / ``Bundle.entry.resource`` / ``Parameters.parameter.resource``
  dispatch on ``resourceType`` (missing -> the bare ``Resource`` model, a
  non-resource class name -> rejected, an unknown name or a non-string ->
  the library raises KeyError/TypeError, so rejected);
* required elements: pydantic-required complex elements must be present (an
  explicit ``null`` is accepted for a single one, rejected for a list); required
  primitives (``get_required_fields``) must be non-null unless their ``_x``
  sibling has a non-empty ``extension`` (required primitive *lists* have no
  such escape: the library crashes with AttributeError, i.e. rejects);
* choice groups: at most one non-null member (exactly one if required);
* null inside a list of complex elements is rejected, inside a primitive
  list or a ``_x`` list it is a placeholder and accepted; ``[]``, ``{}`` and
  nulls elsewhere are accepted, as the library does;
* ``_x`` siblings are FHIRPrimitiveExtension: id (string), extension,
  fhir_comments, at least one of them non-null;
* primitives, for values of their JSON type, exactly as fhir_core/pydantic:
  string = at least one character that is not one of the Unicode White_Space
  characters other than space, TAB, CR, LF (pydantic runs the pattern
  ``[ \\r\\n\\t\\S]+`` unanchored with Rust's regex, whose ``\\s`` is Unicode
  White_Space, not Python's ``str.isspace``) and no lone surrogate; code =
  ``[^\\s]+(\\s[^\\s]+)*`` with that ``\\s``; id = ``[A-Za-z0-9\\-.]{1,255}``
  (bounds read from fhir_core.constraints); uri, canonical, markdown = any
  string without lone surrogates (their patterns match everything), xhtml and
  fhir_comments = any string; integer/unsignedInt/positiveInt = int in range
  (bool counts as int, as in pydantic's lax mode); decimal = int (below
  4300 digits, Python's int->str limit the library trips on) or finite float;
  date/dateTime/instant/time = fhir_core's own regexes plus a calendar check
  of full dates (a leap second ``:60`` is accepted as fhir_core does);
  base64Binary = ``base64.b64decode`` succeeds (non-alphabet characters are
  dropped, only bad padding fails).

Whatever is not the value's usual JSON type (``"true"`` or ``1`` for a
boolean, ``"5"`` or ``1.0`` for an integer, ``0`` for a date, a JSON document
in a *string* for a complex element - the library parses it! -, a tuple,
...) and the rare primitive types (uuid, url, oid) is checked by a pydantic
``TypeAdapter`` of the very annotation the model uses, so the lenient
coercions the library accepts are accepted here too, and nothing it rejects
gets through.  The fast path only decides what it can decide exactly.

Nesting deeper than 32 objects (real data stays under 10) is handed to the
library whole: it runs out of stack somewhere past ~120 nested extensions
(RecursionError, i.e. a rejection) and only it knows where, in the caller's
stack.  Plans are built under a lock, so concurrent callers are safe.

Known differences (the fast validator is never more lenient than the library,
except in the second, where R4 itself allows more):

* the top-level ``resourceType`` must name a resource class (the library would
  validate ``{"resourceType": "HumanName"}`` against HumanName when asked
  to; hutong only ever asks for resource types);
* a primitive's ``_x`` sibling the R4B models leave out (Extension
  ``_valueString`` ..., StructureMap ``_import``) is accepted, on purpose: R4
  allows it (json.html#primitive; the official R4 examples use it), and it gets
  the same checks as every other ``_x`` (``_add_missing_primitive_extensions``);
* the elements R4B added to R4 (:data:`NOT_R4`: subjectCanonical, the
  CodeableReference and RatioRange values) are refused, as an R4 server must;
* nothing else is known: tests/fhir/test_fastvalidate.py compares both on
  14k real resources, on generated instances of every resource type, on
  thousands of mutants of both and on thousands of primitive values; it
  requires that the fast validator accepts nothing the library rejects and
  finds no resource the other way round either (soaks of several hundred
  thousand mutants found none).

Error paths are FHIRPath-like (``Patient.name[0].family``,
``Patient.contained[0].status``); messages are short and our own (the
library's are used for the delegated cases).

API: ``validate_fast(resource) -> [(path, message)]``, [] when valid;
``validate_fast_refs(resource, reference_ok) -> (problems, bad_references)``
also offers every ``Reference.reference`` string to ``reference_ok`` in the
same walk (no second pass over the resource to check literal references);
``python -m hutong.fhir.fastvalidate FILE.ndjson...`` times both validators.
"""

from __future__ import annotations

import binascii
import math
import re
import sys
import threading
import types
import typing
from collections.abc import Callable
from typing import Any

from annotated_types import Ge, Le, MaxLen, MinLen
from fhir.resources.R4B import fhirtypes as _ft
from fhir.resources.R4B import get_fhir_model_class
from fhir_core import constraints as _fc_constraints
from fhir_core import types as _fct
from fhir_core.constraints import FHIR_TYPES_MAPS
from fhir_core.fhirabstractmodel import FHIRAbstractModel
from fhir_core.types import FhirBase, FhirElementOrResourceBase
from fhir_core.utils import is_list_type, is_primitive_type
from pydantic import TypeAdapter, ValidationError
from pydantic._internal._validators import import_string

from hutong.store.exactjson import Decimal as ExactDecimal  # a float that keeps its JSON text

__all__ = ["validate_fast", "validate_fast_refs", "is_valid"]

Problem = tuple[str, str]

# ---------------------------------------------------------------- primitives

# Rust regex ``\s`` = Unicode White_Space (pydantic-core runs patterns with the
# regex crate; Python's ``\s`` also has U+001C..U+001F, which Rust's has not).
_WS = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_WS_CLASS = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# White_Space minus the four characters the string pattern lists explicitly.
_WS_NOT_STRING = "".join(c for c in _WS if c not in " \r\n\t")
_SURROGATE = re.compile("[\ud800-\udfff]")
_CODE_RE = re.compile(f"[^{_WS_CLASS}\ud800-\udfff]+(?:[{_WS_CLASS}][^{_WS_CLASS}\ud800-\udfff]+)*")


def _id_regex() -> re.Pattern[str]:
    """id: the bounds and pattern fhir_core.types.Id yields (from fhir_core.constraints)."""
    lo, hi = 0, None
    for m in _fct.Id():
        if isinstance(m, MinLen):
            lo = m.min_length
        elif isinstance(m, MaxLen):
            hi = m.max_length
    pattern = getattr(_fc_constraints, "TYPES_ID_PATTERN", _fct.Id.pattern)
    if pattern != r"^[A-Za-z0-9\-.]+$":  # patched by the deployment: let pydantic decide
        raise LookupError(pattern)
    return re.compile(rf"[A-Za-z0-9\-.]{{{max(lo, 1)},{'' if hi is None else hi}}}")


_DATE_RE = _fct.Date.pattern
_DATETIME_RE = _fct.DateTime.pattern
_INSTANT_RE = _fct.Instant.pattern
_TIME_RE = _fct.Time.pattern
_DAYS = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_DEC_INT_LIMIT = 10 ** sys.get_int_max_str_digits() if sys.get_int_max_str_digits() else None


def _full_date_ok(s: str) -> bool:
    """``s[:10]`` is YYYY-MM-DD (already matched by the regex): is it a real day?"""
    day = int(s[8:10])
    month = int(s[5:7])
    if day <= 28 or (day <= _DAYS[month] and month != 2):
        return True
    if month != 2 or day > 29:
        return False
    y = int(s[:4])
    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)


# kinds ---------------------------------------------------------------------
K_STRING, K_CODE, K_ID, K_URI, K_RAWSTR, K_BOOL, K_INT, K_DECIMAL = range(8)
K_DATE, K_DATETIME, K_INSTANT, K_TIME, K_BASE64, K_ADAPTER = range(8, 14)
K_OBJECT, K_RESOURCE, K_COMMENTS, K_SLOW = range(14, 18)
K_REFERENCE = 18  # Reference.reference: a string, also offered to validate_fast_refs's reference_ok

_PRIMITIVES: list[tuple[Any, int, str]] = [
    (_fct.StringType, K_STRING, "string"),
    (_fct.CodeType, K_CODE, "code"),
    (_fct.IdType, K_ID, "id"),
    (_fct.UriType, K_URI, "uri"),
    (_fct.CanonicalType, K_URI, "canonical"),
    (_fct.MarkdownType, K_URI, "markdown"),
    (_fct.XhtmlType, K_RAWSTR, "xhtml"),
    (_fct.BooleanType, K_BOOL, "boolean"),
    (_fct.IntegerType, K_INT, "integer"),
    (_fct.UnsignedIntType, K_INT, "unsignedInt"),
    (_fct.PositiveIntType, K_INT, "positiveInt"),
    (_fct.Integer64Type, K_INT, "integer64"),
    (_fct.DecimalType, K_DECIMAL, "decimal"),
    (_fct.DateType, K_DATE, "date"),
    (_fct.DateTimeType, K_DATETIME, "dateTime"),
    (_fct.InstantType, K_INSTANT, "instant"),
    (_fct.TimeType, K_TIME, "time"),
    (_fct.Base64BinaryType, K_BASE64, "base64Binary"),
    (_fct.OidType, K_ADAPTER, "oid"),
    (_fct.UuidType, K_ADAPTER, "uuid"),
    (_fct.UrlType, K_ADAPTER, "url"),
]

try:
    _ID_RE: re.Pattern[str] | None = _id_regex()
except LookupError:
    _ID_RE = None

_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _adapter(annotation: Any) -> TypeAdapter[Any]:
    ta = _ADAPTERS.get(annotation)
    if ta is None:
        ta = _ADAPTERS[annotation] = TypeAdapter(annotation)
    return ta


def _int_bounds(annotation: Any) -> tuple[int | None, int | None]:
    lo = hi = None
    for meta in typing.get_args(annotation)[1:]:
        for m in meta if hasattr(meta, "__iter__") else (meta,):
            if isinstance(m, Ge):
                lo = int(m.ge)  # type: ignore[call-overload]
            elif isinstance(m, Le):
                hi = int(m.le)  # type: ignore[call-overload]
    return lo, hi


# ---------------------------------------------------------------- plans

class Spec:
    """How one JSON key of one model is checked."""

    __slots__ = ("kind", "is_list", "arg", "item_ann", "field_ann", "null_item_ok", "null_ok", "type_name")

    def __init__(self, kind: int, is_list: bool, arg: Any, item_ann: Any, field_ann: Any,
                 null_item_ok: bool, null_ok: bool, type_name: str) -> None:
        self.kind = kind
        self.is_list = is_list
        self.arg = arg  # Plan for K_OBJECT, "Resource"/"Element" for K_RESOURCE, (lo, hi) for K_INT
        self.item_ann = item_ann  # annotation of one item (for the TypeAdapter fallback)
        self.field_ann = field_ann  # annotation of the whole field
        self.null_item_ok = null_item_ok
        self.null_ok = null_ok
        self.type_name = type_name


class Plan:
    __slots__ = ("cls", "rtype", "fields", "py_names", "required", "required_primitives", "choice_keys",
                 "choice_groups", "required_groups", "primitive_extension", "rt_is_element", "post", "built",
                 "building")

    def __init__(self, cls: type[FHIRAbstractModel]) -> None:
        self.cls = cls
        self.rtype = cls.__resource_type__
        self.fields: dict[str, tuple[int, bool, Any, Spec]] = {}  # key -> (kind, is_list, arg, spec)
        self.py_names: frozenset[str] = frozenset()
        self.required: tuple[str, ...] = ()
        self.required_primitives: tuple[tuple[str, str | None, bool], ...] = ()
        self.choice_keys: frozenset[str] = frozenset()
        self.choice_groups: dict[str, tuple[str, bool]] = {}  # key -> (group, required)
        self.required_groups: tuple[str, ...] = ()
        self.primitive_extension = False
        self.rt_is_element = "resourceType" in cls.model_fields
        self.post = False
        self.built = False
        self.building = False


_PLANS: dict[type, Plan] = {}
_COMMENTS_ANNOTATION: Any = typing.Union[str, typing.List[str], None]  # noqa: UP006,UP007


def _entry(spec: Spec) -> tuple[int, bool, Any, Spec]:
    return (spec.kind, spec.is_list, spec.arg, spec)


def _unwrap_optional(ann: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(ann)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        optional = len(args) != len(typing.get_args(ann))
        if len(args) == 1:
            return args[0], optional
        return typing.Union[tuple(args)], optional  # noqa: UP007 - a real union: handled slowly
    return ann, False


def _classify(item: Any) -> tuple[int, Any, str]:
    """Kind, argument and FHIR type name for one item annotation."""
    if isinstance(item, type) and issubclass(item, FhirBase):
        model = item.get_model_klass()
        if issubclass(item, FhirElementOrResourceBase):
            if model.__name__ in ("Resource", "Element"):
                return K_RESOURCE, model.__name__, model.__name__
            return K_SLOW, None, model.__name__
        return K_OBJECT, model, model.__name__
    for ann, kind, name in _PRIMITIVES:
        if item == ann:
            if kind == K_INT:
                return kind, _int_bounds(ann), name
            if kind == K_ID and _ID_RE is None:
                return K_ADAPTER, None, name
            return kind, None, name
    return K_SLOW, None, str(item)


def _plan(cls: type[FHIRAbstractModel]) -> Plan:
    """The class's plan, built (with every element class it reaches) on first use.

    ``built`` is set only once a plan is complete, under a lock: another
    thread never walks a half-built plan.  A class met again while its own
    build is under way (recursive elements) gets its unfinished shell.
    """
    plan = _PLANS.get(cls)
    if plan is not None and plan.built:
        return plan
    with _BUILD_LOCK:
        plan = _PLANS.get(cls)
        if plan is None:
            plan = _PLANS[cls] = Plan(cls)
        if plan.built or plan.building:
            return plan
        plan.building = True
        try:
            _build(plan)
        finally:
            plan.building = False
        plan.built = True
        return plan


_BUILD_LOCK = threading.RLock()


def _build(plan: Plan) -> None:
    cls = plan.cls
    py_names = set()
    required = []
    children: list[type[FHIRAbstractModel]] = []
    for name, field in cls.model_fields.items():
        key = field.alias or name
        if name != key:
            py_names.add(name)
        ann: Any = field.annotation
        if name == "fhir_comments" and ann == _COMMENTS_ANNOTATION:
            plan.fields[key] = _entry(Spec(K_COMMENTS, False, None, ann, ann, False, True, "fhir_comments"))
            continue
        inner, optional = _unwrap_optional(ann)
        is_list = typing.get_origin(inner) is list
        if is_list:
            item, item_optional = _unwrap_optional(typing.get_args(inner)[0])
        else:
            item, item_optional = inner, False
        kind, arg, type_name = _classify(item)
        if kind == K_STRING and key == "reference" and cls is get_fhir_model_class("Reference"):
            kind = K_REFERENCE
        if kind == K_SLOW:  # an annotation shape we do not know: the whole field goes to pydantic
            plan.fields[key] = _entry(Spec(K_SLOW, False, None, ann, ann, True, optional, type_name))
            if field.is_required():
                required.append(key)
            continue
        if kind == K_OBJECT:
            children.append(arg)
            arg = _PLANS.get(arg) or _PLANS.setdefault(arg, Plan(arg))
        fhir_base = isinstance(item, type) and issubclass(item, FhirBase)
        # reject_null_complex_elements: lists of complex types, not the _x lists.
        nulls_rejected = is_list_type(field) and not is_primitive_type(field) and not name.endswith("__ext")
        null_item_ok = not nulls_rejected and (item_optional or fhir_base)
        null_ok = optional or (fhir_base and not is_list)
        plan.fields[key] = _entry(Spec(kind, is_list, arg, item, ann, null_item_ok, null_ok, type_name))
        if field.is_required():
            required.append(key)
        elif not null_ok:
            raise TypeError(f"{cls.__name__}.{name}: non-optional field with a default")
    _add_missing_primitive_extensions(cls, plan)
    _drop_r4b_only(cls, plan)
    plan.py_names = frozenset(py_names)
    plan.required = tuple(required)

    alias_of = {n: (f.alias or n) for n, f in cls.model_fields.items()}
    req_prims = []
    for element, ext in cls.get_required_fields(None):  # type: ignore[arg-type]
        field_name = cls.get_alias_mapping()[element]
        key = alias_of[field_name]
        ext_key = alias_of[ext] if ext is not None and ext in cls.model_fields else None
        req_prims.append((key, ext_key, plan.fields[key][1]))
    plan.required_primitives = tuple(req_prims)

    groups: dict[str, tuple[str, bool]] = {}
    for prefix, names in cls.get_one_of_many_fields(None).items():  # type: ignore[arg-type]
        extra = cls.model_fields[names[0]].json_schema_extra or {}
        req = extra.get("one_of_many_required") is True  # type: ignore[union-attr]
        for n in names:
            if alias_of[n] in plan.fields:
                groups[alias_of[n]] = (prefix, req)
    plan.choice_groups = groups
    plan.choice_keys = frozenset(groups)
    plan.required_groups = tuple(sorted({g for g, req in groups.values() if req}))
    plan.primitive_extension = cls.__name__ == "FHIRPrimitiveExtension"
    plan.post = bool(plan.required or plan.required_primitives or groups or plan.primitive_extension)
    for child in children:
        _plan(child)


_PRIMITIVE_KINDS = frozenset({K_STRING, K_CODE, K_ID, K_URI, K_BOOL, K_INT, K_DECIMAL, K_DATE, K_DATETIME,
                              K_INSTANT, K_TIME, K_BASE64, K_ADAPTER, K_REFERENCE})


def _add_missing_primitive_extensions(cls: type[FHIRAbstractModel], plan: Plan) -> None:
    """FHIR R4 json.html#primitive: any primitive value may carry its id and extensions in
    a ``_name`` sibling.  The R4B models leave that sibling out for Extension.value[x]
    (``_valueString`` ...) and StructureMap.import; R4 allows it, so it is added here, with
    the same checks as every other ``_name`` (issue 15, item 5: a deliberate difference
    from the library, which rejects them).  Element.id and Extension.url are XML attributes
    in R4, so they have no ``_name`` (json.html#primitive)."""
    added = [(key, spec) for key, (kind, _l, _a, spec) in plan.fields.items()
             if kind in _PRIMITIVE_KINDS and not key.startswith("_") and "_" + key not in plan.fields
             and key not in ("id", "url")]
    if not added:
        return
    single = get_fhir_model_class("Patient").model_fields["gender__ext"]
    many = get_fhir_model_class("HumanName").model_fields["given__ext"]
    ext_plan = _plan_of_field(single)
    for key, spec in added:
        field = many if spec.is_list else single
        inner, _optional = _unwrap_optional(field.annotation)
        item = _unwrap_optional(typing.get_args(inner)[0])[0] if spec.is_list else inner
        plan.fields["_" + key] = _entry(Spec(K_OBJECT, spec.is_list, ext_plan, item, field.annotation, True, True,
                                             "FHIRPrimitiveExtension"))


# Elements R4B added that R4 4.0.1 does not have (hutong.fhir.r4_differences compares
# the R4 StructureDefinitions with these plans): refused, as an R4 server must.
NOT_R4: dict[str, frozenset[str]] = {
    "ActivityDefinition": frozenset({"subjectCanonical"}),
    "PlanDefinition": frozenset({"subjectCanonical"}),
    "PlanDefinitionAction": frozenset({"subjectCanonical"}),
    "Extension": frozenset({"valueCodeableReference", "valueRatioRange"}),
    "ElementDefinitionExample": frozenset({"valueCodeableReference", "valueRatioRange"}),
    "ElementDefinition": frozenset({f"{p}{t}" for p in ("defaultValue", "fixed", "pattern")
                                    for t in ("CodeableReference", "RatioRange")}),
}


def _drop_r4b_only(cls: type[FHIRAbstractModel], plan: Plan) -> None:
    """Take R4B's additions out of the plan (issue 15, item 5): the fast validator is then
    stricter than the library there, which it may be (it never accepts more)."""
    for key in NOT_R4.get(cls.__name__, ()):
        plan.fields.pop(key, None)


def _plan_of_field(field: Any) -> Plan:
    item, _optional = _unwrap_optional(field.annotation)
    kind, arg, _name = _classify(item)
    assert kind == K_OBJECT, field
    return _PLANS.get(arg) or _PLANS.setdefault(arg, Plan(arg))


_RESOURCE_PLANS: dict[Any, Plan | None] = {}
_RES_PREFIX = _ft.ResourceType._prefix  # type: ignore[attr-defined]


def _dispatch(rt: Any, base: str) -> Plan | None:
    """The plan FhirElementOrResourceBase would pick for ``resourceType: rt``; None = rejected."""
    key = (rt, base)
    try:
        return _RESOURCE_PLANS[key]
    except KeyError:
        pass
    except TypeError:  # unhashable resourceType
        return None
    plan = None
    if isinstance(rt, str):
        path = FHIR_TYPES_MAPS.get(_RES_PREFIX + rt + "Type")
        if path is not None:
            cls = import_string(path)
            if cls.has_resource_base() == (base == "Resource"):
                plan = _plan(cls)
            _RESOURCE_PLANS[key] = plan  # only names the library knows: the cache stays bounded
    return plan


# ---------------------------------------------------------------- checking

def _short(v: Any) -> str:
    try:
        r = repr(v)
    except ValueError:  # an int of more digits than Python will print
        return "<a very long number>"
    return r if len(r) <= 60 else r[:57] + "..."


# A path is the root's name (str) or (parent, key) or (parent, key, index),
# turned into text only when there is a problem to report.
Path = Any


def _fmt(path: Path) -> str:
    parts = []
    while type(path) is tuple:
        parts.append(f".{path[1]}[{path[2]}]" if len(path) == 3 else f".{path[1]}")
        path = path[0]
    return path + "".join(reversed(parts))  # type: ignore[no-any-return]


def _pydantic_problems(e: Exception, path: Path, out: _Out) -> None:
    base = _fmt(path)
    if isinstance(e, ValidationError):
        for err in e.errors(include_url=False)[:20]:
            p = base
            for part in err["loc"]:
                if isinstance(part, int):
                    p += f"[{part}]"
                elif isinstance(part, str) and _JSON_NAME.fullmatch(part) and part not in _PYDANTIC_TAGS:
                    p += "." + part
            out.append((p, str(err["msg"])))
    else:
        out.append((base, f"{type(e).__name__}: {e}"))


_JSON_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PYDANTIC_TAGS = frozenset({"root", "str", "int", "bool", "float", "list", "dict", "json_or_python"})


def _adapt(ann: Any, v: Any, path: Path, out: _Out) -> None:
    """Exact library behaviour for a value off the fast path."""
    try:
        _adapter(ann).validate_python(v)
    except Exception as e:  # noqa: BLE001 - the library raises KeyError/TypeError/AttributeError too
        _pydantic_problems(e, path, out)


def _delegate_object(cls: type[FHIRAbstractModel], d: dict[str, Any], path: Path, out: _Out) -> None:
    try:
        cls.model_validate(d)
    except Exception as e:  # noqa: BLE001
        _pydantic_problems(e, path, out)
    if out.ref_ok is not None:  # not walked by plan: every string under a "reference" key
        base = _fmt(path)
        inside = (base + ".", base + "[")
        out.bad_refs[:] = [(p, v) for p, v in out.bad_refs if not p.startswith(inside)]  # met before handing over
        _walk_references(d, base, out)


def _walk_references(node: Any, path: str, out: _Out) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            p = f"{path}.{k}"
            if k == "reference" and isinstance(v, str):
                if not out.ref_ok(v):  # type: ignore[misc]
                    out.bad_refs.append((p, v))
            elif isinstance(v, dict | list):
                _walk_references(v, p, out)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            if isinstance(v, dict | list):
                _walk_references(v, f"{path}[{i}]", out)


class _Out(list[Problem]):
    """The problems found, and what validate_fast_refs asks about references."""

    __slots__ = ("ref_ok", "bad_refs")

    def __init__(self, ref_ok: Callable[[str], object] | None) -> None:
        super().__init__()
        self.ref_ok = ref_ok
        self.bad_refs: list[tuple[str, str]] = []


def _primitive_ok(kind: int, arg: Any, v: Any) -> bool | None:
    """True/False for a value of its usual JSON type; None: let pydantic decide."""
    tv = type(v)
    if tv is str:
        if kind == K_STRING or kind == K_REFERENCE:
            if v.isascii():
                return bool(v.strip("\x0b\x0c"))
            return bool(v.strip(_WS_NOT_STRING)) and _SURROGATE.search(v) is None
        if kind == K_CODE:
            return _CODE_RE.fullmatch(v) is not None
        if kind == K_URI:
            return v.isascii() or _SURROGATE.search(v) is None
        if kind == K_DATETIME:
            if _DATETIME_RE.fullmatch(v) is None:
                return False
            return len(v) < 10 or _full_date_ok(v)
        if kind == K_ID:
            return _ID_RE.fullmatch(v) is not None  # type: ignore[union-attr]
        if kind == K_DATE:
            if _DATE_RE.fullmatch(v) is None:
                return False
            return len(v) < 10 or _full_date_ok(v)
        if kind == K_INSTANT:
            return _INSTANT_RE.fullmatch(v) is not None and _full_date_ok(v)
        if kind == K_RAWSTR:
            return True
        if kind == K_TIME:
            return _TIME_RE.fullmatch(v) is not None
        if kind == K_BASE64:
            if not v.isascii():
                return None  # pydantic encodes to UTF-8 first, then drops what is not base64
            try:
                binascii.a2b_base64(v)
            except (binascii.Error, ValueError):
                return False
            return True
        return None
    if kind == K_BOOL:
        return True if tv is bool else None
    if kind == K_DECIMAL:
        if tv is float or tv is ExactDecimal:
            return math.isfinite(v)
        if tv is int:  # the library runs str(v): Python refuses ints of too many digits
            return _DEC_INT_LIMIT is None or -_DEC_INT_LIMIT < v < _DEC_INT_LIMIT
        return None
    if kind == K_INT:
        if tv is int:
            lo, hi = arg
            return (lo is None or v >= lo) and (hi is None or v <= hi)
        return None
    return None


class _TooDeep(Exception):
    """Nesting deeper than real data goes: the library decides (it may run out of stack)."""


_MAX_DEPTH = 32


def _check_item(spec: Spec, v: Any, path: Path, out: _Out, depth: int, in_list: bool) -> None:
    """Everything off the inlined fast path of _check_object, with the problems it finds."""
    kind = spec.kind
    if v is None:
        if in_list:
            if not spec.null_item_ok:
                out.append((_fmt(path), "null is not allowed in this list"))
        elif not spec.null_ok:
            if kind == K_SLOW:
                _adapt(spec.field_ann, v, path, out)
            else:
                out.append((_fmt(path), "null is not allowed"))
        return
    if spec.is_list and not in_list:  # not a list (lists are walked by _check_object)
        _adapt(spec.field_ann, v, path, out)
        return
    if kind == K_OBJECT:
        if type(v) is dict:
            _check_object(spec.arg, v, path, out, depth + 1)
        elif isinstance(v, (str, bytes)) or not isinstance(v, (int, float, list)):
            _adapt(spec.item_ann, v, path, out)  # the library parses a JSON string here
        else:
            out.append((_fmt(path), f"expected a {spec.type_name} object, got {type(v).__name__}"))
        return
    if kind == K_RESOURCE:
        if type(v) is dict:
            if "resourceType" in v:
                plan = _dispatch(v["resourceType"], spec.arg)
                if plan is None:
                    out.append((_fmt(path), f"resourceType {_short(v['resourceType'])} is not a "
                                            f"{spec.arg.lower()} type"))
                    return
            else:
                plan = _plan(get_fhir_model_class(spec.arg))
            _check_object(plan, v, path, out, depth + 1)
        else:
            _adapt(spec.item_ann, v, path, out)
        return
    if kind == K_COMMENTS:
        if not (type(v) is str or (type(v) is list and all(type(x) is str for x in v))):
            _adapt(spec.field_ann, v, path, out)
        return
    if kind == K_SLOW:
        _adapt(spec.field_ann, v, path, out)
        return
    if kind == K_ADAPTER:
        _adapt(spec.item_ann, v, path, out)
        return
    ok = _primitive_ok(kind, spec.arg, v)
    if ok is None:
        _adapt(spec.item_ann, v, path, out)
    elif not ok:
        out.append((_fmt(path), f"invalid {spec.type_name} {_short(v)}"))


def _odd_key(plan: Plan, d: dict[str, Any], k: str, v: Any, path: Path, out: _Out) -> bool:
    """A key that is no element's JSON name; True when the whole object was handed to the library."""
    # FHIRAbstractModel.__init__: resource_type, overridden by resourceType unless
    # that is an element of the model (ExampleScenario.instance.resourceType).
    if k == "resourceType" or (k == "resource_type" and ("resourceType" not in d or plan.rt_is_element)):
        if v is not None and v != plan.rtype:
            out.append((_fmt((path, k)), f"resourceType must be {plan.rtype}, not {_short(v)}"))
    elif k == "resource_type":
        pass
    elif k in plan.py_names:  # populate_by_name: the library takes Python field names too
        _delegate_object(plan.cls, d, path, out)
        return True
    elif k in NOT_R4.get(plan.cls.__name__, ()):
        out.append((_fmt((path, k)), "an R4B element, not in FHIR R4 4.0.1"))
    else:
        out.append((_fmt((path, k)), "unknown element"))
    return False


def _check_object(plan: Plan, d: dict[str, Any], path: Path, out: _Out, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise _TooDeep
    if not plan.built:
        _plan(plan.cls)
    fields = plan.fields
    for k, v in d.items():
        f = fields.get(k)
        if f is None:
            if _odd_key(plan, d, k, v, path, out):
                return
            continue
        kind, is_list, arg, spec = f
        if is_list:
            if type(v) is list:
                i = 0
                if kind == K_OBJECT:
                    for item in v:
                        if type(item) is dict:
                            _check_object(arg, item, (path, k, i), out, depth + 1)
                        else:
                            _check_item(spec, item, (path, k, i), out, depth, True)
                        i += 1
                else:
                    for item in v:
                        if type(item) is not str or not (
                            (kind == K_STRING and item.isascii() and item.strip("\x0b\x0c"))
                            or (kind == K_URI and item.isascii())
                            or (kind == K_CODE and _CODE_FULL(item) is not None)
                        ):
                            _check_item(spec, item, (path, k, i), out, depth, True)
                        i += 1
                continue
        elif kind == K_OBJECT:
            if type(v) is dict:
                _check_object(arg, v, (path, k), out, depth + 1)
                continue
        elif type(v) is str:
            if kind == K_STRING:
                if v.isascii():
                    if v.strip("\x0b\x0c"):
                        continue
                elif v.strip(_WS_NOT_STRING) and _SURROGATE_SEARCH(v) is None:
                    continue
            elif kind == K_CODE:
                if _CODE_FULL(v) is not None:
                    continue
            elif kind == K_URI:
                if v.isascii():
                    continue
            elif kind == K_REFERENCE:
                if out.ref_ok is not None and not out.ref_ok(v):
                    out.bad_refs.append((_fmt((path, k)), v))
                if v.isascii():
                    if v.strip("\x0b\x0c"):
                        continue
                elif v.strip(_WS_NOT_STRING) and _SURROGATE_SEARCH(v) is None:
                    continue
            elif kind == K_DATETIME:
                if _DATETIME_FULL(v) is not None and (len(v) < 10 or _full_date_ok(v)):
                    continue
            elif kind == K_ID:
                if _ID_FULL(v) is not None:
                    continue
            elif kind == K_INSTANT:
                if _INSTANT_FULL(v) is not None and _full_date_ok(v):
                    continue
            elif kind == K_DATE:
                if _DATE_FULL(v) is not None and (len(v) < 10 or _full_date_ok(v)):
                    continue
        elif v is True or v is False:
            if kind == K_BOOL:
                continue
        elif kind == K_DECIMAL:
            if type(v) is float or type(v) is ExactDecimal:
                if v - v == 0.0:  # finite
                    continue
            elif type(v) is int and -_DEC_INT_FAST < v < _DEC_INT_FAST:
                continue
        _check_item(spec, v, (path, k), out, depth, False)
    if plan.post:
        _post_checks(plan, d, path, out)


_CODE_FULL = _CODE_RE.fullmatch
_DATETIME_FULL = _DATETIME_RE.fullmatch
_INSTANT_FULL = _INSTANT_RE.fullmatch
_DATE_FULL = _DATE_RE.fullmatch
_DEC_INT_FAST = 10**18  # surely printable, whatever sys.set_int_max_str_digits says
_ID_FULL = _ID_RE.fullmatch if _ID_RE is not None else (lambda v: None)
_SURROGATE_SEARCH = _SURROGATE.search


def _post_checks(plan: Plan, d: dict[str, Any], path: Path, out: _Out) -> None:
    for key in plan.required:
        if key not in d:
            out.append((_fmt((path, key)), "required element is missing"))
    for key, ext_key, is_list in plan.required_primitives:
        if d.get(key) is not None:
            continue
        if ext_key is not None and not is_list:
            ext = d.get(ext_key)
            if ext is not None and type(ext) is not dict:
                _delegate_object(plan.cls, d, path, out)  # a JSON string for _x: let the library decide
                continue
            if ext is not None:
                exts = ext.get("extension")
                if exts and type(exts) is list:
                    continue
        out.append((_fmt((path, key)), "required element is missing (or has neither value nor extension)"))
    if plan.choice_keys:
        seen: dict[str, str] = {}
        present: Any = plan.choice_keys.intersection(d)
        if len(present) > 1:
            present = sorted(present)
        for key in present:
            if d[key] is None:
                continue
            group = plan.choice_groups[key][0]
            if group in seen:
                out.append((_fmt((path, key)), f"only one of {group}[x] is allowed (also {seen[group]})"))
            else:
                seen[group] = key
        for group in plan.required_groups:
            if group not in seen:
                out.append((_fmt((path, group + "[x]")), f"one of {group}[x] is required"))
    if plan.primitive_extension:
        if d.get("id") is None and d.get("extension") is None and d.get("fhir_comments") is None:
            out.append((_fmt(path), "a primitive's extension element needs id, extension or fhir_comments"))


def validate_fast(resource: Any) -> list[Problem]:
    """Problems in ``resource`` as fhir.resources R4B would see them: [] when valid.

    Each problem is (FHIRPath-like element path, message).  A resource this
    accepts is one ``get_fhir_model_class(rt).model_validate`` accepts.
    """
    return _run(resource, None)


def validate_fast_refs(resource: Any, reference_ok: Callable[[str], object]) -> tuple[list[Problem],
                                                                                   list[tuple[str, str]]]:
    """validate_fast, plus the (path, value) of each ``Reference.reference`` string
    for which ``reference_ok`` is falsy (e.g. ``REF_RE.match``).

    Only Reference.reference is offered, not the uri-typed elements that are
    also named ``reference`` (DetectedIssue.reference, Expression.reference,
    Immunization.education.reference).  Inside an object handed to the library
    (Python field names as keys, nesting deeper than 32) every string under a
    ``reference`` key is offered, as no plan tells which are References.
    """
    out = _Out(reference_ok)
    problems = _run(resource, out)
    return problems, out.bad_refs


def _run(resource: Any, out: _Out | None) -> list[Problem]:
    if not isinstance(resource, dict):
        return [("", "a resource must be a JSON object")]
    rt = resource.get("resourceType")
    if not isinstance(rt, str):
        return [("resourceType", "missing resourceType")]
    plan = _dispatch(rt, "Resource")
    if plan is None:
        return [("resourceType", f"unknown resource type {_short(rt)}")]
    if out is None:
        out = _Out(None)
    try:
        _check_object(plan, resource, rt, out, 0)
    except _TooDeep:
        out.clear()
        out.bad_refs.clear()
        _delegate_object(plan.cls, resource, rt, out)
    return list(out)


def is_valid(resource: Any) -> bool:
    return not validate_fast(resource)


def _bench(argv: list[str]) -> None:
    """``python -m hutong.fhir.fastvalidate FILE.ndjson...``: us/resource, both validators.

    Passes alternate between the two (the machine may be shared); the best pass
    of each is reported, with the median of the per-pass ratios.
    """
    import time

    import orjson

    resources = []
    for name in argv:
        with open(name, "rb") as f:
            resources += [orjson.loads(line) for line in f if line.strip()]
    if not resources:
        raise SystemExit("usage: python -m hutong.fhir.fastvalidate FILE.ndjson...")
    rejected = sum(1 for r in resources if validate_fast(r))

    def library(r: dict[str, Any]) -> None:
        get_fhir_model_class(r["resourceType"]).model_validate(r)

    def one_pass(fn: Any) -> float:
        t = time.perf_counter()
        for r in resources:
            try:
                fn(r)
            except ValidationError:
                pass
        return (time.perf_counter() - t) / len(resources) * 1e6

    one_pass(library)
    lib, fast = [], []
    for _ in range(5):
        lib.append(one_pass(library))
        fast.append(one_pass(validate_fast))
    ratios = sorted(a / b for a, b in zip(lib, fast, strict=True))
    print(f"{len(resources)} resources ({rejected} rejected): model_validate {min(lib):.1f} us, "
          f"validate_fast {min(fast):.1f} us, x{min(lib) / min(fast):.1f} (median pass x{ratios[2]:.1f})")


if __name__ == "__main__":
    _bench(sys.argv[1:])
