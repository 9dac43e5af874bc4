"""Bad input and attacks against the FHIR API (issue 6, "Bad input and attacks"),
through the real server on SQLite and PostgreSQL.

- Another resident's id everywhere a resident can put one: read, vread,
  history, search parameters (plain, chained, reverse-chained), _include,
  _revinclude, $everything, compartments, _summary=count, batch and
  transaction bundles.  Nothing of resident S comes back to resident R, not
  even a count.
- SQL injection in every search parameter of Patient, Observation, Encounter
  and Condition, with modifiers, as a resident and as a clinician: never a
  500, never a record the caller may not see, and the database keeps every
  table and row.
- Forged, expired, revoked and oversized tokens, tokens of disabled accounts
  and malformed Authorization headers at /fhir: 401 OperationOutcome with
  WWW-Authenticate and a REFUSED audit row (the token service itself is
  tested in test_tokens.py; this is the same at the HTTP edge).
- Password guessing through the whole app: the guessing address is held
  back (never the account), and the audit rows land in the hash-chained log
  (the /auth routes alone: test_oauth.py test_login_failures_and_back_off_over_http).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import orjson
import pyotp
import pytest
import sqlalchemy
from fhirapi import issue_code, resource_ids
from harness import Server
from joserfc import jwt
from joserfc.jwk import ECKey
from region import S_ID, Region, build

from hutong.fhir.registry import params_for
from hutong.security import totp
from hutong.security.events import REFUSED
from hutong.security.principal import Role
from hutong.security.tokens import TokenService
from hutong.store import schema
from hutong.systems import ID_CARD


@pytest.fixture
def region(server: Server) -> Iterator[Region]:
    yield build(server)


# Resident R's records (all categories: a resident sees their own sensitive
# records) and the directory (organisations, practitioners) anyone may read.
R_RECORDS = ("R", "pA", "pB", "encA", "encB", "obsA", "obsB", "hivB", "trap", "psyA", "psyB", "dxB")
DIRECTORY = ("orgA", "orgB", "docA", "docB")
S_RECORDS = ("S", "pS", "obsS", "encS")
A_RECORDS = ("pA", "encA", "obsA", "psyA")    # hospital A's records (closed to B's clinician)


def idset(region: Region, keys: tuple[str, ...]) -> set[str]:
    return {region.ids[k] for k in keys}


def without_links(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: without_links(v) for k, v in data.items() if not (k == "link" and data.get("resourceType")
                                                                     == "Bundle")}
    if isinstance(data, list):
        return [without_links(x) for x in data]
    return data


def match_ids(bundle: dict[str, Any]) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == "match"}


def nothing_of_s(region: Region, r: httpx.Response, what: str) -> None:
    """R's response: not a 500, no resource but R's own or directory data, and
    no trace of S (golden id, records, ID number, family name).  S's source
    Patient id (pS) may appear only as the performer reference of R's "trap"
    Observation, so it is checked as a resource id, not as text."""
    assert r.status_code < 500, (what, r.status_code, r.text[:300])
    is_json = bool(r.content) and r.headers.get("content-type", "").split(";")[0].endswith("json")
    # Bundle links repeat the query as sent (S's id, when R asked for it): not data.
    text = orjson.dumps(without_links(r.json())).decode() if is_json else r.text
    for marker in (region.ids["S"], region.ids["obsS"], region.ids["encS"], S_ID, "李"):
        assert marker not in text, (what, marker)
    if is_json:
        got = resource_ids(r.json())
        stray = got - idset(region, R_RECORDS) - idset(region, DIRECTORY)
        assert not stray, (what, stray)


# ------------------------------------------------------------------ (a) another resident's id
def test_another_residents_id_everywhere(region: Region) -> None:
    ids = region.ids
    server = region.server
    pS, S, obsS, encS = ids["pS"], ids["S"], ids["obsS"], ids["encS"]
    gets: list[tuple[str, dict[str, str]]] = [
        # read, vread, history
        (f"/Patient/{pS}", {}), (f"/Patient/{S}", {}), (f"/Observation/{obsS}", {}), (f"/Encounter/{encS}", {}),
        (f"/Observation/{obsS}/_history/1", {}), (f"/Patient/{pS}/_history/1", {}),
        (f"/Observation/{obsS}/_history", {}), (f"/Patient/{pS}/_history", {}), (f"/Patient/{S}/_history", {}),
        # search parameters naming S
        ("/Observation", {"patient": pS}), ("/Observation", {"patient": S}),
        ("/Observation", {"subject": f"Patient/{pS}"}), ("/Observation", {"subject": f"Patient/{S}"}),
        ("/Observation", {"_id": obsS}), ("/Encounter", {"_id": encS}), ("/Patient", {"_id": pS}),
        ("/Patient", {"_id": S}), ("/Patient", {"_id": f"{pS},{S},{ids['pA']}"}),
        ("/Observation", {"subject:Patient._id": pS}), ("/Observation", {"subject:Patient.identifier": S_ID}),
        ("/Observation", {"patient.family": "李"}),
        ("/Patient", {"_has:Observation:patient:_id": obsS}), ("/Patient", {"_has:Encounter:patient:_id": encS}),
        ("/Patient", {"identifier": f"{ID_CARD}|{S_ID}"}), ("/Patient", {"identifier": S_ID}),
        ("/Patient", {"family": "李"}), ("/Patient", {"name": "李四"}), ("/Patient", {"name:contains": "四"}),
        ("/Patient", {"birthdate": "1880-01-01"}), ("/Patient", {"gender": "male"}),
        ("/Observation", {"value-quantity": "7.0"}), ("/Encounter", {"date": "ge2000-01-01"}),
        # includes: the trap names S as performer; S's Observation points at S's Patient
        ("/Observation", {"_include": "Observation:performer"}), ("/Observation", {"_include": "Observation:*"}),
        ("/Observation", {"_include": "*"}), ("/Observation", {"_id": obsS, "_include": "Observation:subject"}),
        ("/Observation", {"_include:iterate": "Observation:subject"}),
        ("/Patient", {"_revinclude": "Observation:subject"}), ("/Patient", {"_revinclude": "Observation:performer"}),
        ("/Patient", {"_revinclude": "*"}), ("/Patient", {"_id": ids["pB"], "_revinclude": "Encounter:subject"}),
        ("/Encounter", {"_revinclude:iterate": "Observation:encounter", "_include": "Encounter:subject"}),
        # operations and compartments
        (f"/Patient/{S}/$everything", {}), (f"/Patient/{pS}/$everything", {}),
        (f"/Patient/{ids['R']}/$everything", {"_type": "Observation,Patient"}),
        (f"/Patient/{S}/$access-basis", {}),
        (f"/Patient/{pS}/Observation", {}), (f"/Patient/{S}/Observation", {}), (f"/Patient/{pS}/Encounter", {}),
        (f"/Patient/{ids['pB']}/Observation", {"_include": "Observation:performer"}),
        # counts
        ("/Observation", {"_summary": "count"}), ("/Encounter", {"_summary": "count"}),
        ("/Patient", {"_summary": "count"}), ("/Condition", {"_summary": "count"}),
        ("/Observation", {"_id": obsS, "_summary": "count"}), ("/Observation", {"patient": pS, "_summary": "count"}),
        ("/Patient", {"identifier": S_ID, "_summary": "count"}), ("/Patient", {"family": "李", "_total": "accurate"}),
        ("/Observation", {"_count": "1", "_total": "accurate"}),
    ]
    with region.client("R") as r:
        for path, params in gets:
            resp = r.get(path, params=params)
            what = f"GET {path} {params}"
            nothing_of_s(region, resp, what)
            assert resp.status_code in (200, 400, 403), (what, resp.status_code, resp.text[:300])
            if resp.status_code != 200:
                assert resp.json()["resourceType"] == "OperationOutcome", what
                continue
            body = resp.json()
            if body.get("resourceType") == "Bundle" and body.get("type") == "searchset":
                # The oracle: what the platform (sees all) finds for the same
                # query, cut to R's records, is exactly what R may find -- and
                # the total counts nothing else.
                full = server.client.get(path, params={k: v for k, v in params.items()
                                                       if k not in ("_summary", "_count", "_total")}
                                         | {"_count": "500"}).json()
                mine = match_ids(full) & idset(region, R_RECORDS + DIRECTORY)
                if params.get("_summary") == "count":
                    assert body["total"] == len(mine), (what, body["total"], mine)
                else:
                    assert match_ids(body) == mine if params.get("_count") != "1" else match_ids(body) <= mine, what
                    if "total" in body:
                        assert body["total"] == len(mine), (what, body["total"], mine)
        # POST _search carries the same criteria in the body.
        for form in ({"patient": pS}, {"_id": obsS}, {"subject:Patient._id": pS}, {"_summary": "count"}):
            resp = r.post("/Observation/_search", data=form,
                          headers={"content-type": "application/x-www-form-urlencoded"})
            nothing_of_s(region, resp, f"POST _search {form}")
            if form == {"_summary": "count"}:
                assert resp.json()["total"] == 4   # obsA, obsB, hivB, trap
        # Batch and transaction bundles with GET entries: each entry judged alone.
        entries = [f"Observation/{obsS}", f"Patient/{pS}", f"Patient/{S}", f"Observation?patient={pS}",
                   f"Observation?_id={obsS}", f"Observation?_id={obsS}&_summary=count",
                   f"Patient?_has:Observation:patient:_id={obsS}", f"Patient/{S}/$everything",
                   f"Observation/{obsS}/_history", f"Patient/{pS}/Observation", "Observation?_summary=count",
                   f"Observation?_include=Observation:performer&_id={ids['trap']}"]
        for kind in ("batch", "transaction"):
            bundle = {"resourceType": "Bundle", "type": kind,
                      "entry": [{"request": {"method": "GET", "url": u}} for u in entries]}
            resp = r.post("", json=bundle)
            nothing_of_s(region, resp, kind)
            if resp.status_code == 200:
                for u, e in zip(entries, resp.json()["entry"], strict=True):
                    status = e["response"]["status"]
                    res = e.get("resource", {})
                    if u == "Observation?_summary=count":
                        assert status.startswith("200") and res["total"] == 4, (kind, u, e)
                    elif res.get("resourceType") == "Bundle":
                        # Nothing of S (nothing_of_s above); what matched is R's and the total counts only that.
                        got = match_ids(res)
                        assert got <= idset(region, R_RECORDS) and res.get("total", 0) == len(got), (kind, u, e)
                    else:  # refused, or a request the server does not support (e.g. _id inside _has)
                        assert status.startswith(("400", "403", "404")), (kind, u, e)
            else:
                assert resp.status_code == 403 and kind == "transaction", (kind, resp.status_code, resp.text[:300])
    # Everything R was refused is in the audit log, under R.
    refused = server.app.platform.audit.search(account=region.accounts["R"].id, outcome=REFUSED, limit=500)
    assert len(refused) >= 10 and all(e.code and e.code.startswith("HT-01") for e in refused)


# ------------------------------------------------------------------ (b) SQL injection
# NUL bytes: in the corpus, and on every parameter in test_nul_bytes_in_search_values (always 400).
NUL_PAYLOADS = ("\x00", "a\x00' OR 1=1 --", "http://loinc.org|\x00")
PAYLOADS = NUL_PAYLOADS + (
    "' OR 1=1 --", "' OR '1'='1", "\" OR \"\"=\"", "'; DROP TABLE resource; --", "\"; DROP TABLE resource; --",
    "1) UNION SELECT body FROM resource --", "x' UNION SELECT id, body FROM resource_version --",
    "'||(SELECT body FROM resource LIMIT 1)||'", "ge2020' OR '1'='1", "eq1' OR 1=1 --", "%27", "%' OR '%'='",
    "x" * 4000, "王'; DELETE FROM resource; --", "\\' OR 1=1 #", "*/ OR /* 1=1",
    "1; SELECT pg_sleep(5) --", "' AND 1=(SELECT COUNT(*) FROM sqlite_master) --", "http://loinc.org|' OR ''='",
    "Patient/' OR 1=1 --", "le1e999999", "${jndi:ldap://x}", "🙂\u202e\ufeff", "NaN", "-0", "[]", "{}",
)
MODIFIERS = (":exact", ":contains", ":missing", ":not", ":text", ":above", ":below", ":identifier", ":Patient")
SPECIAL = ("_id", "_lastUpdated", "_sort", "_count", "_include", "_revinclude", "_elements", "_summary", "_tag",
           "_security", "_total", "_has:Observation:patient:_id", "subject:Patient.name")
FUZZ_TYPES = ("Patient", "Observation", "Encounter", "Condition")


def fuzz_cases(seed: int = 6, per_param: int = 8) -> list[tuple[str, str, str]]:
    """(type, parameter with modifier, value): every parameter of each type
    with a deterministic sample of the payloads (each payload lands on some
    40 parameters of every kind), and every modifier on every parameter with
    one more.  The whole product is ~8,000 cases, over a minute per backend."""
    rng = random.Random(seed)
    out: list[tuple[str, str, str]] = []
    for t in FUZZ_TYPES:
        names = sorted(params_for(t)) + list(SPECIAL)
        for name in names:
            out.extend((t, name, p) for p in rng.sample(PAYLOADS, per_param))
            out.extend((t, name + mod, rng.choice(PAYLOADS)) for mod in MODIFIERS)
        # payloads as parameter names too
        out.extend((t, p[:100], "1") for p in PAYLOADS if p.strip())
    return out


def table_counts(server: Server) -> tuple[set[str], dict[str, int]]:
    engine = server.repo.db.engine
    names = set(sqlalchemy.inspect(engine).get_table_names())
    with engine.connect() as conn:
        counts = {t: conn.execute(sqlalchemy.text(f'SELECT COUNT(*) FROM "{t}"')).scalar_one()  # noqa: S608
                  for t in sorted(schema.metadata.tables)}
    return names, counts


def test_sql_injection_in_every_search_parameter(region: Region) -> None:
    server = region.server
    ids = region.ids
    cases = fuzz_cases()
    r_allowed = idset(region, R_RECORDS + DIRECTORY)
    a_records = idset(region, A_RECORDS)
    tokens = {who: region.server.token(region.accounts[who]) for who in ("R", "docB")}
    before = table_counts(server)  # after the sign-ins (their refresh tokens are rows too)
    statuses: dict[int, int] = {}
    problems: list[str] = []

    def one(who: str, case: tuple[str, str, str], http: httpx.Client) -> None:
        t, name, value = case
        try:
            r = http.get(f"/{t}", params={name: value},
                         headers={"authorization": f"Bearer {tokens[who]}"})
        except httpx.HTTPError as e:  # the server closed the connection: as bad as a 500
            problems.append(f"{who} {t}?{name}={value[:40]!r}: {type(e).__name__}")
            return
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        if r.status_code not in (200, 400, 403):
            problems.append(f"{who} {t}?{name}={value[:40]!r}: {r.status_code} {r.text[:200]}")
            return
        if r.status_code != 200:
            if r.json().get("resourceType") != "OperationOutcome":
                problems.append(f"{who} {t}?{name}={value[:40]!r}: error without OperationOutcome")
            return
        got = resource_ids(r.json())
        if who == "R" and not got <= r_allowed:
            problems.append(f"R {t}?{name}={value[:40]!r}: foreign records {got - r_allowed}")
        if who == "docB" and got & a_records:
            problems.append(f"docB {t}?{name}={value[:40]!r}: hospital A's records {got & a_records}")

    started = time.monotonic()
    with httpx.Client(base_url=server.url, timeout=60) as http, ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda job: one(job[0], job[1], http), itertools.product(("R", "docB"), cases)))
    elapsed = time.monotonic() - started
    assert not problems, f"{len(problems)} bad answers, e.g.\n" + "\n".join(problems[:30])
    assert statuses.get(200, 0) > 100 and statuses.get(400, 0) > 100, statuses  # the fuzz reached the engine
    after = table_counts(server)
    # Every table and row is still there.  The audit trail (on the one MetaData since
    # the schema migrations) grows by one row per request; it must only have grown.
    assert after[0] == before[0]
    grew = {t for t in before[1] if t.startswith("audit")}
    assert {t: n for t, n in after[1].items() if t not in grew} == \
        {t: n for t, n in before[1].items() if t not in grew}
    assert all(after[1][t] >= before[1][t] for t in grew) and after[1]["audit_event"] > before[1]["audit_event"]
    # And the data is still there and still answers.
    with region.client("R") as r:
        assert r.get(f"/Observation/{ids['obsA']}").status_code == 200
    assert elapsed < 60, f"fuzz took {elapsed:.0f} s"


# ------------------------------------------------------------------ (c) tokens at the FHIR edge
def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()


def assert_refused(server: Server, authorization: str | bytes | None, code: str | tuple[str, ...]) -> None:
    codes = (code,) if isinstance(code, str) else code
    headers = {} if authorization is None else {"authorization": authorization}
    before = server.app.platform.audit.search(limit=1)
    r = httpx.get(server.url + "/Observation", headers=headers, timeout=30)
    what = repr(authorization)[:60]
    assert r.status_code == 401, (what, r.status_code, r.text[:300])
    assert issue_code(r) in codes, (what, r.text[:300])
    assert r.headers["www-authenticate"].startswith('Bearer realm="hutong"'), what
    token = authorization.partition(" ")[2].strip() if isinstance(authorization, str) else ""
    assert len(token) < 20 or token[-20:] not in r.text, what  # the token is never echoed
    rows = [e for e in server.app.platform.audit.search(limit=5) if not before or e.seq > before[0].seq]
    assert len(rows) == 1 and rows[0].outcome == REFUSED and rows[0].code in codes, (what, rows)
    assert rows[0].account_id is None and rows[0].interaction == "GET /fhir/Observation", what


def test_forged_expired_revoked_and_malformed_tokens_at_fhir(region: Region) -> None:
    server = region.server
    tokens = server.app.platform.authenticator.tokens
    resident = region.accounts["R"]
    good = server.token(resident)
    claims = tokens.verify(good)
    other_key = ECKey.generate_key("P-256", private=True)
    # Forged: another EC key under our kid; alg none; HS256 keyed with our public key.
    assert_refused(server, "Bearer " + jwt.encode({"alg": "ES256", "kid": tokens.kid}, claims, other_key),
                   "HT-0122")
    assert_refused(server, f"Bearer {b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}.", ("HT-0121", "HT-0122"))
    signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT', 'kid': tokens.kid})}.{b64(claims)}"
    mac = hmac.new(tokens.key.as_pem(private=False), signing_input.encode(), hashlib.sha256).digest()
    assert_refused(server, f"Bearer {signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}",
                   "HT-0122")
    # Escalated scope in a re-signed-looking token (payload swapped, signature kept).
    h, _p, s = good.split(".")
    assert_refused(server, f"Bearer {h}.{b64(dict(claims, scope='system/*.cruds', role='platform'))}.{s}",
                   "HT-0122")
    # Expired: issued by the same key with the clock 20 minutes back (15-minute tokens, 30 s skew).
    past = TokenService(server.repo, tokens.settings, tokens.key_dir,
                        clock=lambda: time.time_ns() // 1_000_000 - 20 * 60_000)
    assert_refused(server, "Bearer " + str(past.issue(resident, "patient/*.rs")["access_token"]), "HT-0123")
    # Oversized and malformed headers.
    assert_refused(server, "Bearer " + "A" * 16 * 1024, "HT-0121")
    assert_refused(server, "Bearer " + b64({"alg": "ES256"}) + "." + "B" * 9000 + ".sig", "HT-0121")
    for header in ("Bearer", "Basic dXNlcjpwYXNz", "Token abc", "bearer", "Bearer a b c"):
        assert_refused(server, header, ("HT-0100", "HT-0121"))
    assert_refused(server, None, "HT-0100")
    assert_refused(server, "Bearer 不是令牌".encode(), ("HT-0100", "HT-0121"))
    assert_refused(server, b"Bearer \xff\xfe.\x80.\x81", ("HT-0100", "HT-0121"))
    assert_refused(server, "Bearer " + good + "x", "HT-0122")
    # The genuine token still works ...
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {good}"}) as r:
        assert r.get("/Observation").status_code == 200
        # ... until revoked at /auth/revoke (RFC 7009).
        rv = httpx.post(server.root + "/auth/revoke", data={"token": good})
        assert rv.status_code == 200
        assert_refused(server, f"Bearer {good}", "HT-0124")
    # A disabled account's token stops working at once (in every process:
    # nothing is cached but signatures), and stays dead once it is enabled again.
    fresh = server.token(resident)
    server.accounts.set_status(resident.id, False)
    try:
        assert_refused(server, f"Bearer {fresh}", "HT-0126")
    finally:
        server.accounts.set_status(resident.id, True)
    assert_refused(server, f"Bearer {fresh}", "HT-0124")
    assert server.app.platform.audit.verify().ok


def test_scope_escalation_at_the_fhir_edge(region: Region) -> None:
    """A token narrowed to Observation reads cannot reach anything else, and a
    resident's token never acts beyond the resident's own record."""
    ids = region.ids
    with region.client("R", "patient/Observation.rs") as r:
        assert r.get(f"/Observation/{ids['obsA']}").status_code == 200
        for resp in (r.get(f"/Condition/{ids['psyA']}"), r.get(f"/Patient/{ids['pA']}"),
                     r.get(f"/Patient/{ids['R']}/$everything"), r.get("/Encounter")):
            assert resp.status_code == 403 and issue_code(resp) == "HT-0101", resp.text[:300]
    with region.client("R") as r:
        for resp in (r.delete(f"/Observation/{ids['obsA']}"),
                     r.put(f"/Observation/{ids['obsA']}", json={
                         "resourceType": "Observation", "id": ids["obsA"], "status": "final",
                         "code": {"text": "x"}, "subject": {"reference": f"Patient/{ids['pA']}"}}),
                     r.post("/Patient/$mpi-link", json={"resourceType": "Parameters"}),
                     r.get("/_history")):
            assert resp.status_code == 403, resp.text[:300]
    # Even a resident's token carrying system scopes (the token endpoint never
    # issues one: test_oauth.py test_scope_escalation_is_refused) reaches nothing
    # but R's own record: the policy goes by role, not by scope alone.
    with region.client("R", "system/*.cruds") as wide:
        for resp in (wide.get(f"/Observation/{ids['obsS']}"), wide.get(f"/Patient/{ids['S']}/$everything"),
                     wide.get("/Observation", params={"patient": ids["pS"]}), wide.get("/_history"),
                     wide.delete(f"/Observation/{ids['obsA']}")):
            assert resp.status_code == 403, resp.text[:300]
        mine = wide.get("/Observation", params={"_count": "100"})
        nothing_of_s(region, mine, "system scopes")
        assert match_ids(mine.json()) == idset(region, ("obsA", "obsB", "hivB", "trap"))
    assert region.server.client.get(f"/Observation/{ids['obsA']}").json()["status"] == "final"


# ------------------------------------------------------------------ (d) password guessing
def test_password_guessing_is_held_back_and_audited(server: Server) -> None:
    """Guessing holds the guessing address back (issue 12, finding 13: never
    the account), every failure is audited, and the answers are one."""
    password = "Zhongshan-Rd-88"
    account, _, uri = server.accounts.add_user("dr.guess", role=Role.CLINICIAN, name="试医生", password=password,
                                               organization="400000001", organization_id="org-1",
                                               practitioner_id="pr-guess")
    secret = pyotp.parse_uri(uri).secret
    audit = server.app.platform.audit
    with httpx.Client(base_url=server.root, timeout=30) as http:
        def login(pw: str) -> httpx.Response:
            return http.post("/auth/login", json={"username": "dr.guess", "password": pw,
                                                  "totp": totp.code_at(secret, time.time_ns() // 1_000_000)})

        answers = [login(f"Guess-{i}-pass") for i in range(5)]
        assert all(a.status_code == 401 and a.json()["resourceType"] == "OperationOutcome" for a in answers)
        right = login(password)                                      # held back after the 5th failure
        assert right.status_code == 401 and right.json() == answers[0].json(), right.text
        assert "access_token" not in right.text
    rows = [e for e in audit.search(outcome=REFUSED, limit=20) if e.claimed == "dr.guess"]
    assert len(rows) == 6 and [e.code for e in rows] == ["HT-0140"] + ["HT-0127"] * 5   # newest first
    assert all(password not in repr(e) and "Guess-" not in repr(e) for e in rows)
    assert audit.verify().ok
    assert account.id


def test_nul_bytes_in_search_values(region: Region) -> None:
    """A NUL byte is no FHIR string (datatypes.html#string): 400 on both
    backends (it was a 500 on PostgreSQL: text cannot hold NUL)."""
    bad: list[str] = []
    with region.client("R") as r:
        for t in FUZZ_TYPES:
            for name in sorted(params_for(t)) + ["_id", "_tag", "_security", "_sort", "_include", "_elements"]:
                for value in NUL_PAYLOADS:
                    resp = r.get(f"/{t}", params={name: value})
                    if resp.status_code != 400 or issue_code(resp) != "HT-0021":
                        bad.append(f"{t}?{name}={value!r}: {resp.status_code} {resp.text[:100]}")
    assert not bad, f"{len(bad)} answers not 400 HT-0021, e.g. {bad[:10]}"


def test_an_internal_error_is_answered_audited_and_keeps_the_connection(
        region: Region, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gate's safety net: an unexpected exception (injected here: no
    seam produces one on purpose) is a 500 OperationOutcome that names no
    data, leaves an ERROR audit row under the caller, and does not drop the
    keep-alive connection."""
    from hutong.fhir.service import FhirService

    def boom(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError(f"query failed for {S_ID}")

    monkeypatch.setattr(FhirService, "search", boom)
    audit = region.server.app.platform.audit
    with region.client("R") as r:
        resp = r.get("/Observation", params={"code": "x"})
        assert resp.status_code == 500 and issue_code(resp) == "HT-0099"
        assert S_ID not in resp.text and "RuntimeError" not in resp.text
        row = audit.search(limit=1)[0]
        assert (row.outcome, row.code, row.account_id) == ("12", "HT-0099", region.accounts["R"].id)
        assert row.interaction == "GET /fhir/{type}"
        monkeypatch.undo()
        assert r.get(f"/Observation/{region.ids['obsA']}").status_code == 200  # same connection, still served
    assert audit.verify().ok


def test_chained_id_is_not_silently_dropped(region: Region) -> None:
    """_id at the end of a chain or _has either works or is refused; dropping
    it (lenient handling of an "unknown" parameter) would widen the search to
    every record the caller may see."""
    ids = region.ids
    c = region.server.client
    chained = c.get("/Observation", params={"subject:Patient._id": ids["pS"]})
    assert chained.status_code == 200 and match_ids(chained.json()) == {ids["obsS"]}, chained.text[:300]
    has = c.get("/Patient", params={"_has:Observation:patient:_id": ids["obsS"]})
    if has.status_code == 200:
        assert match_ids(has.json()) == {ids["pS"]}
    else:
        assert has.status_code == 400 and issue_code(has).startswith("HT-00"), has.text[:300]
