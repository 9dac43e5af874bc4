"""Data access for accounts (tables ``account``, ``account_person``,
``token_cutoff``, ``signin_throttle``, ``otp_challenge``, ``otp_sent`` and the
account side of ``refresh_token``/``revoked_token``; declared in
hutong.security.accounts).

The only module that writes SQL for accounts (issue 13, item 1: one storage
seam).  Rows come back as the database holds them; the rules (sign-in back-off,
TOTP replay, one-time code limits, guardianship) stay in
:class:`hutong.security.accounts.Accounts` and reach the transactions here as
plain values or small callbacks, so each check and its write stay in one
transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hutong.store.repository import Repository, Writer
from hutong.store.sql import sql_repository, sql_writer

Row = Sequence[Any]

COLS = ("id, role, display, username, client_id, organization, organization_id, practitioner_id, "
        "practitioner_role_id, person_id, scopes, status, failed_count, locked_until, password_changed_at, "
        "created, updated, secret_hash IS NOT NULL, totp_secret IS NOT NULL, phone IS NOT NULL, "
        "jwks IS NOT NULL")
# One constant statement per lookup key (no SQL is assembled from values).
_SELECT_BY = {
    "id": "SELECT " + COLS + " FROM account WHERE id = ?",  # noqa: S608  (constant column list)
    "username": "SELECT " + COLS + " FROM account WHERE username = ?",  # noqa: S608
    "client_id": "SELECT " + COLS + " FROM account WHERE client_id = ?",  # noqa: S608
    "person_id": "SELECT " + COLS + " FROM account WHERE person_id = ?",  # noqa: S608
}
_SELECT_ALL = "SELECT " + COLS + " FROM account ORDER BY created, id"  # noqa: S608
_SELECT_ROLE = "SELECT " + COLS + " FROM account WHERE role = ? ORDER BY created, id"  # noqa: S608

# The columns an update may set (names are this module's, every value is bound).
ACCOUNT_COLUMNS = frozenset({
    "id", "role", "display", "username", "client_id", "secret_hash", "jwks", "totp_secret", "totp_last_step",
    "phone", "organization", "organization_id", "practitioner_id", "practitioner_role_id", "person_id",
    "scopes", "status", "failed_count", "locked_until", "password_changed_at", "created", "updated",
})


class AccountStore:
    def __init__(self, repo: Repository) -> None:
        self.repo = sql_repository(repo)

    # ------------------------------------------------------------ reading
    def account_row(self, key: str, value: str) -> Row | None:
        """The account whose ``key`` (id, username, client_id or person_id) is ``value``."""
        rows = self.repo.query(_SELECT_BY[key], (value,))
        return rows[0] if rows else None

    def account_rows(self, role: str | None = None) -> list[Row]:
        if role is None:
            return list(self.repo.query(_SELECT_ALL))
        return list(self.repo.query(_SELECT_ROLE, (role,)))

    def delegation_rows(self, account_id: str) -> list[Row]:
        """(person_id, relationship, expires) of a delegate, by person."""
        return list(self.repo.query("SELECT person_id, relationship, expires FROM account_person "
                                    "WHERE account_id = ? ORDER BY person_id", (account_id,)))

    def jwks(self, account_id: str) -> str | None:
        rows = self.repo.query("SELECT jwks FROM account WHERE id = ?", (account_id,))
        return str(rows[0][0]) if rows and rows[0][0] is not None else None

    def phone(self, account_id: str) -> bytes | None:
        """The codec-encoded phone number."""
        rows = self.repo.query("SELECT phone FROM account WHERE id = ?", (account_id,))
        return bytes(rows[0][0]) if rows and rows[0][0] is not None else None

    def token_state_row(self, account_id: str, jti: str) -> Row | None:
        """(status, role, revoked: 1 | None, not_before | None) in one primary-key query."""
        rows = self.repo.query(
            "SELECT a.status, a.role, (SELECT 1 FROM revoked_token r WHERE r.jti = ?), "
            "(SELECT c.not_before FROM token_cutoff c WHERE c.account_id = a.id) FROM account a WHERE a.id = ?",
            (jti, account_id))
        return rows[0] if rows else None

    def live_delegations(self, account_id: str, now: int) -> tuple[str, ...]:
        rows = self.repo.query("SELECT person_id FROM account_person WHERE account_id = ? "
                               "AND (expires IS NULL OR expires > ?) ORDER BY person_id", (account_id, now))
        return tuple(str(r[0]) for r in rows)

    def tokens_not_before(self, account_id: str) -> int:
        rows = self.repo.query("SELECT not_before FROM token_cutoff WHERE account_id = ?", (account_id,))
        return int(rows[0][0]) if rows else 0

    def blocked_ids(self, now: int) -> set[str]:
        rows = self.repo.query("SELECT id FROM account WHERE status <> 'active' OR locked_until > ?", (now,))
        return {str(r[0]) for r in rows}

    def secrets_of(self, account_id: str) -> tuple[str | None, bytes | None, int | None]:
        """(secret hash, codec-encoded TOTP secret, last TOTP step used)."""
        rows = self.repo.query("SELECT secret_hash, totp_secret, totp_last_step FROM account WHERE id = ?",
                               (account_id,))
        if not rows:
            return None, None, None
        r = rows[0]
        return r[0], bytes(r[1]) if r[1] is not None else None, int(r[2]) if r[2] is not None else None

    # ------------------------------------------------------------ writing
    def insert(self, w: Writer, row: Mapping[str, Any]) -> None:
        """One account row; the caller maps a unique violation to its answer."""
        cols = list(row)
        unknown = set(cols) - ACCOUNT_COLUMNS
        if unknown:
            raise ValueError(f"not account columns: {sorted(unknown)}")
        # Column names checked against ACCOUNT_COLUMNS above; every value is bound.
        sql = "INSERT INTO account (" + ", ".join(cols) + ") VALUES (" + ", ".join("?" * len(cols)) + ")"  # noqa: S608
        sql_writer(w).execute(sql, [row[c] for c in cols])

    def add_delegation(self, w: Writer, account_id: str, person_id: str, relationship: str,
                       expires: int | None) -> None:
        sql_writer(w).execute("INSERT INTO account_person (account_id, person_id, relationship, expires) "
                  "VALUES (?, ?, ?, ?)", (account_id, person_id, relationship, expires))

    def update(self, account_id: str, values: Mapping[str, Any], now: int) -> bool:
        """Set ``values`` (column -> value) and ``updated``; False when no such account."""
        unknown = set(values) - ACCOUNT_COLUMNS
        if unknown or not values:
            raise ValueError(f"not account columns: {sorted(unknown)}")
        sets = ", ".join(f"{c} = ?" for c in values)

        def tx(w: Writer) -> int:
            cur = sql_writer(w).execute("UPDATE account SET " + sets + ", updated = ? WHERE id = ?",  # noqa: S608
                            (*values.values(), now, account_id))
            return int(cur.rowcount)

        return self.repo.transact(tx) == 1

    def void_tokens(self, account_id: str, cutoff_s: int) -> None:
        """Raise the account's token cutoff to ``cutoff_s`` (never lower it)."""

        def tx(w: Writer) -> None:
            w.lock_key("cutoff:" + account_id)
            if sql_writer(w).execute("SELECT 1 FROM token_cutoff WHERE account_id = ?", (account_id,)).fetchone():
                sql_writer(w).execute("UPDATE token_cutoff SET not_before = ? WHERE account_id = ? AND not_before < ?",
                          (cutoff_s, account_id, cutoff_s))
            else:
                sql_writer(w).execute("INSERT INTO token_cutoff (account_id, not_before) VALUES (?, ?)", (account_id, cutoff_s))

        self.repo.transact(tx)

    def end_sessions(self, account_id: str) -> None:
        self.repo.transact(lambda w: sql_writer(w).execute("UPDATE refresh_token SET revoked = 1 WHERE account_id = ?",
                                               (account_id,)))

    def end_delegation(self, account_id: str, person_id: str) -> bool:
        def tx(w: Writer) -> int:
            cur = sql_writer(w).execute("DELETE FROM account_person WHERE account_id = ? AND person_id = ?",
                            (account_id, person_id))
            return int(cur.rowcount or 0)

        return self.repo.transact(tx) > 0

    # ------------------------------------------------------------ sign-in back-off
    def held_until(self, key: str) -> int | None:
        rows = self.repo.query("SELECT blocked_until FROM signin_throttle WHERE throttle_key = ?", (key,))
        return int(rows[0][0]) if rows else None

    def record_failure(self, key: str, username: str, peer: str | None, now: int, wait_ms: Callable[[int], int],
                       forget_before: int) -> None:
        """Count one more consecutive failure of ``key``; it is held back for
        ``wait_ms(failures)`` from now.  Rows of addresses silent since
        ``forget_before`` go when a new address fails."""

        def tx(w: Writer) -> None:
            w.lock_key("signin:" + key)
            row = sql_writer(w).execute("SELECT failures FROM signin_throttle WHERE throttle_key = ?", (key,)).fetchone()
            n = (int(row[0]) if row else 0) + 1
            wait = wait_ms(n)
            if row:
                sql_writer(w).execute("UPDATE signin_throttle SET failures = ?, blocked_until = ?, last_failure = ? "
                          "WHERE throttle_key = ?", (n, now + wait, now, key))
            else:
                sql_writer(w).execute("DELETE FROM signin_throttle WHERE last_failure < ?", (forget_before,))
                sql_writer(w).execute("INSERT INTO signin_throttle (throttle_key, username, peer, failures, blocked_until, "
                          "last_failure) VALUES (?, ?, ?, ?, ?, ?)",
                          (key, username[:100], (peer or "")[:100], n, now + wait, now))

        self.repo.transact(tx)

    def clear_throttle(self, key: str) -> None:
        self.repo.transact(lambda w: sql_writer(w).execute("DELETE FROM signin_throttle WHERE throttle_key = ?", (key,)))

    def clear_throttle_of(self, username: str) -> None:
        """Every address's back-off for this username."""
        self.repo.transact(lambda w: sql_writer(w).execute("DELETE FROM signin_throttle WHERE username = ?", (username,)))

    def signed_in(self, account_id: str, totp_step: int | None, now: int) -> bool:
        """Reset the failure count; with a TOTP step, record it only when later
        than the last one (conditional update: of two concurrent sign-ins with
        one code, only one wins, RFC 6238 section 5.2)."""

        def tx(w: Writer) -> int:
            if totp_step is not None:
                cur = sql_writer(w).execute("UPDATE account SET totp_last_step = ?, failed_count = 0, updated = ? "
                                "WHERE id = ? AND (totp_last_step IS NULL OR totp_last_step < ?)",
                                (totp_step, now, account_id, totp_step))
                return int(cur.rowcount)
            sql_writer(w).execute("UPDATE account SET failed_count = 0, updated = ? WHERE id = ?", (now, account_id))
            return 1

        return self.repo.transact(tx) == 1

    # ------------------------------------------------------------ one-time codes
    def start_otp(self, account_id: str, code_hash: str, now: int, expires: int,
                  may_send: Callable[[int, int | None], bool]) -> bool:
        """Replace the account's live challenge when ``may_send(sent in the last
        hour, last sent at)`` allows; False when it does not."""

        def tx(w: Writer) -> bool:
            w.lock_key("otp:" + account_id)
            sql_writer(w).execute("DELETE FROM otp_sent WHERE account_id = ? AND sent_at <= ?", (account_id, now - 3_600_000))
            n, last = sql_writer(w).execute("SELECT COUNT(*), MAX(sent_at) FROM otp_sent WHERE account_id = ?",
                                (account_id,)).fetchone()
            if not may_send(int(n), int(last) if last is not None else None):
                return False
            sql_writer(w).execute("INSERT INTO otp_sent (account_id, sent_at) VALUES (?, ?)", (account_id, now))
            sql_writer(w).execute("DELETE FROM otp_challenge WHERE account_id = ?", (account_id,))
            sql_writer(w).execute("INSERT INTO otp_challenge (account_id, code_hash, expires, attempts) VALUES (?, ?, ?, 0)",
                      (account_id, code_hash, expires))
            return True

        return self.repo.transact(tx)

    def otp_challenge(self, account_id: str) -> tuple[str, int, int] | None:
        """(code hash, expires, attempts) of the live challenge."""
        rows = self.repo.query("SELECT code_hash, expires, attempts FROM otp_challenge WHERE account_id = ?",
                               (account_id,))
        return (str(rows[0][0]), int(rows[0][1]), int(rows[0][2])) if rows else None

    def settle_otp(self, account_id: str, code_hash: str, good: bool, max_attempts: int) -> bool:
        """A good code consumes the very row checked (True when this use got it:
        a second use of the code finds nothing); a wrong one counts an attempt,
        and the challenge goes at ``max_attempts``."""

        def tx(w: Writer) -> int:
            if good:
                return int(sql_writer(w).execute("DELETE FROM otp_challenge WHERE account_id = ? AND code_hash = ?",
                                     (account_id, code_hash)).rowcount)
            sql_writer(w).execute("UPDATE otp_challenge SET attempts = attempts + 1 WHERE account_id = ? AND code_hash = ?",
                      (account_id, code_hash))
            sql_writer(w).execute("DELETE FROM otp_challenge WHERE account_id = ? AND attempts >= ?", (account_id, max_attempts))
            return 0

        return self.repo.transact(tx) == 1


def person_has_account(w: Writer, person_id: str) -> bool:
    """Whether anyone signs in as, or acts for, this golden person (a resident's
    own account, or a live or past delegation): retiring the person would cut
    them off, so identity merges that would do it wait for review (issue 12)."""
    if sql_writer(w).execute("SELECT 1 FROM account WHERE person_id = ?", (person_id,)).fetchone():
        return True
    return sql_writer(w).execute("SELECT 1 FROM account_person WHERE person_id = ?", (person_id,)).fetchone() is not None
