"""``hutong accounts ...``: manage accounts from the command line.

    hutong accounts add-client NAME --organization CODE [--scopes S] [--jwks FILE] [--no-secret]
    hutong accounts add-client NAME --platform [--scopes S]
        an institution system (OAuth2 client credentials); prints client_id and
        client_secret (shown once) as JSON.  --jwks registers public keys for
        private_key_jwt (SMART Backend Services).
    hutong accounts add-user USERNAME --role clinician|commission|auditor|operator --name NAME
            [--organization CODE --practitioner ID [--practitioner-role ID]] [--scopes S] [--password-stdin]
        a person; prints the initial password (generated unless --password-stdin)
        and the otpauth:// URI for the authenticator app, both shown once.
    hutong accounts add-resident --person mpi-... --phone PHONE [--name NAME]
        a resident signing in with their ID number and an SMS code.
    hutong accounts add-delegate --person mpi-... --for mpi-... [--for ...] --relationship guardian|family
            --phone PHONE [--expires YYYY-MM-DD] [--name NAME]
        a family member (亲友代办) or guardian acting for residents; --person is
        the delegate's own golden person (they sign in with their own ID number).
        A guardian's delegation ends on the child's 14th birthday unless --expires says otherwise.
    hutong accounts list [--role ROLE]          every account (JSON, no secrets)
    hutong accounts show ACCOUNT                one account
    hutong accounts disable ACCOUNT             refuse sign-in and tokens; ends its sessions
    hutong accounts enable ACCOUNT
    hutong accounts unlock ACCOUNT              clear the back-off after failed sign-ins
    hutong accounts reset-password ACCOUNT [--password-stdin]
    hutong accounts rotate-secret ACCOUNT       a new client secret (the old one stops working)
    hutong accounts set-scopes ACCOUNT SCOPES   e.g. "system/Patient.rs system/Observation.cruds"
    hutong accounts set-jwks ACCOUNT FILE       replace a client's private_key_jwt public keys

ACCOUNT is an account id (acct-...), a username or a client_id.  Scopes are
SMART App Launch v2 scopes (patient|user|system / Type|* . cruds).  Errors
print ``hutong: error: HT-01xx: message`` and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from hutong.cli.context import print_json as _print
from hutong.cli.context import repository
from hutong.errors import InvalidRequest, NotFound
from hutong.fhir import search as fsearch
from hutong.security.accounts import USER_ROLES, Account, Accounts, Delegation, parse_jwks
from hutong.security.principal import Role
from hutong.security.settings import SecuritySettings
from hutong.store.repository import Repository
from hutong.systems import ORGANIZATION, REGION_TZ


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("accounts", help="accounts: institution clients, staff, residents, delegates",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database", metavar="URL", help="sqlite:///path or postgresql://... "
                                                     "(default: $HUTONG_DATABASE_URL or sqlite:///var/hutong.db)")
    ops = p.add_subparsers(dest="accounts_command", metavar="ACTION")
    ops.required = True

    c = ops.add_parser("add-client", help="an institution system (OAuth2 client); prints its secret once")
    c.add_argument("name")
    c.add_argument("--organization", metavar="CODE", help="institution identifier (机构代码) of a registered "
                                                          "Organization")
    c.add_argument("--scopes", help="granted SMART scopes (default system/*.cruds)")
    c.add_argument("--jwks", metavar="FILE", type=Path, help="JWK Set of public keys for private_key_jwt")
    c.add_argument("--no-secret", action="store_true", help="no client secret (private_key_jwt only)")
    c.add_argument("--platform", action="store_true", help="the region's own integration engine (all "
                                                           "institutions)")
    c.set_defaults(func=run, action=_add_client)

    u = ops.add_parser("add-user", help="a person with password + TOTP; prints password and otpauth URI once")
    u.add_argument("username")
    u.add_argument("--role", required=True, choices=sorted(str(r) for r in USER_ROLES))
    u.add_argument("--name", required=True, help="name shown in access logs")
    u.add_argument("--organization", metavar="CODE", help="clinicians: their institution's identifier")
    u.add_argument("--practitioner", metavar="ID", help="clinicians: Practitioner id")
    u.add_argument("--practitioner-role", metavar="ID", help="clinicians: PractitionerRole id (privileges)")
    u.add_argument("--scopes", help="granted SMART scopes (default by role)")
    u.add_argument("--password-stdin", action="store_true", help="read the initial password from stdin")
    u.set_defaults(func=run, action=_add_user)

    r = ops.add_parser("add-resident", help="a resident (ID number + SMS code sign-in)")
    r.add_argument("--person", required=True, metavar="MPI_ID", help="the resident's golden Patient id")
    r.add_argument("--phone", required=True)
    r.add_argument("--name", default="")
    r.set_defaults(func=run, action=_add_resident)

    d = ops.add_parser("add-delegate", help="a family member or guardian acting for residents")
    d.add_argument("--person", required=True, metavar="MPI_ID", help="the delegate's own golden Patient id")
    d.add_argument("--for", dest="acts_for", action="append", required=True, metavar="MPI_ID",
                   help="golden Patient id of a resident they act for (repeatable)")
    d.add_argument("--relationship", required=True, choices=["guardian", "family"])
    d.add_argument("--expires", metavar="YYYY-MM-DD", help="last day of the delegation")
    d.add_argument("--phone", required=True)
    d.add_argument("--name", default="")
    d.set_defaults(func=run, action=_add_delegate)

    ls = ops.add_parser("list", help="every account (JSON, no secrets)")
    ls.add_argument("--role", choices=sorted(str(r) for r in Role))
    ls.set_defaults(func=run, action=_list)
    for name, action, help_ in (("show", _show, "one account"),
                                ("disable", _disable, "refuse sign-in and tokens; ends its sessions"),
                                ("enable", _enable, "allow sign-in again"),
                                ("unlock", _unlock, "clear the back-off after failed sign-ins"),
                                ("rotate-secret", _rotate, "a new client secret, printed once")):
        q = ops.add_parser(name, help=help_)
        q.add_argument("account", help="account id, username or client_id")
        q.set_defaults(func=run, action=action)
    rp = ops.add_parser("reset-password", help="a new password (generated unless --password-stdin), printed once")
    rp.add_argument("account")
    rp.add_argument("--password-stdin", action="store_true")
    rp.set_defaults(func=run, action=_reset_password)
    ss = ops.add_parser("set-scopes", help="replace the granted scopes")
    ss.add_argument("account")
    ss.add_argument("scopes")
    ss.set_defaults(func=run, action=_set_scopes)
    sj = ops.add_parser("set-jwks", help="replace a client's private_key_jwt public keys")
    sj.add_argument("account")
    sj.add_argument("file", type=Path)
    sj.set_defaults(func=run, action=_set_jwks)


def run(args: argparse.Namespace) -> int:
    with repository(args.database) as repo:
        rc: int = args.action(args, Accounts(repo, SecuritySettings.from_env()))
        return rc


def organization_id(repo: Repository, code: str) -> str:
    """The Organization registered with identifier ``code`` (as the ingestion
    pipeline resolves senders), else HT-0136."""
    if code and len(code) <= 64:
        parsed = fsearch.parse("Organization", [("identifier", f"{ORGANIZATION}|{code}"), ("_count", "2")],
                               base_url="", strict=True)
        matches = repo.search(parsed.query).matches
        if len(matches) == 1:
            return matches[0].id
        if len(matches) > 1:
            raise InvalidRequest("HT-0136", f"more than one Organization has identifier {code!r}")
    raise InvalidRequest("HT-0136", f"no Organization with identifier {ORGANIZATION}|{code} is registered; "
                                    "load the institution registry first")


def _person(repo: Repository, person_id: str) -> str:
    st = repo.read("Patient", person_id)
    if st is None or st.deleted:
        raise InvalidRequest("HT-0136", f"no Patient {person_id!r} (give the golden person id, mpi-...)")
    return person_id


def _resolve(accounts: Accounts, ref: str) -> Account:
    a = accounts.get(ref) or accounts.by_username(ref) or accounts.by_client_id(ref)
    if a is None:
        raise NotFound("HT-0135", f"no account {ref[:100]!r}")
    return a


def _password(args: argparse.Namespace) -> str | None:
    if not args.password_stdin:
        return None
    return sys.stdin.readline().rstrip("\r\n")


def _jwks(path: Path) -> dict[str, Any]:
    try:
        return parse_jwks(path.read_bytes())
    except OSError as e:
        raise InvalidRequest("HT-0135", f"cannot read {path}: {e.strerror}") from None


def _add_client(args: argparse.Namespace, accounts: Accounts) -> int:
    org_id = None
    if args.organization:
        org_id = organization_id(accounts.repo, args.organization)
    elif not args.platform:
        raise InvalidRequest("HT-0135", "--organization CODE is required (or --platform)")
    a, secret = accounts.add_client(args.name, organization=args.organization, organization_id=org_id,
                                    scopes_text=args.scopes, jwks=_jwks(args.jwks) if args.jwks else None,
                                    platform=args.platform, secret=not args.no_secret)
    out = a.to_json()
    if secret is not None:
        out["client_secret"] = secret
        out["note"] = "the client secret is shown once; store it in the institution system now"
    return _print(out)


def _add_user(args: argparse.Namespace, accounts: Accounts) -> int:
    org_id = organization_id(accounts.repo, args.organization) if args.organization else None
    a, password, uri = accounts.add_user(
        args.username, role=Role(args.role), name=args.name, password=_password(args),
        organization=args.organization, organization_id=org_id, practitioner_id=args.practitioner,
        practitioner_role_id=args.practitioner_role, scopes_text=args.scopes)
    out = a.to_json()
    if not args.password_stdin:
        out["password"] = password
    out["otpauth_uri"] = uri
    out["note"] = "password and otpauth URI are shown once: enrol the authenticator app now"
    return _print(out)


def _add_resident(args: argparse.Namespace, accounts: Accounts) -> int:
    person = _person(accounts.repo, args.person)
    return _print(accounts.add_resident(person, phone=args.phone, name=args.name).to_json())


def _add_delegate(args: argparse.Namespace, accounts: Accounts) -> int:
    person = _person(accounts.repo, args.person)
    expires = None
    if args.expires:
        try:
            day = datetime.strptime(args.expires, "%Y-%m-%d").replace(tzinfo=REGION_TZ)
        except ValueError:
            raise InvalidRequest("HT-0135", "--expires must be YYYY-MM-DD") from None
        expires = int((day + timedelta(days=1)).timestamp() * 1000)  # through the end of that day
    acts_for = [Delegation(_person(accounts.repo, p), args.relationship, expires) for p in args.acts_for]
    return _print(accounts.add_delegate(person, acts_for=acts_for, phone=args.phone, name=args.name).to_json())


def _list(args: argparse.Namespace, accounts: Accounts) -> int:
    return _print([a.to_json() for a in accounts.list_accounts(Role(args.role) if args.role else None)])


def _show(args: argparse.Namespace, accounts: Accounts) -> int:
    return _print(_resolve(accounts, args.account).to_json())


def _disable(args: argparse.Namespace, accounts: Accounts) -> int:
    return _print(accounts.set_status(_resolve(accounts, args.account).id, False).to_json())


def _enable(args: argparse.Namespace, accounts: Accounts) -> int:
    return _print(accounts.set_status(_resolve(accounts, args.account).id, True).to_json())


def _unlock(args: argparse.Namespace, accounts: Accounts) -> int:
    return _print(accounts.unlock(_resolve(accounts, args.account).id).to_json())


def _reset_password(args: argparse.Namespace, accounts: Accounts) -> int:
    a, password = accounts.reset_password(_resolve(accounts, args.account).id, _password(args))
    out = a.to_json()
    if not args.password_stdin:
        out["password"] = password
    return _print(out)


def _rotate(args: argparse.Namespace, accounts: Accounts) -> int:
    a, secret = accounts.rotate_secret(_resolve(accounts, args.account).id)
    out = a.to_json()
    out["client_secret"] = secret
    return _print(out)


def _set_scopes(args: argparse.Namespace, accounts: Accounts) -> int:
    return _print(accounts.set_scopes(_resolve(accounts, args.account).id, args.scopes).to_json())


def _set_jwks(args: argparse.Namespace, accounts: Accounts) -> int:
    return _print(accounts.set_jwks(_resolve(accounts, args.account).id, _jwks(args.file)).to_json())
