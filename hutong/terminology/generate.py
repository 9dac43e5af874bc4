"""Build the terminology extracts shipped in ``hutong/terminology/data/``.

``python -m hutong.terminology.generate EXAMPLES.tgz`` reads the official FHIR
R4 4.0.1 package (npm ``hl7.fhir.r4.examples`` 4.0.1, CC0-1.0: it carries the
same StructureDefinitions, ValueSets, CodeSystems and ConceptMaps as
``hl7.fhir.r4.core``, which the npm registry does not serve) and writes:

* ``r4-core.json``: the ValueSets of every *required* binding of the R4
  resource and data types (terminologies.html#required), the CodeSystems they
  draw from, the ConceptMaps between those, and ``elements``, a compact table
  of where the bindings sit (type -> JSON key -> [child type, value set]),
  pruned to the branches that can reach a binding, which the write-time check
  (hutong.fhir.bindings) walks;
* ``cn.json``: the Chinese code systems Hutong uses (hutong.terminology.cn).

Only what the write path and the terminology service need goes in: no
definitions, no designations, no StructureDefinitions.  Run it again when
the package or :mod:`hutong.terminology.cn` changes; tests/terminology check
that the committed files are what it writes.
"""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data"
SOURCE = "hl7.fhir.r4.examples 4.0.1 (npm), http://hl7.org/fhir/R4; licence CC0-1.0 (FHIR is public domain)"

# Value sets whose codes come from a terminology outside the package (MIME
# types, UCUM, ISO 4217 ...) cannot be enumerated: their bindings are not
# checked at write time, and the CapabilityStatement/README say so.
Json = dict[str, Any]


def _load(tgz: Path) -> tuple[dict[str, Json], dict[str, Json], dict[str, Json], list[Json]]:
    sds: dict[str, Json] = {}
    vss: dict[str, Json] = {}
    css: dict[str, Json] = {}
    cms: list[Json] = []
    with tarfile.open(tgz) as tf:
        for m in tf.getmembers():
            name = m.name.rsplit("/", 1)[-1]
            prefix = name.split("-", 1)[0]
            if prefix not in ("StructureDefinition", "ValueSet", "CodeSystem", "ConceptMap") or not m.isfile():
                continue
            f = tf.extractfile(m)
            assert f is not None
            r = json.load(f)
            if r.get("resourceType") == "StructureDefinition":
                if r.get("kind") in ("resource", "complex-type") and (
                        r.get("derivation") == "specialization" or r.get("type") == "Element"):
                    sds[r["type"]] = r
            elif r.get("resourceType") == "ValueSet":
                vss[r["url"]] = r
            elif r.get("resourceType") == "CodeSystem":
                css[r["url"]] = r
            elif r.get("resourceType") == "ConceptMap":
                cms.append(r)
    return sds, vss, css, cms


def _concepts(concepts: list[Json], parent: str | None, out: list[list[Any]]) -> None:
    for c in concepts:
        row: list[Any] = [c["code"], c.get("display") or ""]
        if parent is not None:
            row.append(parent)
        out.append(row)
        _concepts(c.get("concept", []), c["code"], out)


def _upper(s: str) -> str:
    return s[:1].upper() + s[1:]


def _elements(sds: dict[str, Json], enumerable: set[str]) -> dict[str, dict[str, list[Any]]]:
    """type or backbone path -> JSON key -> [target, value set url | None]."""
    primitive_like = {"code", "string", "uri", "boolean", "integer", "decimal", "id", "markdown", "dateTime", "date",
                      "instant", "time", "base64Binary", "unsignedInt", "positiveInt", "oid", "uuid", "url",
                      "canonical", "xhtml"}
    graph: dict[str, dict[str, list[Any]]] = {}
    owners = {e["path"].rsplit(".", 1)[0] for sd in sds.values() for e in sd["snapshot"]["element"]}
    for sd in sds.values():
        for e in sd["snapshot"]["element"]:
            path: str = e["path"]
            if "." not in path:
                continue
            owner, name = path.rsplit(".", 1)
            if e.get("max") == "0":
                continue
            b = e.get("binding") or {}
            vs = None
            if b.get("strength") == "required" and b.get("valueSet"):
                url = b["valueSet"].split("|")[0]
                vs = url if url in enumerable else None
            node = graph.setdefault(owner, {})
            if "contentReference" in e:
                node[name] = [e["contentReference"].lstrip("#"), None]
                continue
            types = [t["code"] for t in e.get("type", [])]
            choice = name.endswith("[x]")
            for t in types:
                key = name[:-3] + _upper(t) if choice else name
                if t in ("BackboneElement", "Element") and path in owners:
                    target = path  # an inline element: its children follow it in the snapshot
                elif t in ("Resource", "DomainResource"):
                    target = "@resource"
                elif t == "http://hl7.org/fhirpath/System.String" or t.startswith("http://"):
                    target = "string"
                else:
                    target = t
                if target in primitive_like:
                    node[key] = [target if target == "code" else "primitive", vs if target == "code" else None]
                    node["_" + key] = ["Element", None]
                else:
                    node[key] = [target, vs if target in ("CodeableConcept", "Coding") else None]
    # Prune to the branches that can reach a checked binding (fixed point:
    # the types are recursive, e.g. Extension.valueReference.identifier.assigner).
    reach = {t for t, node in graph.items() if any(v[1] for v in node.values())}
    changed = True
    while changed:
        changed = False
        for t, node in graph.items():
            if t in reach:
                continue
            if any(v[0] in reach or v[0] == "@resource" for v in node.values()):
                reach.add(t)
                changed = True
    out: dict[str, dict[str, list[Any]]] = {}
    for t in sorted(reach):
        kept = {k: (v if v[1] else [v[0]]) for k, v in sorted(graph[t].items())
                if v[1] or v[0] in reach or v[0] == "@resource"}
        if kept:
            out[t] = kept
    return out


def build_core(tgz: Path) -> Json:
    sds, vss, css, cms = _load(tgz)
    required: set[str] = set()
    for sd in sds.values():
        for e in sd["snapshot"]["element"]:
            b = e.get("binding") or {}
            if b.get("strength") == "required" and b.get("valueSet"):
                required.add(b["valueSet"].split("|")[0])
    value_sets: list[Json] = []
    systems: set[str] = set()
    enumerable: set[str] = set()
    unenumerable: list[str] = []
    for url in sorted(required):
        vs = vss.get(url)
        if vs is None:
            unenumerable.append(url)
            continue
        compose = vs.get("compose", {})
        parts = compose.get("include", []) + compose.get("exclude", [])
        external = [p["system"] for p in parts if "system" in p and p["system"] not in css
                    and "concept" not in p]
        if external or any("filter" in p or "valueSet" in p for p in parts):
            unenumerable.append(url)
        else:
            enumerable.add(url)
        systems.update(p["system"] for p in parts if "system" in p and p["system"] in css)
        value_sets.append({
            "url": url, "version": vs.get("version"), "name": vs.get("name"), "title": vs.get("title"),
            "status": vs.get("status"),
            "compose": {k: [{x: p[x] for x in ("system", "version", "concept", "valueSet", "filter") if x in p}
                            for p in compose.get(k, [])] for k in ("include", "exclude") if compose.get(k)},
        })
        for v in value_sets[-1]["compose"].values():
            for p in v:
                if "concept" in p:
                    p["concept"] = [{"code": c["code"], **({"display": c["display"]} if "display" in c else {})}
                                    for c in p["concept"]]
    code_systems = []
    for url in sorted(systems):
        cs = css[url]
        rows: list[list[Any]] = []
        _concepts(cs.get("concept", []), None, rows)
        code_systems.append({"url": url, "version": cs.get("version"), "name": cs.get("name"),
                             "title": cs.get("title"), "status": cs.get("status"), "content": cs.get("content"),
                             "caseSensitive": cs.get("caseSensitive", True), "concepts": rows})
    vs_urls = {v["url"] for v in value_sets}
    concept_maps = []
    for cm in sorted(cms, key=lambda c: c["url"]):
        src, tgt = cm.get("sourceCanonical") or cm.get("sourceUri"), cm.get("targetCanonical") or cm.get("targetUri")
        if src not in vs_urls and tgt not in vs_urls:
            continue
        groups = [{"source": g.get("source"), "target": g.get("target"),
                   "element": [{"code": el["code"], "target": [
                       {k: t[k] for k in ("code", "equivalence") if k in t} for t in el.get("target", [])]}
                       for el in g.get("element", [])]} for g in cm.get("group", [])]
        concept_maps.append({"url": cm["url"], "version": cm.get("version"), "name": cm.get("name"),
                             "title": cm.get("title"), "status": cm.get("status"), "source": src, "target": tgt,
                             "group": groups})
    return {"source": SOURCE, "fhirVersion": "4.0.1", "unenumerable": sorted(unenumerable),
            "codeSystems": code_systems, "valueSets": value_sets, "conceptMaps": concept_maps,
            "elements": _elements(sds, enumerable)}


def write(doc: Json, path: Path) -> None:
    path.write_text(json.dumps(doc, ensure_ascii=False, separators=(",", ":"), sort_keys=False) + "\n",
                    encoding="utf-8")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m hutong.terminology.generate hl7.fhir.r4.examples-4.0.1.tgz", file=sys.stderr)
        return 2
    from hutong.terminology import cn  # noqa: PLC0415 (tables from the code that uses them)

    DATA.mkdir(exist_ok=True)
    write(build_core(Path(argv[0])), DATA / "r4-core.json")
    write(cn.build(), DATA / "cn.json")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
