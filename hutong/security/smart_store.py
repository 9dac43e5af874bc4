"""Data access for SMART App Launch (hutong.security.smart): registered apps,
authorization requests and their codes, EHR launch contexts, grants and the
access tokens issued under each grant.

Tables (created by migration 0004):

- ``smart_client``: apps an operator registered (public or confidential; only
  a confidential client's secret hash is kept; redirect URIs as a JSON list);
- ``smart_authorization``: one row per authorization request (RFC 6749
  section 4.1.1), from ``pending`` through ``approved`` (a code was issued:
  only its SHA-256 is kept) to ``used`` or ``denied``;
- ``smart_launch``: EHR launch contexts (SMART App Launch "EHR launch": the
  opaque ``launch`` value, kept as its SHA-256);
- ``smart_grant``: what a person approved for an app (the refresh-token
  family of its tokens has the grant's id), revoked by the person or the app;
- ``smart_grant_token``: the access tokens issued under each grant, so a
  revocation ends the live ones too, not only the refresh token.

The only module with SQL for SMART App Launch (tests/test_layering.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Column, Index, String, Table

from hutong.store.schema import metadata
from hutong.store.sql import SqlRepository, SqlWriter

smart_client = Table(
    "smart_client",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("kind", String(16), nullable=False),             # public | confidential
    Column("secret_hash", String(200), nullable=True),      # confidential clients only (hutong.security.passwords)
    Column("redirect_uris", String(4000), nullable=False),  # JSON list, compared exactly
    Column("launch_url", String(500), nullable=True),       # EHR launch: where the workspace opens the app
    Column("scopes", String(2000), nullable=False),         # the most the app may ever ask for
    Column("status", String(16), nullable=False),           # active | disabled
    Column("created", BigInteger, nullable=False),
    Column("updated", BigInteger, nullable=False),
)

smart_authorization = Table(
    "smart_authorization",
    metadata,
    Column("request_id", String(40), primary_key=True),
    Column("client_id", String(64), nullable=False),
    Column("redirect_uri", String(500), nullable=False),
    Column("scope", String(2000), nullable=False),
    Column("state", String(500), nullable=True),
    Column("code_challenge", String(128), nullable=False),
    Column("launch_hash", String(64), nullable=True),
    Column("status", String(16), nullable=False),           # pending | approved | used | denied
    Column("account_id", String(40), nullable=True),
    Column("patient", String(64), nullable=True),
    Column("granted", String(2000), nullable=True),
    Column("code_hash", String(64), nullable=True),
    Column("grant_id", String(40), nullable=True),
    Column("created", BigInteger, nullable=False),
    Column("expires", BigInteger, nullable=False),
    Index("ix_smart_authorization_code", "code_hash"),
    Index("ix_smart_authorization_expires", "expires"),
)

smart_launch = Table(
    "smart_launch",
    metadata,
    Column("launch_hash", String(64), primary_key=True),
    Column("account_id", String(40), nullable=False),
    Column("client_id", String(64), nullable=False),
    Column("patient", String(64), nullable=False),
    Column("created", BigInteger, nullable=False),
    Column("expires", BigInteger, nullable=False),
)

smart_grant = Table(
    "smart_grant",
    metadata,
    Column("grant_id", String(40), primary_key=True),
    Column("client_id", String(64), nullable=False),
    Column("account_id", String(40), nullable=False),
    Column("patient", String(64), nullable=True),
    Column("scope", String(2000), nullable=False),
    Column("created", BigInteger, nullable=False),
    Column("expires", BigInteger, nullable=False),
    Column("revoked", BigInteger, nullable=True),           # when (ms); NULL while live
    Index("ix_smart_grant_account", "account_id"),
    Index("ix_smart_grant_patient", "patient"),
)

smart_grant_token = Table(
    "smart_grant_token",
    metadata,
    Column("jti", String(64), primary_key=True),
    Column("grant_id", String(40), nullable=False),
    Column("expires", BigInteger, nullable=False),          # the access token's exp (ms)
    Index("ix_smart_grant_token_grant", "grant_id"),
)


@dataclass(frozen=True, slots=True)
class ClientRow:
    client_id: str
    name: str
    kind: str
    secret_hash: str | None
    redirect_uris: str
    launch_url: str | None
    scopes: str
    status: str
    created: int


@dataclass(frozen=True, slots=True)
class AuthorizationRow:
    request_id: str
    client_id: str
    redirect_uri: str
    scope: str
    state: str | None
    code_challenge: str
    launch_hash: str | None
    status: str
    account_id: str | None
    patient: str | None
    granted: str | None
    grant_id: str | None
    expires: int


@dataclass(frozen=True, slots=True)
class LaunchRow:
    account_id: str
    client_id: str
    patient: str
    expires: int


@dataclass(frozen=True, slots=True)
class GrantRow:
    grant_id: str
    client_id: str
    account_id: str
    patient: str | None
    scope: str
    created: int
    expires: int
    revoked: int | None




def _opt(v: Any) -> str | None:
    return None if v is None else str(v)


def _client(r: Any) -> ClientRow:
    return ClientRow(str(r[0]), str(r[1]), str(r[2]), _opt(r[3]), str(r[4]), _opt(r[5]), str(r[6]), str(r[7]),
                     int(r[8]))


def _auth(r: Any) -> AuthorizationRow:
    return AuthorizationRow(str(r[0]), str(r[1]), str(r[2]), str(r[3]), _opt(r[4]), str(r[5]), _opt(r[6]),
                            str(r[7]), _opt(r[8]), _opt(r[9]), _opt(r[10]), _opt(r[11]), int(r[12]))


def _grant(r: Any) -> GrantRow:
    return GrantRow(str(r[0]), str(r[1]), str(r[2]), _opt(r[3]), str(r[4]), int(r[5]), int(r[6]),
                    None if r[7] is None else int(r[7]))


class SmartStore:
    def __init__(self, repo: object) -> None:
        if not isinstance(repo, SqlRepository):  # a wiring error, not bad input
            raise TypeError(f"SmartStore needs the SQL repository, not a {type(repo).__name__}")
        self.repo = repo

    # ------------------------------------------------------------ clients
    def add_client(self, row: ClientRow) -> None:
        self.repo.transact(lambda w: w.execute(
            "INSERT INTO smart_client (client_id, name, kind, secret_hash, redirect_uris, launch_url, scopes, "
            "status, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (row.client_id, row.name, row.kind, row.secret_hash, row.redirect_uris, row.launch_url, row.scopes,
             row.status, row.created, row.created)))

    def client(self, client_id: str) -> ClientRow | None:
        rows = self.repo.query("SELECT client_id, name, kind, secret_hash, redirect_uris, launch_url, scopes, "
                               "status, created FROM smart_client WHERE client_id = ?", (client_id,))
        return _client(rows[0]) if rows else None

    def clients(self) -> list[ClientRow]:
        return [_client(r) for r in self.repo.query("SELECT client_id, name, kind, secret_hash, "
                                                    "redirect_uris, launch_url, scopes, status, created FROM "
                                                    "smart_client ORDER BY created")]

    def set_client_status(self, client_id: str, status: str, now: int) -> bool:
        return self.repo.transact(lambda w: int(w.execute(
            "UPDATE smart_client SET status = ?, updated = ? WHERE client_id = ?",
            (status, now, client_id)).rowcount)) == 1

    # ------------------------------------------------------------ authorization requests
    def add_request(self, row: AuthorizationRow, now: int) -> None:
        def tx(w: SqlWriter) -> None:
            w.execute("DELETE FROM smart_authorization WHERE expires < ?", (now - 86_400_000,))
            w.execute("INSERT INTO smart_authorization (request_id, client_id, redirect_uri, scope, state, "
                      "code_challenge, launch_hash, status, account_id, patient, granted, grant_id, expires, "
                      "created) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (row.request_id, row.client_id, row.redirect_uri, row.scope, row.state, row.code_challenge,
                       row.launch_hash, row.status, row.account_id, row.patient, row.granted, row.grant_id,
                       row.expires, now))

        self.repo.transact(tx)

    def request(self, request_id: str) -> AuthorizationRow | None:
        rows = self.repo.query("SELECT request_id, client_id, redirect_uri, scope, state, code_challenge, "
                               "launch_hash, status, account_id, patient, granted, grant_id, expires FROM "
                               "smart_authorization WHERE request_id = ?", (request_id,))
        return _auth(rows[0]) if rows else None

    def by_code(self, code_hash: str) -> AuthorizationRow | None:
        rows = self.repo.query("SELECT request_id, client_id, redirect_uri, scope, state, code_challenge, "
                               "launch_hash, status, account_id, patient, granted, grant_id, expires FROM "
                               "smart_authorization WHERE code_hash = ?", (code_hash,))
        return _auth(rows[0]) if rows else None

    def decide(self, request_id: str, *, status: str, account_id: str, patient: str | None, granted: str | None,
               code_hash: str | None, expires: int) -> bool:
        """Approve (a code) or deny a pending request; False when it was decided already."""
        return self.repo.transact(lambda w: int(w.execute(
            "UPDATE smart_authorization SET status = ?, account_id = ?, patient = ?, granted = ?, code_hash = ?, "
            "expires = ? WHERE request_id = ? AND status = 'pending'",
            (status, account_id, patient, granted, code_hash, expires, request_id)).rowcount)) == 1

    def use_code(self, request_id: str, grant: GrantRow) -> bool:
        """Mark an approved code used and record its grant, in one transaction;
        False when another exchange used it first (only one UPDATE can win)."""

        def tx(w: SqlWriter) -> bool:
            n = int(w.execute("UPDATE smart_authorization SET status = 'used', grant_id = ? "
                              "WHERE request_id = ? AND status = 'approved'", (grant.grant_id, request_id)).rowcount)
            if n != 1:
                return False
            w.execute("INSERT INTO smart_grant (grant_id, client_id, account_id, patient, scope, created, "
                      "expires, revoked) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                      (grant.grant_id, grant.client_id, grant.account_id, grant.patient, grant.scope, grant.created,
                       grant.expires, None))
            return True

        return self.repo.transact(tx)

    # ------------------------------------------------------------ launch contexts
    def add_launch(self, launch_hash: str, row: LaunchRow, now: int) -> None:
        def tx(w: SqlWriter) -> None:
            w.execute("DELETE FROM smart_launch WHERE expires < ?", (now,))
            w.execute("INSERT INTO smart_launch (launch_hash, account_id, client_id, patient, created, expires) "
                      "VALUES (?, ?, ?, ?, ?, ?)", (launch_hash, row.account_id, row.client_id, row.patient, now,
                                                    row.expires))

        self.repo.transact(tx)

    def launch(self, launch_hash: str) -> LaunchRow | None:
        rows = self.repo.query("SELECT account_id, client_id, patient, expires FROM smart_launch "
                               "WHERE launch_hash = ?", (launch_hash,))
        if not rows:
            return None
        r = rows[0]
        return LaunchRow(str(r[0]), str(r[1]), str(r[2]), int(r[3]))

    # ------------------------------------------------------------ grants
    def grant(self, grant_id: str) -> GrantRow | None:
        rows = self.repo.query("SELECT grant_id, client_id, account_id, patient, scope, created, expires, "
                               "revoked FROM smart_grant WHERE grant_id = ?", (grant_id,))
        return _grant(rows[0]) if rows else None

    def grants_for(self, *, patients: tuple[str, ...], account_id: str, now: int) -> list[GrantRow]:
        """Live grants about these persons' records or made by this account, newest first."""
        cols = ("SELECT grant_id, client_id, account_id, patient, scope, created, expires, revoked FROM smart_grant "
                "WHERE revoked IS NULL AND expires > ? AND ")
        found = {g.grant_id: g for g in map(_grant, self.repo.query(cols + "account_id = ?", (now, account_id)))}
        for p in patients:  # a resident has one, a delegate a few
            found.update((g.grant_id, g) for g in map(_grant, self.repo.query(cols + "patient = ?", (now, p))))
        return sorted(found.values(), key=lambda g: -g.created)

    def add_grant_token(self, grant_id: str, jti: str, expires: int, now: int) -> bool:
        """Record an access token issued under a grant; False (nothing recorded)
        when the grant was revoked meanwhile.  The grant's lock orders this with
        :meth:`revoke_grant`, so a token is either recorded before a revocation
        (which then ends it) or refused after it."""

        def tx(w: SqlWriter) -> bool:
            w.lock_key("smart-grant:" + grant_id)
            row = w.execute("SELECT revoked FROM smart_grant WHERE grant_id = ?", (grant_id,)).fetchone()
            if row is None or row[0] is not None:
                return False
            w.execute("DELETE FROM smart_grant_token WHERE expires < ?", (now - 86_400_000,))
            w.execute("INSERT INTO smart_grant_token (jti, grant_id, expires) VALUES (?, ?, ?)",
                      (jti, grant_id, expires))
            return True

        return self.repo.transact(tx)

    def revoke_grant(self, grant_id: str, now: int) -> list[tuple[str, int]]:
        """Mark a grant revoked; the (jti, exp ms) of its access tokens still live.
        Empty and no change when it was revoked already."""

        def tx(w: SqlWriter) -> list[tuple[str, int]]:
            w.lock_key("smart-grant:" + grant_id)
            n = int(w.execute("UPDATE smart_grant SET revoked = ? WHERE grant_id = ? AND revoked IS NULL",
                              (now, grant_id)).rowcount)
            if n != 1:
                return []
            rows = w.execute("SELECT jti, expires FROM smart_grant_token WHERE grant_id = ? AND expires > ?",
                             (grant_id, now)).fetchall()
            return [(str(r[0]), int(r[1])) for r in rows]

        return self.repo.transact(tx)
