"""Code systems the operator supplies (``hutong terminology load FILE``).

LOINC, the ICD-10 national clinical edition (国家临床版) and the like may not
be shipped (their licences), so the operator loads the copy their licence
covers.  Two formats:

* a FHIR CodeSystem (JSON; a ValueSet or ConceptMap resource is taken too):
  nested ``concept`` hierarchies are kept as parents;
* CSV (UTF-8, with a header row): the code column is ``code`` (or LOINC's
  ``LOINC_NUM``), the display ``display`` (or ``LONG_COMMON_NAME``,
  ``name``), else the first and second columns; an optional ``parent``
  column keeps the hierarchy.  The canonical URL comes from ``--url``.

Each file becomes one compact JSON file in the terminology directory
(HUTONG_TERMINOLOGY_DIR; unset: ``terminology/`` beside a SQLite database,
else ``var/terminology``), with an "all codes" ValueSet of each CodeSystem
(its ``valueSet`` when it names one, else ``<url>?vs``), which the running
server reads again on its next terminology request.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

from hutong.config import env
from hutong.errors import HutongError
from hutong.store.database import resolve_url

Json = dict[str, Any]
_CODE_COLUMNS = ("code", "LOINC_NUM", "Code", "CODE", "编码", "代码")
_DISPLAY_COLUMNS = ("display", "LONG_COMMON_NAME", "Display", "name", "NAME", "名称")


class LoadError(HutongError):
    status = 422
    issue_code = "invalid"


def directory(database_url: str | None = None) -> Path:
    """Where loaded files live: HUTONG_TERMINOLOGY_DIR, else beside a SQLite database."""
    configured = env("HUTONG_TERMINOLOGY_DIR")
    if configured:
        return Path(configured)
    url = resolve_url(database_url)
    if url.startswith("sqlite:///") and not url.endswith(":memory:"):
        return Path(url[len("sqlite:///"):].split("?")[0]).resolve().parent / "terminology"
    return Path("var") / "terminology"


def _rows(concepts: list[Any], parent: str | None, out: list[list[Any]]) -> None:
    for c in concepts:
        if not isinstance(c, dict) or not isinstance(c.get("code"), str) or not c["code"].strip():
            raise LoadError("HT-0245", "every concept needs a code")
        row: list[Any] = [c["code"], c.get("display") or ""]
        if parent is not None:
            row.append(parent)
        out.append(row)
        _rows(c.get("concept") or [], c["code"], out)


def _code_system(url: str, name: str | None, version: str | None, title: str | None, rows: list[list[Any]],
                 content: str = "complete", case_sensitive: bool = True) -> Json:
    if not url:
        raise LoadError("HT-0245", "the code system needs a canonical url (give --url)")
    seen: set[str] = set()
    for r in rows:
        if r[0] in seen:
            raise LoadError("HT-0245", f"code {r[0][:40]!r} appears twice")
        seen.add(r[0])
    return {"url": url, "version": version, "name": name, "title": title, "status": "active", "content": content,
            "caseSensitive": case_sensitive, "concepts": rows}


def _all_codes(cs: Json, vs_url: str | None) -> Json:
    return {"url": vs_url or cs["url"] + "?vs", "version": cs.get("version"), "name": cs.get("name"),
            "title": cs.get("title"), "status": "active", "compose": {"include": [{"system": cs["url"]}]}}


def from_fhir(doc: Any) -> Json:
    if not isinstance(doc, dict):
        raise LoadError("HT-0245", "the JSON file is not a FHIR resource")
    rt = doc.get("resourceType")
    if rt == "CodeSystem":
        rows: list[list[Any]] = []
        _rows(doc.get("concept") or [], None, rows)
        if not rows:
            raise LoadError("HT-0245", "the CodeSystem has no concepts (content not-present cannot be loaded)")
        cs = _code_system(doc.get("url") or "", doc.get("name"), doc.get("version"), doc.get("title"), rows,
                          doc.get("content") or "complete", bool(doc.get("caseSensitive", True)))
        return {"codeSystems": [cs], "valueSets": [_all_codes(cs, doc.get("valueSet"))]}
    if rt == "ValueSet":
        if not doc.get("url") or not isinstance(doc.get("compose"), dict):
            raise LoadError("HT-0245", "the ValueSet needs a url and a compose")
        return {"valueSets": [{k: doc.get(k) for k in ("url", "version", "name", "title", "status", "compose")}]}
    if rt == "ConceptMap":
        if not doc.get("url"):
            raise LoadError("HT-0245", "the ConceptMap needs a url")
        return {"conceptMaps": [{
            "url": doc["url"], "version": doc.get("version"), "name": doc.get("name"), "title": doc.get("title"),
            "status": doc.get("status"), "source": doc.get("sourceCanonical") or doc.get("sourceUri"),
            "target": doc.get("targetCanonical") or doc.get("targetUri"), "group": doc.get("group") or []}]}
    raise LoadError("HT-0245", f"resourceType {str(rt)[:40]!r} cannot be loaded (CodeSystem, ValueSet, ConceptMap)")


def _column(header: list[str], names: tuple[str, ...], fallback: int | None) -> int | None:
    for n in names:
        if n in header:
            return header.index(n)
    return fallback


def from_csv(text: str, url: str, name: str | None, version: str | None) -> Json:
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip().lstrip("\ufeff") for h in next(reader)]
    except StopIteration:
        raise LoadError("HT-0245", "the CSV file is empty") from None
    code_i = _column(header, _CODE_COLUMNS, 0)
    display_i = _column(header, _DISPLAY_COLUMNS, 1 if len(header) > 1 else None)
    parent_i = _column(header, ("parent", "PARENT"), None)
    assert code_i is not None
    rows: list[list[Any]] = []
    for n, rec in enumerate(reader, 2):
        if not any(x.strip() for x in rec):
            continue
        if len(rec) <= code_i or not rec[code_i].strip():
            raise LoadError("HT-0245", f"line {n}: no code in column {header[code_i]!r}")
        row: list[Any] = [rec[code_i].strip(), rec[display_i].strip() if display_i is not None
                          and len(rec) > display_i else ""]
        if parent_i is not None and len(rec) > parent_i and rec[parent_i].strip():
            row.append(rec[parent_i].strip())
        rows.append(row)
    if not rows:
        raise LoadError("HT-0245", "the CSV file has no codes")
    cs = _code_system(url, name, version, name, rows)
    return {"codeSystems": [cs], "valueSets": [_all_codes(cs, None)]}


def read(path: Path, *, url: str | None = None, name: str | None = None, version: str | None = None,
         encoding: str = "utf-8") -> Json:
    """The compact document of one operator file (CSV or FHIR JSON).  ``encoding``: code
    tables from Chinese sources often come as GB18030 (``--encoding gb18030``)."""
    try:
        text = path.read_bytes().decode("utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8")
                                        else encoding)
    except LookupError:
        raise LoadError("HT-0245", f"unknown encoding {encoding[:30]!r}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise LoadError("HT-0245", f"{path.name}: cannot be read as {encoding} ({type(e).__name__}); "
                                   "give --encoding (e.g. gb18030)") from None
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        try:
            doc = from_fhir(json.loads(text))
        except json.JSONDecodeError as e:
            raise LoadError("HT-0245", f"{path.name}: not valid JSON (line {e.lineno})") from None
        if url:
            for cs in doc.get("codeSystems", []):
                cs["url"] = url
        return doc
    return from_csv(text, url or "", name or path.stem, version)


def save(doc: Json, target_dir: Path, stem: str) -> Path:
    """Write atomically (a running server may be reading the directory)."""
    target_dir.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-") or "terminology"
    out = target_dir / f"{safe}.json"
    tmp = target_dir / f".{safe}.json.tmp"
    tmp.write_text(json.dumps({"source": stem, **doc}, ensure_ascii=False), encoding="utf-8")
    tmp.replace(out)
    return out
