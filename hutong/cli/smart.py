"""``hutong smart ...``: register the third-party apps that may use SMART App Launch.

    hutong smart register NAME --redirect-uri URI [--redirect-uri URI ...] [--confidential]
            [--launch-url URL] [--scopes S]
        an app (internet hospital, resident app).  Public by default (a browser or
        phone app holding no secret; PKCE protects its codes); --confidential prints
        a client secret once (only its hash is kept).  Redirect URIs are compared
        exactly; https only (http for 127.0.0.1 / localhost).  --launch-url lets
        clinicians open it from the workspace (EHR launch).  --scopes is the most it
        may ever ask for (default "launch launch/patient patient/*.rs user/*.rs
        offline_access"); a person still grants no more than they hold.
    hutong smart list                  every registered app (JSON, no secrets)
    hutong smart disable CLIENT_ID     refuse its authorization, token and refresh requests
    hutong smart enable CLIENT_ID

Errors print ``hutong: error: HT-02xx: message`` and exit with status 2.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import orjson

from hutong.cli.context import print_json, repository
from hutong.errors import NotFound
from hutong.security.smart import register_app
from hutong.security.smart_store import ClientRow, SmartStore


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("smart", help="SMART App Launch: register third-party apps",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database", metavar="URL", help="sqlite:///path or postgresql://... "
                                                     "(default: $HUTONG_DATABASE_URL or sqlite:///var/hutong.db)")
    ops = p.add_subparsers(dest="smart_command", metavar="ACTION")
    ops.required = True
    r = ops.add_parser("register", help="register an app; a confidential app's secret is printed once")
    r.add_argument("name")
    r.add_argument("--redirect-uri", action="append", required=True, metavar="URI",
                   help="exact redirect URI (repeat for several)")
    r.add_argument("--confidential", action="store_true", help="a server-side app holding a client secret")
    r.add_argument("--launch-url", metavar="URL", help="EHR launch: where the clinician workspace opens the app")
    r.add_argument("--scopes", help="the most the app may ask for")
    r.set_defaults(func=_register)
    ops.add_parser("list", help="registered apps").set_defaults(func=_list)
    for name, active in (("disable", False), ("enable", True)):
        d = ops.add_parser(name, help=f"{name} an app")
        d.add_argument("client_id")
        d.set_defaults(func=_status, active=active)


def _json(c: ClientRow) -> dict[str, Any]:
    return {"client_id": c.client_id, "name": c.name, "kind": c.kind, "redirect_uris": orjson.loads(c.redirect_uris),
            "launch_url": c.launch_url, "scopes": c.scopes, "status": c.status}


def _register(args: argparse.Namespace) -> int:
    with repository(args.database) as repo:
        row, secret = register_app(SmartStore(repo), time.time_ns() // 1_000_000, args.name,
                                   kind="confidential" if args.confidential else "public",
                                   redirect_uris=args.redirect_uri, launch_url=args.launch_url, scopes=args.scopes)
    out = _json(row)
    if secret is not None:
        out["client_secret"] = secret  # shown once
    return print_json(out)


def _list(args: argparse.Namespace) -> int:
    with repository(args.database) as repo:
        return print_json([_json(c) for c in SmartStore(repo).clients()])


def _status(args: argparse.Namespace) -> int:
    with repository(args.database) as repo:
        if not SmartStore(repo).set_client_status(args.client_id[:64], "active" if args.active else "disabled",
                                                  time.time_ns() // 1_000_000):
            raise NotFound("HT-0280", "no such SMART app")
    return print_json({"client_id": args.client_id, "status": "active" if args.active else "disabled"})
