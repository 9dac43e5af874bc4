"""``hutong demo``: generate a small synthetic city, load it, serve it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hutong.config import env_flag
from hutong.store.repository import Repository


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("demo", help="build a small synthetic region, load it and serve it",
                       description="Generate a synthetic Chinese city (hutong synth), import it into the "
                                   "database and serve http://HOST:PORT. Re-running reuses the loaded data.")
    p.add_argument("--residents", type=int, default=2000, help="residents (default 2000)")
    p.add_argument("--institutions", type=int, default=20, help="institutions (default 20)")
    p.add_argument("--seed", type=int, default=20261121, help="random seed (default 20261121)")
    p.add_argument("--years", type=int, default=1,
                   help="years of history (default 1: ~108k resources, loads in well under a minute)")
    p.add_argument("--database", metavar="URL", default="sqlite:///var/demo/hutong.db",
                   help="database URL (default sqlite:///var/demo/hutong.db)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--no-serve", action="store_true", help="load only, do not serve")
    p.add_argument("--mllp-port", type=int, default=2575,
                   help="MLLP listener for the simulated hospitals (default 2575; loopback senders only)")
    p.add_argument("--no-simulate", action="store_true",
                   help="serve without the simulated hospitals (also HUTONG_DEMO_SIMULATE=0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hutong.ingest.bulk import import_ndjson
    from hutong.platform import open_repository
    from hutong.security.guard import as_operator
    from hutong.synth import SynthConfig, generate

    if args.residents < 1 or args.institutions < 1:
        print("hutong demo: --residents and --institutions must be positive", file=sys.stderr)
        return 2
    # "format" changes when stored data from an earlier version cannot be reused
    # (2: bodies encrypted and identifiers blind-indexed, issue 6).
    stamp = (f"residents={args.residents} institutions={args.institutions} seed={args.seed} years={args.years} "
             "format=2")
    marker = Path("var/demo") / "loaded.txt"
    fresh = not (marker.exists() and marker.read_text() == stamp + " " + args.database)
    if fresh:
        _remove_demo_database(args.database)
    repo = open_repository(args.database)
    if not fresh:
        print(f"demo region already loaded ({stamp})")
    else:
        out = Path("var/demo/region")
        print(f"generating synthetic region ({stamp}) ...", flush=True)
        rep = generate(out, SynthConfig(residents=args.residents, institutions=args.institutions, seed=args.seed,
                                        years=args.years))
        print(f"  {rep.total} resources in {rep.seconds:.1f}s", flush=True)
        print("importing ...", flush=True)
        imp = import_ndjson(as_operator(repo), out)  # the operator's own loader (issue 13: an explicit principal)
        print(f"  loaded {imp.loaded} resources in {imp.seconds:.1f}s ({len(imp.errors)} errors)", flush=True)
        if imp.errors:
            for e in imp.errors[:10]:
                print("  " + e, file=sys.stderr)
            return 1
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(stamp + " " + args.database)
    # A demo database from before the identity layer: link its Patients now.
    from hutong.platform import mpi_of
    linked = mpi_of(repo).backfill()
    if linked:
        print(f"  linked {linked} earlier Patients to persons", flush=True)
    from hutong.web import demo_accounts

    accounts = demo_accounts.ensure(repo, Path("var/demo") / "accounts.json")
    from hutong.cli import demo_recognition  # 互认 knowledge approved, and how to try it (issue 14, item 6)

    recognition_lines = demo_recognition.setup(repo, accounts, Path("var/demo") / "committee.json", args.host,
                                               args.port)
    repo.db.close()
    print("demo accounts (var/demo/accounts.json): platform client "
          f"{accounts['platform_client']['client_id']}, clinician {accounts['clinician']['username']}, "
          f"病案室 (correction requests) {accounts.get('records_officer', {}).get('username', '-')}, "
          f"resident ID number {accounts['resident']['id_number']}; get a token with\n"
          "  curl -u CLIENT_ID:CLIENT_SECRET -d grant_type=client_credentials "
          f"http://{args.host}:{args.port}/auth/token", flush=True)
    for line in recognition_lines:
        print(line, flush=True)
    simulate = not args.no_simulate and env_flag("HUTONG_DEMO_SIMULATE", True)
    clients = Path("var/demo") / "his-clients.json"
    if simulate:
        repo = open_repository(args.database)
        try:
            _his_clients(repo, Path("var/demo/region"), clients)
        finally:
            repo.db.close()
    if args.no_serve:
        return 0
    from hutong.cli import serve

    mllp_port = None
    if simulate:
        import os

        # The simulated hospitals send over loopback without certificates: development
        # mode of the listener (hutong.security.senders), for this demo process only.
        os.environ.setdefault("HUTONG_MLLP_DEV_LOOPBACK", "1")
        mllp_port = args.mllp_port
        _simulate_beside(args, clients)
    return serve.run(argparse.Namespace(host=args.host, port=args.port, database=args.database, workers=1,
                                        mllp_port=mllp_port))


def _his_clients(repo: Repository, region: Path, path: Path) -> None:
    """One OAuth2 system client per demo institution (its HIS sends CDA documents with it),
    kept in ``var/demo/his-clients.json`` (0600) as an operator would hand them out."""
    if path.exists() or not (region / "Organization.ndjson").exists():
        return
    import os

    import orjson

    from hutong.security.accounts import Accounts
    from hutong.security.settings import SecuritySettings
    from hutong.systems import ORGANIZATION

    accounts = Accounts(repo, SecuritySettings.from_env())
    out: dict[str, dict[str, str]] = {}
    for line in (region / "Organization.ndjson").read_bytes().splitlines():
        org = orjson.loads(line)
        code = next((i["value"] for i in org.get("identifier", []) if i.get("system") == ORGANIZATION), None)
        if code is None:
            continue
        client, secret = accounts.add_client(f"HIS of {org.get('name', code)}", organization=code,
                                             organization_id=org["id"])
        if secret is not None:
            out[code] = {"client_id": str(client.client_id), "client_secret": secret}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, orjson.dumps(out, option=orjson.OPT_INDENT_2))
    finally:
        os.close(fd)


def _simulate_beside(args: argparse.Namespace, clients: Path) -> None:
    """``hutong simulate`` in a background thread, once the server answers (a living demo:
    the console shows institutions online, late and silent, volumes and dead letters)."""
    import threading
    import time
    import urllib.request

    from hutong.cli import simulate

    url = f"http://{args.host}:{args.port}"
    sim_args = argparse.Namespace(
        region=Path("var/demo/region"), url=url, mllp=f"{args.host}:{args.mllp_port}",
        credentials=clients if clients.exists() else None, rate=3.0, speed=144.0, start_hour=8.0, faulty=0.02,
        late=2, silent=2,
        seed=args.seed, duration=None, messages=None, no_cda=False, report=None, quiet=True)

    def run() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url + "/fhir/metadata", timeout=5):
                    break
            except OSError:
                time.sleep(0.5)
        else:
            print("hutong demo: the server did not answer; no simulated hospitals", file=sys.stderr, flush=True)
            return
        try:
            print(f"simulated hospitals sending to {url} and MLLP {args.host}:{args.mllp_port} "
                  "(HUTONG_DEMO_SIMULATE=0 or --no-simulate turns them off)", flush=True)
            simulate.run(sim_args)
        except Exception as e:  # the demo server keeps serving without them
            print(f"hutong demo: simulated hospitals stopped ({getattr(e, 'code', type(e).__name__)})",
                  file=sys.stderr, flush=True)

    threading.Thread(target=run, name="hutong-simulate", daemon=True).start()


def _remove_demo_database(url: str) -> None:
    """A demo database of another stamp is rebuilt from scratch (SQLite files
    under var/demo only; anything else is left alone)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return
    db = Path(url[len(prefix):])
    if Path("var/demo").resolve() not in db.resolve().parents:
        return
    import shutil

    for p in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        p.unlink(missing_ok=True)
    shutil.rmtree(db.with_name(db.name + ".keys"), ignore_errors=True)
    import os

    from hutong.security.keys import default_key_dir

    if not os.environ.get("HUTONG_KEY_DIR"):
        # The demo's own key directory (outside var/demo since issue 12): its published
        # audit heads describe the old chain and would make `hutong audit verify` fail.
        shutil.rmtree(default_key_dir(url), ignore_errors=True)
    (Path("var/demo") / "accounts.json").unlink(missing_ok=True)
    (Path("var/demo") / "his-clients.json").unlink(missing_ok=True)
    (Path("var/demo") / "committee.json").unlink(missing_ok=True)
