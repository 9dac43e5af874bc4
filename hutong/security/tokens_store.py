"""Data access for tokens: refresh tokens, revoked access-token ids and used
client assertions (tables ``refresh_token``, ``revoked_token``,
``used_assertion``, declared with the account tables in hutong.security.accounts).

The only module that writes SQL for hutong.security.tokens (issue 13, item 1:
one storage seam); the rules (rotation, reuse detection, idle timeout) stay in
:class:`hutong.security.tokens.TokenService`.
"""

from __future__ import annotations

from dataclasses import dataclass

from hutong.store.repository import Repository, Writer
from hutong.store.sql import sql_repository, sql_writer


@dataclass(frozen=True, slots=True)
class RefreshRow:
    """One stored refresh token (only its SHA-256 is kept)."""

    family: str
    account_id: str
    client_id: str | None
    scopes: str
    expires: int
    revoked: bool
    last_used: int


class TokenStore:
    def __init__(self, repo: Repository) -> None:
        self.repo = sql_repository(repo)

    # ------------------------------------------------------------ refresh tokens
    def add_refresh(self, token_hash: str, family: str, account_id: str, client_id: str | None, scopes: str,
                    expires: int, now: int) -> None:
        self.repo.transact(lambda w: sql_writer(w).execute(
            "INSERT INTO refresh_token (token_hash, family, account_id, client_id, scopes, expires, revoked, "
            "last_used, created) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?)",
            (token_hash, family, account_id, client_id, scopes, expires, now, now)))

    def refresh_row(self, token_hash: str) -> RefreshRow | None:
        rows = self.repo.query("SELECT family, account_id, client_id, scopes, expires, revoked, last_used "
                               "FROM refresh_token WHERE token_hash = ?", (token_hash,))
        if not rows:
            return None
        family, account_id, client_id, scopes, expires, revoked, last_used = rows[0]
        return RefreshRow(str(family), str(account_id), None if client_id is None else str(client_id), str(scopes),
                          int(expires), bool(revoked), int(last_used))

    def rotate(self, token_hash: str, now: int) -> bool:
        """Revoke a live refresh token as it is used; False when a concurrent use
        rotated it first (the conditional UPDATE lets only one win)."""

        def tx(w: Writer) -> int:
            return int(sql_writer(w).execute("UPDATE refresh_token SET revoked = 1, last_used = ? "
                                 "WHERE token_hash = ? AND revoked = 0", (now, token_hash)).rowcount)

        return self.repo.transact(tx) == 1

    def revoke_family(self, family: str) -> None:
        self.repo.transact(lambda w: sql_writer(w).execute("UPDATE refresh_token SET revoked = 1 WHERE family = ?", (family,)))

    # ------------------------------------------------------------ access tokens
    def revoke_jti(self, jti: str, exp_ms: int, forget_before: int) -> None:
        """Record a revoked access token id; rows of tokens expired before
        ``forget_before`` are kept no longer than needed."""

        def tx(w: Writer) -> None:
            w.lock_key("revoke:" + jti)
            if sql_writer(w).execute("SELECT 1 FROM revoked_token WHERE jti = ?", (jti,)).fetchone() is None:
                sql_writer(w).execute("INSERT INTO revoked_token (jti, expires) VALUES (?, ?)", (jti, exp_ms))
            sql_writer(w).execute("DELETE FROM revoked_token WHERE expires < ?", (forget_before,))

        self.repo.transact(tx)

    # ------------------------------------------------------------ client assertions
    def remember_assertion(self, key: str, exp_ms: int, forget_before: int) -> bool:
        """Record an assertion key; False when it was recorded before (RFC 7523
        section 3, item 7)."""

        def tx(w: Writer) -> bool:
            w.lock_key("assertion:" + key)
            sql_writer(w).execute("DELETE FROM used_assertion WHERE expires < ?", (forget_before,))
            if sql_writer(w).execute("SELECT 1 FROM used_assertion WHERE assertion_key = ?", (key,)).fetchone() is not None:
                return False
            sql_writer(w).execute("INSERT INTO used_assertion (assertion_key, expires) VALUES (?, ?)", (key, exp_ms))
            return True

        return self.repo.transact(tx)
