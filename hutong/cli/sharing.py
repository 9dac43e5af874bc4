"""``hutong sharing ...`` and ``hutong export``: sharing requests and exports from the command line.

    hutong sharing request --requester ACCOUNT --organisation NAME --purpose TEXT --basis BASIS
                           --types Observation,Condition [--institutions H001,H002] [--from DATE] [--to DATE]
                           [--deidentified] --recipient NAME --destination file:///dir --assessment FILE.json
    hutong sharing submit ID [--requester ACCOUNT]
    hutong sharing approve ID --approver ACCOUNT [--note TEXT]
    hutong sharing reject ID --approver ACCOUNT --note TEXT
    hutong sharing list [--status S]
    hutong sharing show ID
    hutong export --request ID --to file:///dir

Legal bases: consent, public-health, research-deidentified, treatment, statutory.
The assessment file is the security assessment checklist (JSON)::

    {"data_classification": "sensitive personal information (health)", "volume_estimate": "about 20,000",
     "recipient_security_level": 3, "cross_border": false, "risk": "medium",
     "mitigations": ["de-identified", "encrypted transfer"], "assessor": "Zhang Wei, CDC data office"}

An approved request is valid 30 days and for one export.  The approver must
be a commission officer other than the requester (four-eyes).  Shell access to
this machine already implies control of the database, so the command line
records the accounts named by --requester / --approver (as institution-side
requester and commission approver) and runs exports as the local operator;
every step is written to the audit log.  Output is JSON on stdout.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson

from hutong.cli.context import print_json as _print
from hutong.cli.context import repository
from hutong.errors import InvalidRequest
from hutong.security.audit import AuditLog
from hutong.security.principal import LOCAL_OPERATOR, Principal, Role
from hutong.security.settings import SecuritySettings
from hutong.security.sharing import LEGAL_BASES, STATUSES, SharingRequests
from hutong.store.repository import Repository

DB_HELP = "sqlite:///path or postgresql://... (default: $HUTONG_DATABASE_URL or sqlite:///var/hutong.db)"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("sharing", help="data sharing requests: request, submit, approve/reject, list, show",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database", metavar="URL", help=DB_HELP)
    ops = p.add_subparsers(dest="sharing_command", metavar="ACTION")
    ops.required = True

    r = ops.add_parser("request", help="record a new request (draft)")
    r.add_argument("--requester", required=True, help="account id of the requester")
    r.add_argument("--organisation", required=True, help="requesting organisation's name")
    r.add_argument("--purpose", required=True)
    r.add_argument("--basis", required=True, choices=LEGAL_BASES)
    r.add_argument("--types", required=True, help="resource types, comma-separated")
    r.add_argument("--institutions", default="", help="institution codes, comma-separated (default: all)")
    r.add_argument("--from", dest="period_from", metavar="DATE", help="first day (_lastUpdated, Beijing time)")
    r.add_argument("--to", dest="period_to", metavar="DATE", help="last day (inclusive)")
    r.add_argument("--deidentified", action="store_true", help="remove direct identifiers, pseudonymise ids")
    r.add_argument("--recipient", required=True, help="who receives the data")
    r.add_argument("--destination", required=True, help="where the export goes, e.g. file:///srv/exports")
    r.add_argument("--assessment", required=True, type=Path, help="security assessment (JSON file)")
    r.set_defaults(func=run, action=_request)

    s = ops.add_parser("submit", help="submit a draft for approval")
    s.add_argument("id")
    s.add_argument("--requester", help="account id submitting (default: the local operator)")
    s.set_defaults(func=run, action=_submit)

    a = ops.add_parser("approve", help="approve a submitted request (commission; not the requester)")
    a.add_argument("id")
    a.add_argument("--approver", required=True, help="commission account id")
    a.add_argument("--note")
    a.set_defaults(func=run, action=_approve)

    j = ops.add_parser("reject", help="reject a submitted request, saying why")
    j.add_argument("id")
    j.add_argument("--approver", required=True, help="commission account id")
    j.add_argument("--note", required=True)
    j.set_defaults(func=run, action=_reject)

    ls = ops.add_parser("list", help="requests, newest first")
    ls.add_argument("--status", choices=STATUSES)
    ls.add_argument("--limit", type=int, default=100)
    ls.set_defaults(func=run, action=_list)

    sh = ops.add_parser("show", help="one request with its exports")
    sh.add_argument("id")
    sh.set_defaults(func=run, action=_show)

    e = sub.add_parser("export", help="export the data of an approved sharing request (FHIR Bulk NDJSON)",
                       description="Export under an approved, unexpired, unused sharing request to its "
                                   "approved destination (a local directory, file:///path). Writes "
                                   "<dir>/<request id>/<Type>.ndjson and manifest.json.")
    e.add_argument("--database", metavar="URL", help=DB_HELP)
    e.add_argument("--request", required=True, metavar="ID")
    e.add_argument("--to", required=True, metavar="URL", help="destination; must equal the approved one")
    e.set_defaults(func=run, action=_export)


def run(args: argparse.Namespace) -> int:
    with repository(args.database) as repo:
        rc: int = args.action(args, repo)
        return rc


def _register(repo: Repository) -> SharingRequests:
    return SharingRequests(repo, AuditLog(repo).record, settings=SecuritySettings.from_env())


def _requester(account: str) -> Principal:
    return Principal(account_id=account, role=Role.INSTITUTION, display=account, peer="local")


def _approver(account: str) -> Principal:
    return Principal(account_id=account, role=Role.COMMISSION, display=account, peer="local")


def _request(args: argparse.Namespace, repo: Repository) -> int:
    try:
        assessment = orjson.loads(args.assessment.read_bytes())
    except (OSError, orjson.JSONDecodeError) as e:
        raise InvalidRequest("HT-0163", f"assessment file {args.assessment}: {type(e).__name__}") from None
    reg = _register(repo)
    req = reg.create(_requester(args.requester), {
        "organisation": args.organisation, "purpose": args.purpose, "basis": args.basis,
        "scope": {"types": args.types, "institutions": args.institutions, "from": args.period_from,
                  "to": args.period_to, "deidentified": args.deidentified},
        "recipient": args.recipient, "destination": args.destination, "assessment": assessment})
    return _print(req.to_json(reg.clock()))


def _submit(args: argparse.Namespace, repo: Repository) -> int:
    reg = _register(repo)
    actor = _requester(args.requester) if args.requester else LOCAL_OPERATOR
    return _print(reg.submit(args.id, actor).to_json(reg.clock()))


def _approve(args: argparse.Namespace, repo: Repository) -> int:
    reg = _register(repo)
    return _print(reg.approve(args.id, _approver(args.approver), args.note).to_json(reg.clock()))


def _reject(args: argparse.Namespace, repo: Repository) -> int:
    reg = _register(repo)
    return _print(reg.reject(args.id, _approver(args.approver), args.note).to_json(reg.clock()))


def _list(args: argparse.Namespace, repo: Repository) -> int:
    reg = _register(repo)
    now = reg.clock()
    return _print([r.to_json(now) for r in reg.list(status=args.status, limit=args.limit)])


def _show(args: argparse.Namespace, repo: Repository) -> int:
    reg = _register(repo)
    return _print(reg.get(args.id).to_json(reg.clock()))


def _export(args: argparse.Namespace, repo: Repository) -> int:
    from hutong.security.export import export

    result = export(repo, args.request, args.to, LOCAL_OPERATOR, AuditLog(repo).record,
                    settings=SecuritySettings.from_env())
    return _print(result.to_json())
