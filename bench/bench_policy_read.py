"""What the request-bound policy costs a clinician's read (issue 13, item 3).

Serves one tree's app in-process (uvicorn in a thread, as tests/harness.py
does; wall time and the process's CPU time, server and client together, the
latter less sensitive to other work on a shared machine) on a fresh SQLite file, builds a two-hospital region through the API
with the platform client, and times ``--reads`` sequential
``GET /fhir/Observation/<id>`` by a clinician token: once for a record of
the clinician's own institution, once for another institution's record read
on a treatment basis.  Run it for two trees in one sitting (``--tree`` comes
first on sys.path), alternating, so the machine's other load hits both:

    python -m bench.bench_policy_read --tree /tmp/before --tree . --rounds 2

A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = r'''
import sys, time, json, tempfile, threading
from datetime import UTC, datetime, timedelta
tree, reads = sys.argv[1], int(sys.argv[2])
sys.path.insert(0, tree)
import httpx, uvicorn, socket
from hutong.fhir.assembly import open_repository
from hutong.web.app import create_app
from hutong.config import Settings
from hutong.security.principal import Role
assert __import__("hutong").__file__.startswith(tree), __import__("hutong").__file__

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

tmp = tempfile.mkdtemp()
url = f"sqlite:///{tmp}/db/hutong.db"
import os; os.makedirs(f"{tmp}/db")
repo = open_repository(url)
app = create_app(Settings(database_url=url), repo=repo)
port = free_port()
srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                                    lifespan="off"))
threading.Thread(target=srv.run, daemon=True).start()
while not srv.started:
    time.sleep(0.01)
root = f"http://127.0.0.1:{port}/fhir"
tokens = app.state.authenticator.tokens
acc = tokens.accounts
platform, _ = acc.add_client("bench", organization=None, organization_id=None, scopes_text="system/*.cruds",
                             platform=True)
H = {"content-type": "application/fhir+json", "accept": "application/fhir+json"}
c = httpx.Client(base_url=root, headers={**H, "authorization": "Bearer " + tokens.issue(platform, "system/*.cruds")["access_token"]})
def made(r):
    assert r.status_code == 201, r.text
    return r.json()["id"]
def ago(n):
    return (datetime.now(UTC) - timedelta(days=n)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
ids = {}
for k, code in (("A", "12110000400000001A"), ("B", "12110000400000002B")):
    ids["org" + k] = made(c.post("/Organization", json={"resourceType": "Organization", "name": k,
        "identifier": [{"system": "urn:oid:2.16.156.10011.1.5", "value": code}]}))
    ids["code" + k] = code
ids["doc"] = made(c.post("/Practitioner", json={"resourceType": "Practitioner", "name": [{"family": "医"}]}))
for k in ("A", "B"):
    ids["p" + k] = made(c.post("/Patient", json={"resourceType": "Patient",
        "managingOrganization": {"reference": "Organization/" + ids["org" + k]},
        "identifier": [{"system": "urn:oid:2.16.156.10011.1.3", "value": "11010519491231002X"}],
        "name": [{"family": "王", "given": ["小红"]}], "birthDate": "1949-12-31", "gender": "female"}))
    ids["obs" + k] = made(c.post("/Observation", json={"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "subject": {"reference": "Patient/" + ids["p" + k]}, "effectiveDateTime": ago(3),
        "valueQuantity": {"value": 5.6, "unit": "mmol/L"}}))
made(c.post("/Encounter", json={"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
    "subject": {"reference": "Patient/" + ids["pB"]}, "serviceProvider": {"reference": "Organization/" + ids["orgB"]},
    "period": {"start": ago(2), "end": ago(2)}}))
doc, _, _ = acc.add_user("doctorb", role=Role.CLINICIAN, name="B", organization=ids["codeB"],
                         organization_id=ids["orgB"], practitioner_id=ids["doc"])
d = httpx.Client(base_url=root, headers={**H, "authorization": "Bearer " + tokens.issue(doc, doc.scopes)["access_token"]})
out = {}
for label, oid in (("own", ids["obsB"]), ("treatment", ids["obsA"])):
    for _ in range(50):  # warm up
        assert d.get(f"/Observation/{oid}").status_code == 200
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(reads):
        r = d.get(f"/Observation/{oid}")
        assert r.status_code == 200, r.text
    out[label] = time.perf_counter() - t0
    out[label + "_cpu"] = time.process_time() - c0
srv.should_exit = True
print(json.dumps(out))
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", action="append", required=True, help="a source tree (repeatable)")
    ap.add_argument("--reads", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    results: dict[str, list[dict[str, float]]] = {t: [] for t in args.tree}
    with tempfile.TemporaryDirectory() as d:
        script = Path(d) / "one.py"
        script.write_text(SCRIPT)
        for _ in range(args.rounds):
            for tree in args.tree:
                path = str(Path(tree).resolve())
                env = {**os.environ, "PYTHONPATH": path, "HUTONG_KEY_DIR": ""}
                env.pop("HUTONG_KEY_DIR")
                r = subprocess.run([sys.executable, str(script), path, str(args.reads)], capture_output=True,
                                   text=True, env=env, cwd=d, check=False)
                if r.returncode != 0:
                    sys.stderr.write(r.stderr[-3000:])
                    raise SystemExit(f"{tree}: failed")
                results[tree].append(json.loads(r.stdout.strip().splitlines()[-1]))
    for tree, runs in results.items():
        for label in ("own", "treatment"):
            best = min(x[label] for x in runs)
            cpu = min(x[label + "_cpu"] for x in runs)
            print(f"{tree}: {label}: {args.reads} reads best {best:.2f}s = {1000 * best / args.reads:.2f} ms/read "
                  f"wall, {1000 * cpu / args.reads:.2f} ms/read CPU (server and client, one process; "
                  f"runs {', '.join(f'{x[label]:.2f}' for x in runs)} s)")
    _ = time


if __name__ == "__main__":
    main()
