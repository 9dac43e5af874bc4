"""``hutong terminology ...``: the code systems the terminology service holds.

    hutong terminology load FILE [--url URL]   load a CodeSystem (FHIR JSON) or a CSV code table
    hutong terminology list                    what is loaded, with counts

Shipped with Hutong: the FHIR R4 value sets of every required binding and
their code systems, and the Chinese code systems Hutong uses (GB/T 2261.1,
GB/T 2260, WS/T 500, identifier OIDs).  LOINC, the ICD-10 national clinical
edition and other licensed tables are loaded by the operator from the copy
their licence covers; files go to HUTONG_TERMINOLOGY_DIR (unset: a
``terminology`` directory beside a SQLite database) and a running server
reads them on its next terminology request.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hutong.cli.context import print_json
from hutong.terminology import loader
from hutong.terminology.service import Terminology, shipped


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("terminology", help="terminology service: load code systems (LOINC, ICD-10 ...), list them",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database", metavar="URL", help="places the terminology directory beside a SQLite database "
                                                     "(default: $HUTONG_DATABASE_URL or sqlite:///var/hutong.db)")
    p.add_argument("--dir", metavar="DIR", help="terminology directory (default: $HUTONG_TERMINOLOGY_DIR, "
                                                "else beside the database)")
    ops = p.add_subparsers(dest="terminology_command", metavar="ACTION")
    ops.required = True
    ld = ops.add_parser("load", help="load a FHIR CodeSystem/ValueSet/ConceptMap (JSON) or a CSV code table")
    ld.add_argument("file", type=Path)
    ld.add_argument("--url", help="canonical URL of the code system (required for CSV), e.g. http://loinc.org")
    ld.add_argument("--name", help="name of the code system (CSV; default: the file name)")
    ld.add_argument("--version", help="version of the code system (CSV)")
    ld.add_argument("--encoding", default="utf-8", help="the file's encoding (default utf-8; e.g. gb18030)")
    ld.set_defaults(func=_load)
    ops.add_parser("list", help="the code systems, value sets and concept maps held").set_defaults(func=_list)


def _dir(args: argparse.Namespace) -> Path:
    return Path(args.dir) if args.dir else loader.directory(args.database)


def _load(args: argparse.Namespace) -> int:
    doc = loader.read(args.file, url=args.url, name=args.name, version=args.version, encoding=args.encoding)
    out = loader.save(doc, _dir(args), args.file.stem)
    return print_json({"file": str(out),
                       "codeSystems": [{"url": c["url"], "concepts": len(c["concepts"])}
                                       for c in doc.get("codeSystems", [])],
                       "valueSets": [v["url"] for v in doc.get("valueSets", [])],
                       "conceptMaps": [m["url"] for m in doc.get("conceptMaps", [])]})


def _list(args: argparse.Namespace) -> int:
    t = Terminology(shipped(), _dir(args))
    local = t._refresh()
    return print_json({"directory": str(t.directory), "counts": t.counts(),
                       "loaded": [{"url": c.url, "concepts": len(c.concepts), "file": c.origin}
                                  for c in local.code_systems.values()]})
