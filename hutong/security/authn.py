"""The request authenticator: an Authorization header in, a Principal out.

RFC 6750 section 2.1 (``Authorization: Bearer <token>``) over the platform's
own access tokens (:mod:`hutong.security.tokens`).  Every refusal is an
:class:`~hutong.errors.Unauthorized` (401) with a stable code and a message
that never repeats the token.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hutong.errors import Unauthorized
from hutong.security.principal import Principal, Role
from hutong.security.settings import SecuritySettings
from hutong.security.tokens import MAX_TOKEN_BYTES, TokenService
from hutong.store.repository import Repository


def _opt(claims: dict[str, Any], name: str) -> str | None:
    v = claims.get(name)
    return str(v) if isinstance(v, str) and v else None


def principal_from_claims(claims: dict[str, Any], peer: str | None = None) -> Principal:
    """The Principal a verified token stands for."""
    try:
        role = Role(str(claims.get("role")))
    except ValueError:
        raise Unauthorized("HT-0121", "access token names no known role") from None
    scope = claims.get("scope", "")
    persons = claims.get("persons") or []
    if not isinstance(scope, str) or not isinstance(persons, list):
        raise Unauthorized("HT-0121", "access token claims malformed")
    return Principal(
        account_id=str(claims["sub"]), role=role, display=_opt(claims, "name") or "",
        scopes=tuple(scope.split()), organization=_opt(claims, "org"), organization_id=_opt(claims, "org_id"),
        practitioner_id=_opt(claims, "practitioner"), practitioner_role_id=_opt(claims, "practitioner_role"),
        persons=tuple(str(p) for p in persons), token_id=str(claims["jti"]), client_id=_opt(claims, "client_id"),
        peer=peer,
    )


class Authenticator:
    """Turns the Authorization header of a request into the caller's Principal."""

    def __init__(self, repo: Repository, settings: SecuritySettings, key_dir: Path,
                 clock: Callable[[], int] | None = None, *, tokens: TokenService | None = None) -> None:
        self.tokens = tokens or TokenService(repo, settings, key_dir, clock=clock)

    def authenticate(self, authorization: str | None, peer: str | None) -> Principal:
        if authorization is None or not authorization.strip():
            raise Unauthorized("HT-0100", "sign in first: send Authorization: Bearer <access token>")
        if len(authorization) > MAX_TOKEN_BYTES + 16:
            raise Unauthorized("HT-0121", f"access token malformed or longer than {MAX_TOKEN_BYTES} bytes")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("HT-0100", "use Authorization: Bearer <access token> (RFC 6750)")
        claims = self.tokens.verify(token.strip())
        return principal_from_claims(claims, peer)
