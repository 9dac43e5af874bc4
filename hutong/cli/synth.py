"""``hutong synth``: write a synthetic region as FHIR NDJSON plus its ground truth."""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

from hutong.synth.config import SynthConfig, SynthConfigError
from hutong.synth.pipeline import generate
from hutong.synth.regions import DISTRICTS

_FLAGS = {
    "residents": "--residents", "institutions": "--institutions", "seed": "--seed", "years": "--years",
    "today": "--today", "districts": "--districts", "workers": "--workers",
}

DESCRIPTION = """\
Generate a synthetic Beijing-like region: institutions in the 16 districts
(三级甲等 ... 诊所, with 医联体), physicians with their privileges, residents with
valid GB 11643 ID numbers, and each resident's records at every institution
they visited (one source Patient per institution, with controlled
registration noise), written as FHIR R4 NDJSON, one file per resource type,
plus ground_truth.ndjson (source Patient -> resident, noise applied),
hard_negatives.ndjson and manifest.json.

The same arguments always give byte-identical files.  Output is written to a
temporary directory next to DIR and renamed into place at the end.
"""

EPILOG = "districts (GB/T 2260): " + ", ".join(f"{d.code} {d.name}" for d in DISTRICTS) + """

examples:
  hutong synth --residents 2000 --institutions 20 --seed 1 --out var/region
  hutong synth --residents 1000000 --institutions 500 --seed 7 --out /data/big --workers 2
  hutong import var/region --database sqlite:///var/hutong.db"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "synth", help="generate a synthetic region (FHIR NDJSON + ground truth)", description=DESCRIPTION,
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = SynthConfig()
    p.add_argument("--residents", type=int, default=d.residents, metavar="N",
                   help=f"number of residents (1-5,000,000; default {d.residents})")
    p.add_argument("--institutions", type=int, default=d.institutions, metavar="M",
                   help=f"number of institutions (default {d.institutions})")
    p.add_argument("--seed", type=int, default=d.seed, metavar="S", help=f"random seed (default {d.seed})")
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="output directory: missing, empty, or an earlier synth output (replaced)")
    p.add_argument("--years", type=int, default=d.years, metavar="Y",
                   help=f"years of history before --today (default {d.years})")
    p.add_argument("--today", type=_date, default=d.today, metavar="YYYY-MM-DD",
                   help=f"reference date, end of the history (default {d.today.isoformat()}; never the clock)")
    p.add_argument("--districts", type=_codes, default=(), metavar="CODE,...",
                   help="restrict the region to these Beijing districts (GB/T 2260 codes, comma-separated)")
    p.add_argument("--demographics-only", action="store_true",
                   help="only institutions, physicians and Patients (identity-matching test beds)")
    p.add_argument("--workers", type=int, default=1, metavar="W",
                   help="worker processes (output is identical for any value; default 1)")
    p.add_argument("--force", action="store_true", help="replace DIR even if it holds something else")
    p.set_defaults(func=run)


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _codes(text: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in text.split(",") if c.strip())


def run(args: argparse.Namespace) -> int:
    config = SynthConfig(
        residents=args.residents, institutions=args.institutions, seed=args.seed, today=args.today,
        years=args.years, districts=args.districts, clinical=not args.demographics_only, workers=args.workers,
    )
    try:
        report = generate(args.out, config, overwrite=args.force)
    except SynthConfigError as e:
        print(f"hutong synth: error: {_FLAGS.get(e.parameter, e.parameter)}: {e.reason}", file=sys.stderr)
        return 2
    except FileExistsError as e:
        print(f"hutong synth: error: --out: {e}; choose another directory or pass --force", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"hutong synth: error: --out: cannot write {args.out}: {e.strerror or e}", file=sys.stderr)
        return 1
    print(
        f"hutong synth: {_n(report.total, 'resource')} ({_n(config.residents, 'resident')}, "
        f"{_n(report.source_patients, 'source Patient')}, {_n(config.institutions, 'institution')}) "
        f"in {report.seconds:.1f} s, {report.resources_per_s:,.0f} resources/s, {report.bytes / 1e6:,.1f} MB "
        f"-> {args.out}"
    )
    return 0


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")
