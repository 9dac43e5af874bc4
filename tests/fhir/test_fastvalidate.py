"""hutong.fhir.fastvalidate against fhir.resources R4B, differentially.

The fast validator must never accept what the library rejects.  Real data
(synthea-10 and a small synthetic region) must pass both; then seeded
mutants of real resources and of resources generated from the model plans
of every resource type, and primitive values of every type, are judged by
both.  A mutant only the fast validator rejects would be allowed but is
counted and bounded (none is known: see the module docstring of
fastvalidate); one only the library rejects fails the test.
"""

from __future__ import annotations

import glob
import random
from pathlib import Path
from typing import Any

import orjson
import pytest
from fhir.resources.R4B import get_fhir_model_class
from harness import SYNTHEA

from hutong.fhir import fastvalidate as fv
from hutong.fhir.fastvalidate import validate_fast

# ---------------------------------------------------------------- oracle

def library_accepts(resource: Any) -> bool:
    """What hutong.fhir.validation asks of the library: a resource type, and model_validate;
    with the one deliberate difference (fastvalidate._add_missing_primitive_extensions):
    the ``_x`` siblings the R4B models lack (Extension ``_valueString`` ..., StructureMap
    ``_import``) are judged as any other primitive's sibling, then taken out."""
    rt = resource.get("resourceType") if isinstance(resource, dict) else None
    if not isinstance(rt, str) or fv._dispatch(rt, "Resource") is None:
        return False
    try:
        siblings: list[Any] = []
        stripped = _strip_r4_siblings(resource, siblings)
        for single, value in siblings:
            if single:
                get_fhir_model_class("Patient").model_validate({"resourceType": "Patient", "_gender": value})
            else:
                get_fhir_model_class("HumanName").model_validate({"_given": value})
        get_fhir_model_class(rt).model_validate(stripped)
    except Exception:  # noqa: BLE001 - the library also raises KeyError, TypeError, AttributeError
        return False
    return True


def _extension_plan() -> Any:
    return fv._plan(get_fhir_model_class("Extension"))


def _strip_r4_siblings(node: Any, out: list[Any], key: str | None = None) -> Any:
    if isinstance(node, list):
        return [_strip_r4_siblings(x, out, key) for x in node]
    if not isinstance(node, dict):
        return node
    d = {}
    is_extension = key in ("extension", "modifierExtension")
    for k, v in node.items():
        if is_extension and k.startswith("_value") and k in _extension_plan().fields:
            out.append((True, v))
        elif node.get("resourceType") == "StructureMap" and k == "_import":
            out.append((False, v))
        else:
            d[k] = _strip_r4_siblings(v, out, k)
    return d


def _load(paths: list[Path]) -> list[dict[str, Any]]:
    out = []
    for p in paths:
        with open(p, "rb") as f:
            out += [orjson.loads(line) for line in f if line.strip()]
    return out


@pytest.fixture(scope="module")
def synthea() -> list[dict[str, Any]]:
    paths = [Path(p) for p in sorted(glob.glob(str(SYNTHEA / "*.ndjson"))) if not p.endswith("log.ndjson")]
    if not paths:
        pytest.skip("synthea-10 sample data not present")
    return _load(paths)


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    from hutong.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("fastvalidate") / "r"
    generate(out, SynthConfig(residents=60, institutions=5, seed=3))
    paths = sorted(p for p in out.glob("*.ndjson") if p.name[:1].isupper())
    assert paths
    return _load(paths)


# ---------------------------------------------------------------- generator of valid instances

_VALID: dict[str, list[Any]] = {
    "string": ["x", "Hello world", " padded ", "王建新", "\t tab", "\x1c"],
    "code": ["final", "a b", "10*9/L", "男"],
    "id": ["a", "abc-1.2", "A" * 64],
    "uri": ["http://loinc.org", "", "urn:oid:1.2.3", "a b", "http://例子.cn/é"],
    "canonical": ["http://hl7.org/fhir/StructureDefinition/x|1.0"],
    "markdown": ["**x**", ""],
    "xhtml": ['<div xmlns="http://www.w3.org/1999/xhtml">x</div>'],
    "boolean": [True, False],
    "integer": [0, -5, 2147483647, -2147483648],
    "unsignedInt": [0, 7],
    "positiveInt": [1, 42],
    "integer64": [1],
    "decimal": [0, 1.5, -0.25, 1e-7, 10**20, 3, 10**4299, -(10**25), 1e300],
    "date": ["2020", "2020-02", "2020-02-29", "1999-12-31"],
    "dateTime": ["2020", "2021-03", "2020-02-29", "2020-01-01T10:00:00Z", "2016-12-31T23:59:60+14:00",
                 "2020-06-30T23:59:59.123456789-05:00"],
    "instant": ["2020-01-01T10:00:00Z", "2020-02-29T00:00:00.5+08:00"],
    "time": ["10:00:00", "23:59:60", "00:00:00.25"],
    "base64Binary": ["aGVsbG8=", ""],
    "oid": ["urn:oid:1.2.3"],
    "uuid": ["urn:uuid:c757873d-ec9a-4326-a141-556f43239520"],
    "url": ["http://example.org/x", "Patient/1"],
}


def _gen_value(spec: fv.Spec, rnd: random.Random, depth: int) -> Any:
    kind = spec.kind
    if kind == fv.K_OBJECT:
        return _gen_object(spec.arg, rnd, depth + 1)
    if kind == fv.K_RESOURCE:
        return {"resourceType": "Basic", "code": {"text": "x"}} if rnd.random() < 0.7 else {"id": "x"}
    if kind == fv.K_COMMENTS:
        return "a comment"
    return rnd.choice(_VALID[spec.type_name])


def _gen_object(plan: fv.Plan, rnd: random.Random, depth: int) -> dict[str, Any]:
    plan = fv._plan(plan.cls)
    out: dict[str, Any] = {}
    must = set(plan.required) | {k for k, _, _ in plan.required_primitives}
    groups: dict[str, list[str]] = {}
    for key, (group, _req) in plan.choice_groups.items():
        groups.setdefault(group, []).append(key)
    chosen = set()
    for keys in groups.values():
        if plan.choice_groups[keys[0]][1] or (depth < 3 and rnd.random() < 0.5):
            chosen.add(rnd.choice(keys))
    for key, (_, _, _, spec) in plan.fields.items():
        if key.startswith("_") or key == "fhir_comments":
            continue
        if key in plan.choice_groups and key not in chosen:
            continue
        if key in must or key in chosen or (depth < 3 and rnd.random() < 0.25):
            if depth > 6 and key not in must and key not in chosen:
                continue
            v = _gen_value(spec, rnd, depth)
            out[key] = [v] if spec.is_list else v
    if plan.primitive_extension and not out:
        out["id"] = "x"
    return out


def generated_resources(seed: int, per_type: int = 1) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    names = sorted({k[3:-4] for k in fv.FHIR_TYPES_MAPS if k.startswith("R4.")})
    out = []
    for name in names:
        plan = fv._dispatch(name, "Resource")
        if plan is None or name in ("Resource", "DomainResource"):
            continue
        for _ in range(per_type):
            r = _gen_object(plan, rnd, 0)
            out.append({"resourceType": name, **r})
    return out


# ---------------------------------------------------------------- mutations

def _copy(v: Any) -> Any:
    if type(v) is dict:
        return {k: _copy(x) for k, x in v.items()}
    if type(v) is list:
        return [_copy(x) for x in v]
    return v


_BAD: dict[str, list[Any]] = {
    "string": ["", "\x0b", "\u3000\xa0", "a\ud800"],
    "code": ["", " x", "x ", "a  b", "a\u3000", "\ud800"],
    "id": ["", "a_b", "a" * 256, "a b", "\u00e9", "abc\n"],
    "uri": ["\ud800"],
    "markdown": ["\ud800"],
    "boolean": ["yes", 2, "maybe", 0.5],
    "integer": [1.5, 2**31, "x", "1.5", "", -(2**31) - 1],
    "unsignedInt": [-1, 1.5],
    "positiveInt": [0, -1, False],
    "decimal": ["01", "1.", ".5", True, float("inf"), float("nan"), "abc", 10**4300, -(10**4300)],
    "date": ["2020-13-01", "2020-02-30", "2021-02-29", "abc", "", " 2020", "2020-1-1", "0000",
             "2020-01-01T00:00:00Z", "2020-13", "1900-02-29", 1, 1.5],
    "dateTime": ["2020-13-01", "2020-02-30", "2020-01-01T10:00:00", "2020-01-01T10:00Z", "2020-01-01T24:00:00Z",
                 "2020-04-31T10:00:00Z", "2020-01-01T10:00:00+15:00", "abc", "", "2020-01-01 10:00:00Z", True],
    "instant": ["2020-01-01", "2020", "2020-02-30T00:00:00Z", "2020-01-01T10:00:00", "", True],
    "time": ["10:00", "24:00:00", "10:00:00Z", "", "10:60:00", True],
    "base64Binary": ["abc", "a", "é===", 5],
    "oid": ["1.2.3", "urn:oid:01.2", ""],
    "uuid": ["c757873d", "urn:uuid:c757873d-ec9a-1326-a141-556f43239520", ""],
    "url": ["", " ", 5],
}
# JSON values of other types (and the lenient spellings pydantic may coerce)
_OTHER = ["x", "", " ", "true", "false", "1", "0", "1.0", "2020", "{}", '{"text": "x"}', "null", "[]",
          0, 1, -1, 7, 1.0, 1.5, True, False, [], {}, [1], ["x"], [None], {"a": 1}, {"id": "x"},
          {"extension": []}, None, 86400, 1e10]


def _json(v: Any) -> str:
    try:
        return orjson.dumps(v).decode()
    except TypeError:  # big ints, lone surrogates
        return "{}"


class Mutator:
    def __init__(self, rnd: random.Random) -> None:
        self.rnd = rnd

    def sites(self, resource: dict[str, Any]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """(objects, values): every dict with its plan, every (container, key, spec, plan) value."""
        objects: list[tuple[Any, ...]] = []
        values: list[tuple[Any, ...]] = []
        plan = fv._dispatch(resource["resourceType"], "Resource")
        self._walk(plan, resource, objects, values, 0)
        return objects, values

    def _walk(self, plan: fv.Plan | None, d: Any, objects: list[Any], values: list[Any], depth: int) -> None:
        if plan is None or type(d) is not dict:
            return
        plan = fv._plan(plan.cls)
        objects.append((d, plan, depth))
        for k, v in d.items():
            entry = plan.fields.get(k)
            if entry is None:
                continue
            spec = entry[3]
            values.append((d, k, spec, plan))
            items = v if spec.is_list and type(v) is list else [v]
            for i, item in enumerate(items):
                if spec.is_list and type(v) is list:
                    values.append((v, i, spec, plan))
                if spec.kind == fv.K_OBJECT:
                    self._walk(spec.arg, item, objects, values, depth + 1)
                elif spec.kind == fv.K_RESOURCE and type(item) is dict:
                    rt = item.get("resourceType", "Resource")
                    self._walk(fv._dispatch(rt, spec.arg), item, objects, values, depth + 1)

    def mutate(self, resource: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        r = _copy(resource)
        objects, values = self.sites(r)
        rnd = self.rnd
        ops = [self.unknown_key, self.delete_required, self.delete_any, self.second_choice, self.element_rt,
               self.python_name, self.ext_sibling, self.drop_for_ext, self.contained]
        vops = [self.null, self.empty, self.retype, self.bad_primitive, self.valid_primitive, self.relist,
                self.list_null]
        primitives = [s for s in values if s[2].type_name in _BAD or s[2].type_name in _VALID]
        for _ in range(20):
            x = rnd.random()
            if x < 0.4 or not values:
                op = rnd.choice(ops)
                name = op(rnd.choice(objects), r)
            elif x < 0.65 and primitives:  # aim the primitive mutations at primitives
                op = rnd.choice([self.bad_primitive, self.bad_primitive, self.valid_primitive, self.retype])
                name = op(rnd.choice(primitives))
            else:
                op = rnd.choice(vops)
                name = op(rnd.choice(values))
            if name:
                return name, r
        return "none", r

    # object-level ---------------------------------------------------------
    def unknown_key(self, site: Any, r: Any) -> str:
        d, plan, depth = site
        d[self.rnd.choice(["foo", "valueFoo", "_foo", "Family", "given_", "resourcetype"])] = \
            self.rnd.choice(_OTHER)
        return f"unknown-key@{depth}"

    def delete_required(self, site: Any, r: Any) -> str:
        d, plan, depth = site
        keys = [k for k in plan.required if k in d] + [k for k, _, _ in plan.required_primitives if k in d]
        keys += [k for k, (g, req) in plan.choice_groups.items() if req and k in d]
        if not keys:
            return ""
        del d[self.rnd.choice(keys)]
        return "delete-required"

    def delete_any(self, site: Any, r: Any) -> str:
        d, plan, depth = site
        keys = [k for k in d if k != "resourceType"]
        if not keys:
            return ""
        del d[self.rnd.choice(keys)]
        return "delete-any"

    def second_choice(self, site: Any, r: Any) -> str:
        d, plan, depth = site
        if not plan.choice_groups:
            return ""
        key = self.rnd.choice(sorted(plan.choice_groups))
        d[key] = _gen_value(plan.fields[key][3], self.rnd, 5)
        return "choice-member"

    def element_rt(self, site: Any, r: Any) -> str:
        d, plan, depth = site
        if d is r:
            return ""
        values = [plan.rtype, None, "Patient", "HumanName", "Foo", 5, "", plan.rtype.lower()]
        for key in self.rnd.choice([["resourceType"], ["resource_type"], ["resourceType", "resource_type"]]):
            d[key] = self.rnd.choice(values)
        return "element-resourceType"

    def python_name(self, site: Any, r: Any) -> str:
        d, plan, depth = site
        names = sorted(plan.py_names)
        if not names:
            return ""
        name = self.rnd.choice(names)
        if name.endswith("__ext"):
            d[name] = self.rnd.choice([{"id": "x"}, {}, [{"id": "x"}], [None]])
        else:
            d[name] = self.rnd.choice(_OTHER)
        return "python-field-name"

    def ext_sibling(self, site: Any, r: Any) -> str:
        d, plan, depth = site
        keys = [k for k in plan.fields if k.startswith("_")]
        if not keys:
            return ""
        k = self.rnd.choice(keys)
        good_ext = [{"url": "http://x", "valueString": "y"}]
        single = [{"id": "a"}, {"extension": good_ext}, {}, {"extension": []}, {"extension": None},
                  {"id": ""}, {"id": " x"}, {"foo": 1}, {"fhir_comments": ["c"]}, {"extension": [None]},
                  {"extension": [{"valueString": "y"}]}, {"resourceType": "FHIRPrimitiveExtension", "id": "a"},
                  {"id": None}, "x", '{"id": "a"}', 5, [], None]
        if plan.fields[k][1]:
            v = self.rnd.choice([[None, {"id": "a"}], [{}], [], {"id": "a"}, [None], [{"extension": good_ext}],
                                 [{"id": 5}], "x", None])
        else:
            v = self.rnd.choice(single)
        d[k] = v
        return "ext-sibling"

    def drop_for_ext(self, site: Any, r: Any) -> str:
        """Replace a required primitive by its _x sibling (valid when the sibling has extensions)."""
        d, plan, depth = site
        cands = [(k, e, lst) for k, e, lst in plan.required_primitives]
        if not cands:
            return ""
        k, e, lst = self.rnd.choice(cands)
        d.pop(k, None)
        if self.rnd.random() < 0.3:
            d[k] = None
        if e is not None:
            d[e] = self.rnd.choice([{"extension": [{"url": "http://x", "valueCode": "unknown"}]}, {"id": "a"},
                                    {"extension": []}, [{"extension": [{"url": "u", "valueString": "v"}]}]])
        return "required-primitive-via-extension"

    def contained(self, site: Any, r: Any) -> str:
        if "contained" not in fv._dispatch(r["resourceType"], "Resource").fields:
            return ""
        c = self.rnd.choice([
            {"resourceType": "HumanName", "family": "x"}, {"resourceType": "Foo"}, {"resourceType": None},
            {"resourceType": 5}, {"resourceType": ""}, {}, {"id": "x"}, {"resourceType": "Resource", "id": "y"},
            {"resourceType": "DomainResource"}, {"resourceType": "Observation"},
            {"resourceType": "Observation", "status": "final", "code": {"text": "x"}},
            {"resourceType": "Basic", "code": {"text": "x"}}, {"resourceType": "Basic"},
            {"resourceType": "PatientContact"}, {"resourceType": "FHIRPrimitiveExtension", "id": "x"},
            {"resourceType": "Patient", "birthDate": "2020-02-30"}, {"resource_type": "Patient"},
            '{"resourceType": "Basic", "code": {}}', "{}", None, [],
        ])
        r.setdefault("contained", [])
        if type(r["contained"]) is list:
            r["contained"].append(c)
        else:
            r["contained"] = [c]
        return "contained"

    # value-level ------------------------------------------------------------
    def null(self, site: Any) -> str:
        c, k, spec, plan = site
        c[k] = None
        return "null"

    def empty(self, site: Any) -> str:
        c, k, spec, plan = site
        c[k] = self.rnd.choice(["", [], {}])
        return "empty"

    def retype(self, site: Any) -> str:
        c, k, spec, plan = site
        v = c[k]
        choices = [x for x in _OTHER if type(x) is not type(v)]
        if type(v) is str:
            choices += [v.upper(), v + " ", [v], {"value": v}]
        elif type(v) in (int, float) and abs(v) < 1e300:
            choices += [str(v), float(v), [v], -v]
        elif type(v) is bool:
            choices += [str(v).lower(), int(v), [v]]
        elif type(v) is dict:
            choices += [[v], _json(v), [v, v]]
        elif type(v) is list and v:
            choices += [v[0], v[0:1] * 2, _json(v)]
        c[k] = self.rnd.choice(choices)
        return "retype"

    def bad_primitive(self, site: Any) -> str:
        c, k, spec, plan = site
        bad = _BAD.get(spec.type_name)
        if not bad:
            return ""
        c[k] = self.rnd.choice(bad)
        return f"bad-{spec.type_name}"

    def valid_primitive(self, site: Any) -> str:
        c, k, spec, plan = site
        good = _VALID.get(spec.type_name)
        if not good:
            return ""
        c[k] = self.rnd.choice(good)
        return f"edge-{spec.type_name}"

    def relist(self, site: Any) -> str:
        c, k, spec, plan = site
        v = c[k]
        if type(v) is list:
            if not v:
                return ""
            c[k] = v[0]
        else:
            c[k] = [v]
        return "list-vs-single"

    def list_null(self, site: Any) -> str:
        c, k, spec, plan = site
        v = c[k]
        if type(v) is not list:
            return ""
        v.insert(self.rnd.randrange(len(v) + 1), None)
        return "null-in-list"


# ---------------------------------------------------------------- tests

def _assert_both_accept(resources: list[dict[str, Any]]) -> None:
    lib_rejects = [r.get("id") for r in resources if not library_accepts(r)]
    assert not lib_rejects, f"the library rejects sample resources: {lib_rejects[:5]}"
    fast = [(r.get("resourceType"), r.get("id"), p) for r in resources if (p := validate_fast(r))]
    assert not fast, fast[:3]


def test_synthea_accepted_by_both(synthea: list[dict[str, Any]]) -> None:
    assert len(synthea) > 7000
    _assert_both_accept(synthea)


def test_synthetic_region_accepted_by_both(region: list[dict[str, Any]]) -> None:
    assert len(region) > 1000
    _assert_both_accept(region)


def test_generated_resources_of_every_type_accepted_by_both() -> None:
    resources = generated_resources(seed=11, per_type=2)
    assert len({r["resourceType"] for r in resources}) > 140
    _assert_both_accept(resources)


def _differential(seeds: list[dict[str, Any]], n: int, seed: int) -> tuple[int, dict[str, int], list[Any]]:
    rnd = random.Random(seed)
    mut = Mutator(rnd)
    both_reject = 0
    kinds: dict[str, int] = {}
    fast_only: list[Any] = []
    lib_only: list[Any] = []
    for _ in range(n):
        name, m = mut.mutate(rnd.choice(seeds))
        lib_ok = library_accepts(m)
        problems = validate_fast(m)
        kinds[name] = kinds.get(name, 0) + 1
        if problems and not lib_ok:
            both_reject += 1
        elif problems:
            fast_only.append((name, problems[:2]))
        elif not lib_ok:
            lib_only.append((name, m))
    assert not lib_only, f"the fast validator accepted {len(lib_only)} mutants the library rejects: " \
        f"{[(n, repr(m)[:600]) for n, m in lib_only[:3]]}"
    return both_reject, kinds, fast_only


def test_mutants_of_real_resources(synthea: list[dict[str, Any]], region: list[dict[str, Any]]) -> None:
    rnd = random.Random(5)
    seeds = rnd.sample(synthea, 300) + rnd.sample(region, 300)
    n = 3000
    both, kinds, fast_only = _differential(seeds, n, seed=1)
    print(f"\nmutants {n}: both reject {both}, fast-only reject {len(fast_only)}, kinds {sorted(kinds.items())}")
    for case in fast_only[:10]:
        print("  fast-only:", case)
    assert both > n // 3  # the mutations do break things
    assert len(fast_only) <= n // 100


def test_mutants_of_generated_resources() -> None:
    seeds = generated_resources(seed=23, per_type=2)
    n = 2000
    both, kinds, fast_only = _differential(seeds, n, seed=2)
    print(f"\nmutants {n}: both reject {both}, fast-only reject {len(fast_only)}")
    for case in fast_only[:10]:
        print("  fast-only:", case)
    assert both > n // 3
    assert len(fast_only) <= n // 100


_ALPHABET = ["a", "Z", "0", "1", "9", "-", ".", " ", "  ", "\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x85", "\xa0",
             "\u2028", "\u3000", "\u180e", "é", "王", ":", "T", "Z", "+", "/", "_", "=", "\ud800", "urn:oid:", "2020-",
             "12", "31", "60", "T10:00:00", "Z", "+14:00", ".5", "e5", "\x00"]


def _perturb(rnd: random.Random, v: Any) -> Any:
    if type(v) is not str or not v or rnd.random() < 0.3:
        return "".join(rnd.choice(_ALPHABET) for _ in range(rnd.randrange(5)))
    i = rnd.randrange(len(v))
    return v[:i] + rnd.choice(_ALPHABET + ["", "0", "3", "29", "02"]) + v[i + rnd.randrange(2):]


def test_primitive_values_differential() -> None:
    """Every primitive type as Extension.value[x], with valid, broken, retyped and random values."""
    rnd = random.Random(7)
    ext = fv._dispatch("Basic", "Resource").fields["extension"][2]
    typed = {}
    for key, (_, _, _, spec) in ext.fields.items():
        if key.startswith("value") and spec.type_name in _VALID:
            typed[key] = spec.type_name
    assert len(typed) >= 19
    checked = disagree = 0
    for key, type_name in sorted(typed.items()):
        values = _VALID[type_name] + _BAD.get(type_name, []) + _OTHER
        values += [_perturb(rnd, rnd.choice(_VALID[type_name])) for _ in range(150)]
        for v in values:
            r = {"resourceType": "Basic", "code": {"text": "x"}, "extension": [{"url": "u", key: v}]}
            lib_ok = library_accepts(r)
            fast_ok = not validate_fast(r)
            assert fast_ok <= lib_ok, (key, v)
            checked += 1
            disagree += fast_ok != lib_ok
    print(f"\nprimitive values: {checked}, fast-only rejects: {disagree}")
    assert disagree == 0


# ---------------------------------------------------------------- error paths

PATIENT = {
    "resourceType": "Patient",
    "id": "p1",
    "name": [{"family": "Wang", "given": ["Jianxin"]}],
    "birthDate": "1966-04-03",
    "contained": [{"resourceType": "Observation", "status": "final", "code": {"text": "x"}}],
}


def _with(path: list[Any], value: Any, delete: bool = False) -> dict[str, Any]:
    r = _copy(PATIENT)
    node = r
    for p in path[:-1]:
        node = node[p]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return r


@pytest.mark.parametrize(("path", "value", "delete", "expected"), [
    (["name", 0, "famly"], "x", False, "Patient.name[0].famly"),
    (["foo"], 1, False, "Patient.foo"),
    (["birthDate"], "2020-02-30", False, "Patient.birthDate"),
    (["birthDate"], "1966-13", False, "Patient.birthDate"),
    (["name", 0, "family"], "", False, "Patient.name[0].family"),
    (["name", 0, "given", 0], 5, False, "Patient.name[0].given[0]"),
    (["contained", 0, "status"], None, True, "Patient.contained[0].status"),
    (["contained", 0, "code"], None, True, "Patient.contained[0].code"),
    (["contained", 0, "effectiveDateTime"], "2020-01-01T10:00:00", False, "Patient.contained[0].effectiveDateTime"),
    (["id"], "a_b", False, "Patient.id"),
    (["name"], {"family": "x"}, False, "Patient.name"),
    (["name", 1], None, False, "Patient.name[1]"),
])
def test_error_paths(path: list[Any], value: Any, delete: bool, expected: str) -> None:
    r = _with(path, value, delete) if path != ["name", 1] else {**PATIENT, "name": [PATIENT["name"][0], None]}
    assert not library_accepts(r)
    problems = validate_fast(r)
    assert problems
    assert expected in [p for p, _ in problems], problems


def test_choice_group_names_both_members() -> None:
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
           "valueString": "a", "valueQuantity": {"value": 1}}
    assert not library_accepts(obs)
    problems = validate_fast(obs)
    assert len(problems) == 1 and problems[0][0] in ("Observation.valueString", "Observation.valueQuantity")


def test_lenient_values_the_library_accepts_are_accepted() -> None:
    lenient = [
        {"resourceType": "Patient", "active": "true"},
        {"resourceType": "Patient", "active": 1},
        {"resourceType": "Patient", "multipleBirthInteger": "2"},
        {"resourceType": "Patient", "birthDate": 0},
        {"resourceType": "Patient", "maritalStatus": '{"text": "x"}'},
        {"resourceType": "Patient", "name": [{"resourceType": "HumanName", "family": "x"}]},
        {"resourceType": "Patient", "name": [{"family__ext": {"id": "x"}}]},
        {"resourceType": "Observation", "code": {"text": "x"}, "_status": {"extension": [
            {"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}]}},
        {"resourceType": "Observation", "status": "final", "code": None},
        {"resourceType": "Patient", "contained": [{}]},
    ]
    for r in lenient:
        assert library_accepts(r), r
        assert validate_fast(r) == [], r


def test_resource_type_keys_on_elements() -> None:
    """FHIRAbstractModel.__init__ checks resource_type, or resourceType when that is no element."""
    cases = [
        ({"resourceType": "Patient", "name": [{"resource_type": "HumanName"}]}, True),
        ({"resourceType": "Patient", "name": [{"resource_type": "Patient"}]}, False),
        ({"resourceType": "Patient", "name": [{"resourceType": "HumanName", "resource_type": 5}]}, True),
        ({"resourceType": "Patient", "name": [{"resourceType": 5, "resource_type": "HumanName"}]}, False),
        # ExampleScenario.instance.resourceType is an element: resource_type is what __init__ checks
        ({"resourceType": "ExampleScenario", "status": "draft",
          "instance": [{"resourceId": "a", "resourceType": "Patient", "resource_type": "x"}]}, False),
        ({"resourceType": "ExampleScenario", "status": "draft",
          "instance": [{"resourceId": "a", "resourceType": "Patient",
                        "resource_type": "ExampleScenarioInstance"}]}, True),
    ]
    for r, ok in cases:
        assert library_accepts(r) is ok, r
        assert (validate_fast(r) == []) is ok, r


def _all_references(node: Any, path: str, out: list[tuple[str, str]]) -> None:
    """Every string under a "reference" key (what hutong.fhir.validation walked before)."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "reference" and isinstance(v, str):
                out.append((f"{path}.{k}", v))
            else:
                _all_references(v, f"{path}.{k}", out)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _all_references(v, f"{path}[{i}]", out)


def test_references_offered_with_their_paths(synthea: list[dict[str, Any]], region: list[dict[str, Any]]) -> None:
    rnd = random.Random(3)
    for r in rnd.sample(synthea, 500) + rnd.sample(region, 500):
        problems, refs = fv.validate_fast_refs(r, lambda s: False)
        expected: list[tuple[str, str]] = []
        _all_references(r, r["resourceType"], expected)
        assert problems == []
        assert sorted(refs) == sorted(expected)
        assert fv.validate_fast_refs(r, lambda s: True) == ([], [])


def test_references_are_only_reference_elements() -> None:
    r = {"resourceType": "DetectedIssue", "status": "final", "reference": "http://example.org/guidance.html",
         "patient": {"reference": "not a reference"},
         "contained": [{"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                        "subject": {"reference": "bad one"}}]}
    problems, refs = fv.validate_fast_refs(r, lambda s: "/" in s)
    assert problems == []
    assert refs == [("DetectedIssue.patient.reference", "not a reference"),
                    ("DetectedIssue.contained[0].subject.reference", "bad one")]
    # an object the library validates (a Python field name as key): every "reference" string is offered
    r = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
         "subject": {"reference": "bad", "reference__ext": {"id": "x"}}}
    problems, refs = fv.validate_fast_refs(r, lambda s: "/" in s)
    assert problems == [] and refs == [("Observation.subject.reference", "bad")]


def test_not_a_resource() -> None:
    assert validate_fast([]) and validate_fast({}) and validate_fast({"resourceType": "Foo"})
    assert validate_fast({"resourceType": "HumanName"})
    assert validate_fast({"resourceType": "Patient"}) == []
