"""HTTP routes of sign-in: /auth/* and the SMART configuration document.

Thin translation to :class:`hutong.security.oauth.AuthService`:

    POST /auth/token          RFC 6749 section 3.2 (form in, RFC 6749 section 5 JSON out)
    POST /auth/revoke         RFC 7009
    GET  /auth/jwks           the access-token signing key (RFC 7517)
    POST /auth/login          staff: {"username", "password", "totp"}
    POST /auth/password       staff: {"username", "old", "new", "totp"}
    POST /auth/otp/send       residents/delegates: {"id_number"} -> 202
    POST /auth/otp/verify     residents/delegates: {"id_number", "code"}
    GET  /.well-known/smart-configuration and /fhir/.well-known/smart-configuration

These work without a bearer token (they are how one is obtained).  The token
and revocation endpoints speak OAuth JSON; the others answer errors as
OperationOutcome.  Password hashing is CPU work, so it runs in the thread
pool, not on the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from hutong.errors import HutongError, InvalidRequest, operation_outcome
from hutong.fhir.service import parse_json
from hutong.security.authn import Authenticator
from hutong.security.events import AuditRecord
from hutong.security.oauth import AuthService, OAuthError
from hutong.security.settings import SecuritySettings
from hutong.security.sms import OutboxGateway, SmsGateway
from hutong.store.database import storage_failure
from hutong.store.repository import Repository

MAX_AUTH_BODY = 64 * 1024
FORM = "application/x-www-form-urlencoded"
# RFC 6749 section 5.1: token responses "MUST" not be cached.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
RETRY_AFTER_S = "30"
log = logging.getLogger("hutong.auth")


def _json(status: int, data: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json",
                    headers={**NO_STORE, **(headers or {})})


def _outcome(e: HutongError) -> Response:
    headers = {"WWW-Authenticate": 'Bearer realm="hutong"'} if e.status == 401 else None
    return _json(e.status, operation_outcome(e), headers)


def _unavailable(e: Exception, *, oauth: bool) -> Response:
    """503 for a full or failing store (issue 12, finding 15), or re-raise ``e``.

    The token endpoint answered 500 with a traceback in the log on a full
    disk.  Nothing was issued or changed (the transaction rolled back), so the
    client may retry: RFC 6749 has no token-endpoint error for this, and
    ``temporarily_unavailable`` (section 4.1.2.1) is what clients know.  The
    log gets one line with the error code, no traceback, no request data.
    """
    failure = storage_failure(e)
    if failure is None:
        raise e
    log.error("auth request refused: %s %s", failure.code, failure.message)
    headers = {"Retry-After": RETRY_AFTER_S}
    if oauth:
        return _json(503, {"error": "temporarily_unavailable",
                           "error_description": f"{failure.code}: {failure.message}"}, headers)
    return _json(503, operation_outcome(failure), headers)


def _peer(request: Request) -> str | None:
    return request.client.host if request.client else None


async def _body(request: Request) -> bytes:
    size = 0
    chunks = []
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_AUTH_BODY:
            raise InvalidRequest("HT-0138", f"request body larger than {MAX_AUTH_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _form(request: Request) -> dict[str, str]:
    """RFC 6749 section 3.2: form-encoded, parameters not repeated."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != FORM:
        raise OAuthError("invalid_request", f"send {FORM}")
    try:
        raw = (await _body(request)).decode()
    except (HutongError, UnicodeDecodeError):
        raise OAuthError("invalid_request", "body too large or not UTF-8") from None
    try:
        pairs = parse_qsl(raw, keep_blank_values=True, max_num_fields=50)
    except ValueError:
        raise OAuthError("invalid_request", "too many or malformed parameters") from None
    form: dict[str, str] = {}
    for k, v in pairs:
        if k in form:
            raise OAuthError("invalid_request", f"parameter {k[:40]!r} repeated")
        form[k] = v
    return form


async def _json_body(request: Request) -> Any:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise InvalidRequest("HT-0002", "send application/json")
    raw = await _body(request)
    data = parse_json(raw)  # the API's one JSON body parser (HT-0001)
    if not isinstance(data, dict):
        raise InvalidRequest("HT-0001", "request body must be a JSON object")
    return data


def register(app: FastAPI, repo: Repository, settings: SecuritySettings, key_dir: Path,
             audit: Callable[[AuditRecord], object], find_person: Callable[[str], str | None], *,
             sms: SmsGateway | None = None, clock: Callable[[], int] | None = None) -> Authenticator:
    """Add the /auth routes to ``app``; returns the Authenticator for every other route."""
    gateway = sms or OutboxGateway(settings.sms_outbox or (settings.key_dir or key_dir) / "sms-outbox.jsonl")
    service = AuthService(repo, settings, key_dir, audit=audit, find_person=find_person, sms=gateway,
                          clock=clock)
    authenticator = Authenticator(repo, settings, key_dir, tokens=service.tokens)
    app.state.auth_service = service
    app.include_router(router(service, settings))
    return authenticator


def router(service: AuthService, settings: SecuritySettings) -> APIRouter:
    """The sign-in routes (public: they are how a token is obtained)."""
    app = APIRouter(tags=["sign-in"])
    issuer_base = settings.issuer.rstrip("/") if settings.issuer and settings.issuer.startswith("http") else None

    def base_of(request: Request) -> str:
        return issuer_base or str(request.base_url).rstrip("/")

    @app.post("/auth/token", include_in_schema=True, summary="OAuth2 token endpoint (RFC 6749 3.2)")
    async def token(request: Request) -> Response:
        try:
            form = await _form(request)
            urls = tuple({str(request.base_url).rstrip("/") + "/auth/token", base_of(request) + "/auth/token"})
            data = await run_in_threadpool(service.token, form, request.headers.get("authorization"), urls,
                                           _peer(request))
        except OAuthError as e:
            basic = (request.headers.get("authorization") or "")[:6].lower() == "basic "
            headers = {"WWW-Authenticate": 'Basic realm="hutong"'} if e.status == 401 and basic else None
            return _json(e.status, e.body(), headers)
        except Exception as e:  # noqa: BLE001 - only storage failures are answered; others re-raised
            return _unavailable(e, oauth=True)
        return _json(200, data)

    @app.post("/auth/revoke", summary="token revocation (RFC 7009)")
    async def revoke(request: Request) -> Response:
        try:
            form = await _form(request)
            await run_in_threadpool(service.revoke, form, _peer(request))
        except OAuthError as e:
            return _json(e.status, e.body())
        except Exception as e:  # noqa: BLE001 - only storage failures are answered; others re-raised
            return _unavailable(e, oauth=True)
        return _json(200, {})

    @app.get("/auth/jwks", summary="public key of access tokens (JWK Set)")
    async def jwks() -> Response:
        return Response(orjson.dumps(service.tokens.jwks()), media_type="application/json")

    def people(action: Callable[[Any, str | None], dict[str, Any]], status: int = 200) -> Any:
        async def route(request: Request) -> Response:
            try:
                body = await _json_body(request)
                data = await run_in_threadpool(action, body, _peer(request))
            except HutongError as e:
                return _outcome(e)
            except Exception as e:  # noqa: BLE001 - only storage failures are answered; others re-raised
                return _unavailable(e, oauth=False)
            return _json(status, data)
        return route

    app.add_api_route("/auth/login", people(service.login), methods=["POST"],
                      summary="staff sign-in: username, password, TOTP")
    app.add_api_route("/auth/password", people(service.change_password), methods=["POST"],
                      summary="change a password (also when expired)")
    app.add_api_route("/auth/otp/send", people(service.otp_send, 202), methods=["POST"],
                      summary="residents: text a sign-in code (answers 202 either way)")
    app.add_api_route("/auth/otp/verify", people(service.otp_verify), methods=["POST"],
                      summary="residents: sign in with the code")

    async def smart_configuration(request: Request) -> Response:
        return Response(orjson.dumps(service.smart_configuration(base_of(request))),
                        media_type="application/json")

    for path in ("/.well-known/smart-configuration", "/fhir/.well-known/smart-configuration"):
        app.add_api_route(path, smart_configuration, methods=["GET"],
                          summary="SMART App Launch v2 configuration")
    return app
