"""The authenticated caller of a request (set by the auth middleware in hutong.web.app)."""

from __future__ import annotations

from starlette.requests import Request

from hutong.errors import Unauthorized
from hutong.security.principal import Principal


def principal_of(request: Request) -> Principal:
    p = getattr(request.state, "principal", None)
    if not isinstance(p, Principal):
        raise Unauthorized("HT-0100", "sign in first: send Authorization: Bearer <access token>")
    return p
