"""``hutong simulate``: a synthetic region's hospitals sending to a running platform."""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Act as the hospitals of a synthetic region (written by `hutong synth` or `hutong demo`): each
institution's HIS sends HL7 v2 ADT^A01/A03/A04/A08, ORM^O01 and ORU^R01 over MLLP and, for the
institutions in --credentials, WS/T 500 CDA documents (门(急)诊病历, 西药处方, 检查报告, 检验报告,
入院记录, 出院小结, 住院病案首页) to POST /ingest/cda, at a daily rhythm compressed --speed times,
around --rate messages per second for the whole region.  --late institutions upload records days
old (next-day timeliness fails), --silent ones send nothing, and a --faulty share of messages has a
mistake the platform keeps as a dead letter.  Only the wire is used: nothing is read from the
platform.  The MLLP listener must accept the senders (TLS client certificates are not offered
here: run it with HUTONG_MLLP_DEV_LOOPBACK=1 on loopback, or map this host in HUTONG_MLLP_SENDERS).
Prints a JSON report of what was sent and answered per institution."""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("simulate", help="simulate the region's hospitals sending HL7 v2 and CDA to a platform",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--region", type=Path, default=Path("var/demo/region"),
                   help="synthetic region directory (Organization.ndjson, Patient.ndjson; default var/demo/region)")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the platform's root URL (for CDA)")
    p.add_argument("--mllp", default="127.0.0.1:2575", metavar="HOST:PORT", help="the MLLP listener")
    p.add_argument("--credentials", type=Path, default=None, metavar="JSON",
                   help="institution code -> {client_id, client_secret} of its system client (CDA over HTTP); "
                        "without it only HL7 v2 is sent")
    p.add_argument("--rate", type=float, default=3.0, help="mean messages per second, whole region (default 3)")
    p.add_argument("--speed", type=float, default=144.0,
                   help="simulated seconds per real second for the daily rhythm (default 144: a day in 10 minutes)")
    p.add_argument("--start-hour", type=float, default=8.0,
                   help="simulated hour of day at start (default 8: the morning clinics); -1: the real Beijing hour")
    p.add_argument("--faulty", type=float, default=0.02, help="share of faulty messages (default 0.02)")
    p.add_argument("--late", type=int, default=2, help="institutions that upload days late (default 2)")
    p.add_argument("--silent", type=int, default=2, help="institutions that send nothing (default 2)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--messages", type=int, default=None, help="stop after this many messages")
    p.add_argument("--no-cda", action="store_true", help="send HL7 v2 only")
    p.add_argument("--report", type=Path, default=None, help="also write the JSON report to this file")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)


def config_of(args: argparse.Namespace) -> Any:
    from hutong.errors import InvalidRequest
    from hutong.sim import SimConfig

    if args.rate <= 0 or args.speed <= 0 or not 0 <= args.faulty <= 1 or args.late < 0 or args.silent < 0:
        raise InvalidRequest("HT-0401", "--rate and --speed must be positive, --faulty between 0 and 1, "
                                        "--late and --silent not negative")
    return SimConfig(rate=args.rate, speed=args.speed, faulty=args.faulty, late=args.late, silent=args.silent,
                     seed=args.seed, duration=args.duration, messages=args.messages, cda=not args.no_cda,
                     start_hour=None if args.start_hour < 0 else args.start_hour % 24)


def simulator(args: argparse.Namespace) -> Any:
    """The simulator the arguments describe (also started by ``hutong demo``)."""
    import httpx
    import orjson

    from hutong.errors import InvalidRequest
    from hutong.sim import CdaPoster, ClientCredentials, Mllp, Simulator, load

    cfg = config_of(args)
    hospitals = load(args.region)
    host, sep, port = args.mllp.rpartition(":")
    if not sep or not port.isdigit():
        raise InvalidRequest("HT-0401", f"--mllp {args.mllp[:80]!r} is not HOST:PORT")
    posters: dict[str, CdaPoster] = {}
    if args.credentials is not None and not args.no_cda:
        try:
            creds = orjson.loads(args.credentials.read_bytes())
        except (OSError, orjson.JSONDecodeError) as e:
            raise InvalidRequest("HT-0402", f"--credentials unreadable: {type(e).__name__}") from None
        http = httpx.Client(base_url=args.url.rstrip("/"), timeout=60)
        for code, c in creds.items():
            if isinstance(c, dict) and c.get("client_id") and c.get("client_secret"):
                posters[code] = CdaPoster(http, ClientCredentials(c["client_id"], c["client_secret"]))
    return Simulator(hospitals, cfg, mllp=lambda _code: Mllp(host or "127.0.0.1", int(port)), posters=posters)


def _progress(report: Any) -> None:
    t = report.as_dict()["total"]
    print(f"simulate: {report.seconds:.0f}s sent {t['sent']} stored {t['stored']} dead {t['dead']} "
          f"refused {t['refused']} failed {t['failed']}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace, stop: threading.Event | None = None) -> int:
    import orjson

    sim = simulator(args)
    roles = sim.role
    if not args.quiet:
        print(f"simulate: {len(sim.hospitals)} institutions ({sum(r == 'late' for r in roles.values())} late, "
              f"{sum(r == 'silent' for r in roles.values())} silent), {len(sim.posters)} sending CDA, "
              f"~{args.rate:g} messages/s; Ctrl-C stops", file=sys.stderr, flush=True)
    stop = stop or threading.Event()
    try:
        report = sim.run(stop, progress=None if args.quiet else _progress)
    except KeyboardInterrupt:
        report = sim.report
    out = orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2)
    if args.report is not None:
        args.report.write_bytes(out)
    if not args.quiet:
        print(out.decode())
    return 0
