"""``hutong import DIR``: load FHIR NDJSON into the store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from hutong.ingest.bulk import import_ndjson, ndjson_files
from hutong.platform import open_repository
from hutong.security.guard import as_operator


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("import", help="load FHIR NDJSON files (a bulk-data export) into the store",
                       description="Load every <Type>*.ndjson file in DIR (or one file). Each line must be a "
                                   "valid FHIR R4 resource; existing ids get a new version.")
    p.add_argument("path", metavar="DIR", type=Path, help="directory of .ndjson files, or one file")
    p.add_argument("--database", metavar="URL", help="sqlite:///path or postgresql://... "
                                                     "(default: $HUTONG_DATABASE_URL or sqlite:///var/hutong.db)")
    p.add_argument("--workers", type=int, default=None, help="validation processes (default: up to 2)")
    p.add_argument("--strict", action="store_true", help="stop at the first invalid line")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path: Path = args.path
    if not path.exists():
        print(f"hutong import: {path} does not exist", file=sys.stderr)
        return 2
    files = ndjson_files(path)
    if not files:
        print(f"hutong import: no <ResourceType>.ndjson files in {path}", file=sys.stderr)
        return 2
    total_lines = 0
    for f in files:
        with f.open("rb") as fh:
            total_lines += sum(1 for _ in fh)
    repo = open_repository(args.database)
    bar = tqdm(total=total_lines, unit="res", disable=args.quiet, file=sys.stderr)
    report = import_ndjson(as_operator(repo), path, workers=args.workers, strict=args.strict, progress=bar.update)
    bar.close()
    rate = report.loaded / report.seconds if report.seconds else 0.0
    for t, n in sorted(report.by_type.items()):
        print(f"  {t:<24} {n:>9}")
    print(f"loaded {report.loaded} resources in {report.seconds:.1f}s ({rate:.0f}/s); {len(report.errors)} errors")
    for e in report.errors[:20]:
        print(f"  {e}", file=sys.stderr)
    return 1 if report.errors else 0
