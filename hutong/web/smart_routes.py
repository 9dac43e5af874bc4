"""HTTP of SMART App Launch for third-party apps (hutong.security.smart).

    GET  /auth/authorize                     the authorization endpoint (app-launch.html#obtain-authorization-code)
    GET  /signin/authorize/{request}         the approval page: the person signs in (the portals' own sign-in
    POST /signin/authorize/{request}         and session) and approves or refuses; a code goes back to the app
    GET  /clinician/apps?patient=...         EHR launch: the apps the clinician may open for this patient
    POST /clinician/launch                   a launch context; the app's launch URL with iss and launch
    GET  /resident/apps                      已授权的应用: apps with access to my record
    POST /resident/apps/{grant}/revoke       end an app's access

The authorization endpoint is public (it is how an app starts); it answers
with a small page that moves the browser on to the approval page instead of
a redirect, so the session cookies (SameSite=Strict) are sent to the
approval page even when the app is on another site.  The approval page reads
the session itself (it sits among the public sign-in pages, so a person not
yet signed in is sent to sign in and comes back to it).  Every decision,
token and revocation is audited by hutong.security.smart.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, quote

import orjson
from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, RedirectResponse, Response

from hutong.errors import HutongError, InvalidRequest
from hutong.fhir.service import FhirService
from hutong.platform import Platform
from hutong.security import scopes as scopemod
from hutong.security.policy import Access
from hutong.security.principal import Principal, Role
from hutong.security.smart import GRANT_DAYS, Pending, SmartService, split_scopes
from hutong.security.trace import to_audit_record
from hutong.systems import REGION_TZ
from hutong.web.ui import i18n, session
from hutong.web.ui.pages import Pages, access_of, form_of

i18n.add({
    "smart.title": ("授权第三方应用", "Authorize an app"),
    "smart.asks": ("「{app}」请求以下权限：", "“{app}” asks for:"),
    "smart.who": ("授权人", "Authorizing"),
    "smart.for_whom": ("授权访问谁的健康档案", "Whose health record"),
    "smart.self": ("本人", "Myself"),
    "smart.patient": ("当前患者", "Patient in context"),
    "smart.refused": ("以下请求的权限超出您的权限，不会授予：", "Asked for but beyond your own rights (not granted):"),
    "smart.offline": ("在您退出登录后仍可访问，最长 {days} 天；可随时在“已授权的应用”中撤销。",
                      "Keeps access while you are signed out, for at most {days} days; revoke it any time "
                      "under “Apps with access”."),
    "smart.approve": ("同意授权", "Approve"),
    "smart.deny": ("拒绝", "Deny"),
    "smart.note": ("应用只能看到您同意的内容；每次访问都会记入“谁看了我的档案”。",
                   "The app sees only what you approve; every access appears in your access log."),
    "smart.note_staff": ("应用以您的身份和权限访问，不超出您本人的访问依据；每次访问都会记入患者的访问记录。",
                         "The app acts as you, within your own access basis; every access appears in the "
                         "patient's access log."),
    "smart.continue": ("正在前往授权页面……", "Continuing to the authorization page…"),
    "smart.continue_link": ("继续", "Continue"),
    "smart.ctx.patient": ("所选居民档案中的", "in the chosen person's record:"),
    "smart.ctx.user": ("您有权查看的档案中的", "in records you may see:"),
    "smart.type.*": ("全部资料", "all data"),
    "smart.perm.c": ("新建", "create"),
    "smart.perm.r": ("读取", "read"),
    "smart.perm.u": ("修改", "update"),
    "smart.perm.d": ("删除", "delete"),
    "smart.perm.s": ("检索", "search"),
    "smart.apps.title": ("已授权的应用", "Apps with access to my record"),
    "smart.apps.help": ("以下第三方应用（如互联网医院、健康应用）获得了您授权，可访问您的健康档案。撤销后应用立即失去访问权限。",
                        "These third-party apps (internet hospitals, health apps) were given access to your record. "
                        "Revoking ends their access at once."),
    "smart.apps.none": ("目前没有应用获得授权。", "No app has access at the moment."),
    "smart.apps.app": ("应用", "App"),
    "smart.apps.scope": ("权限", "Access"),
    "smart.apps.since": ("授权时间", "Since"),
    "smart.apps.until": ("有效期至", "Until"),
    "smart.apps.revoke": ("撤销授权", "Revoke"),
    "smart.apps.revoke_confirm": ("确定撤销该应用的访问权限？", "Revoke this app's access?"),
    "smart.apps.revoked": ("已撤销，该应用不能再访问您的档案。", "Revoked: the app can no longer reach your record."),
    "smart.launch.title": ("用第三方应用打开", "Open in an app"),
    "smart.launch.help": ("应用将获得当前患者的上下文，权限不超过您本人的权限。",
                          "The app gets this patient as its context and no more rights than you have."),
    "smart.launch.none": ("没有可从工作站启动的应用。", "No app can be launched from the workspace."),
    "smart.launch.open": ("打开", "Open"),
    "smart.open_app": ("用第三方应用打开", "Open in an app"),
    "res.nav.apps": ("已授权的应用", "Apps"),
})


def _once(request: Request) -> dict[str, str]:
    """RFC 6749 section 3.1: request parameters "MUST NOT be included more than once"."""
    out: dict[str, str] = {}
    try:
        pairs = parse_qsl(request.url.query, keep_blank_values=True, max_num_fields=40)
    except ValueError:
        raise InvalidRequest("HT-0283", "too many or malformed parameters") from None
    for k, v in pairs:
        if k in out:
            raise InvalidRequest("HT-0283", f"parameter {k[:40]!r} repeated")
        out[k] = v
    return out


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, REGION_TZ).strftime("%Y-%m-%d %H:%M")


def _fhir_bases(p: Platform, request: Request) -> tuple[str, ...]:
    bases = [str(request.base_url).rstrip("/") + "/fhir"]
    if p.settings.base_url:
        bases.append(p.settings.base_url.rstrip("/"))
    return tuple(bases)


def scope_words(s: scopemod.Scope) -> tuple[str, str, list[str]]:
    """(context key, type key or name, permission keys) of a scope, for the page."""
    return f"smart.ctx.{s.context}", s.type, [f"smart.perm.{c}" for c in s.permissions]


def register(app: FastAPI, pages: Pages, p: Platform) -> None:
    smart: SmartService = p.auth.smart
    authn = p.authenticator

    def peer(request: Request) -> str | None:
        return request.client.host if request.client else None

    def signed_in(request: Request) -> tuple[Principal | None, dict[str, Any]]:
        """The person of this browser's session (the portals' cookies), the session
        refreshed when its access token expired; None when nobody is signed in."""
        token = request.cookies.get(session.ACCESS_COOKIE)
        try:
            if token:
                return authn.authenticate(f"Bearer {token}", peer(request)), {}
        except HutongError:
            pass
        refresh = request.cookies.get(session.REFRESH_COOKIE)
        if not refresh:
            return None, {}
        try:
            _account, fresh = authn.tokens.refresh(refresh)
            return authn.authenticate(f"Bearer {fresh['access_token']}", peer(request)), fresh
        except HutongError:
            return None, {}

    # ------------------------------------------------------------ authorization endpoint
    @app.get("/auth/authorize", response_class=HTMLResponse, summary="SMART authorization endpoint "
                                                                        "(RFC 6749 4.1.1, PKCE S256)")
    async def authorize(request: Request) -> Response:
        try:
            params = _once(request)
            result = await run_in_threadpool(smart.authorize, params, _fhir_bases(p, request))
        except HutongError as e:
            return pages.error(request, e)
        if isinstance(result, Pending):
            target = f"/signin/authorize/{result.request_id}"
            resp = pages.render(request, "smart/continue.html", target=target)
            # Moving on from this page (not a redirect) makes the next request same-site.
            resp.headers["Refresh"] = f"0; url={target}"
            return resp
        return RedirectResponse(result.url, status_code=303)

    # ------------------------------------------------------------ approval page
    def person_names(who: Principal, persons: tuple[str, ...], base: str, peer: str | None) -> dict[str, str]:
        """The names on the approval page, read under the person's own policy and
        audited like any read of a record (this page sits outside the gate)."""
        access = Access(p.repo, who, p.security)
        svc = FhirService(p.repo, base, access)
        out: dict[str, str] = {}
        for person in persons:
            try:
                body = orjson.loads(svc.read("Patient", person).body or b"{}")
            except HutongError:
                continue
            n = (body.get("name") or [{}])[0]
            out[person] = str(n.get("text") or (n.get("family", "") + "".join(n.get("given") or [])))
        if persons:
            access.settle()
            p.audit.record(to_audit_record(access.trace, action="read", principal=who, peer=peer,
                                           interaction="GET /signin/authorize/{request_id}"))
        return out

    def view(request: Request, request_id: str, who: Principal, status: int = 200) -> HTMLResponse:
        v = smart.approval(request_id, who)
        shown = tuple(dict.fromkeys(v.choices + ((v.launch_patient,) if v.launch_patient else ())))
        names = person_names(who, shown, _fhir_bases(p, request)[0], request.client.host if request.client else None)
        return pages.render(request, "smart/authorize.html", status=status, v=v, names=names,
                            granted=[scope_words(s) for s in v.granted], days=GRANT_DAYS,
                            is_resident=who.role is Role.RESIDENT)

    def with_cookies(request: Request, resp: Response, fresh: dict[str, Any]) -> Response:
        if fresh:
            session.set_tokens(request, resp, fresh, sign_in=False)
        return resp

    @app.get("/signin/authorize/{request_id}", response_class=HTMLResponse)
    async def approval(request_id: str, request: Request) -> Response:
        who, fresh = await run_in_threadpool(signed_in, request)
        if who is None:
            return RedirectResponse(f"/?next={quote('/signin/authorize/' + request_id[:64])}", status_code=303)
        request.state.principal = who
        try:
            resp: Response = await run_in_threadpool(view, request, request_id, who)
        except HutongError as e:
            resp = pages.error(request, e)
        return with_cookies(request, resp, fresh)

    @app.post("/signin/authorize/{request_id}")
    async def decide(request_id: str, request: Request) -> Response:
        form = await form_of(request)
        who, fresh = await run_in_threadpool(signed_in, request)
        if who is None:
            return RedirectResponse(f"/?next={quote('/signin/authorize/' + request_id[:64])}", status_code=303)
        request.state.principal = who
        try:
            result = await run_in_threadpool(lambda: smart.decide(
                request_id, who, approve=form.get("decision") == "approve", patient=form.get("patient") or None,
                peer=peer(request)))
        except HutongError as e:
            return with_cookies(request, pages.error(request, e), fresh)
        return with_cookies(request, RedirectResponse(result.url, status_code=303), fresh)

    # ------------------------------------------------------------ EHR launch (clinician workspace)
    @app.get("/clinician/apps", response_class=HTMLResponse)
    async def launchable(request: Request) -> Response:
        access = access_of(request)
        access.require_role(Role.CLINICIAN, what="launching apps")
        patient = request.query_params.get("patient", "")[:64]
        await run_in_threadpool(access.check_record, patient)
        apps = await run_in_threadpool(smart.launchable)
        return pages.render(request, "smart/launch.html", apps=apps, patient=patient)

    @app.post("/clinician/launch")
    async def launch(request: Request) -> Response:
        access = access_of(request)
        access.require_role(Role.CLINICIAN, what="launching apps")
        form = await form_of(request)
        patient = form.get("patient", "")[:64]
        # The workspace launches only for a patient this clinician may open now (SMART
        # EHR launch: the app gets the context the EHR was showing, nothing more).
        await run_in_threadpool(access.check_record, patient)
        url = await run_in_threadpool(smart.launch, access.principal, form.get("client_id", "")[:64], patient,
                                      _fhir_bases(p, request)[-1])
        return RedirectResponse(url, status_code=303)

    # ------------------------------------------------------------ resident portal: apps with access
    @app.get("/resident/apps", response_class=HTMLResponse)
    async def apps(request: Request) -> Response:
        access = access_of(request)
        access.require_role(Role.RESIDENT, Role.DELEGATE, what="the resident portal")
        rows = await run_in_threadpool(smart.grants_for, access.principal)
        grants = [{"id": g.grant_id, "app": c.name if c else g.client_id, "since": _day(g.created),
                   "until": _day(g.expires), "scopes": [scope_words(s) for s in split_scopes(g.scope).resources]}
                  for g, c in rows]
        return pages.render(request, "smart/apps.html", grants=grants, done=request.query_params.get("done"),
                            tab="apps", is_delegate=False, persons=access.principal.persons, person=None,
                            person_names={}, pq="")

    @app.post("/resident/apps/{grant_id}/revoke")
    async def revoke(grant_id: str, request: Request) -> Response:
        access = access_of(request)
        access.require_role(Role.RESIDENT, Role.DELEGATE, what="the resident portal")
        await form_of(request)
        g = await run_in_threadpool(smart.revoke_grant, grant_id[:40], access.principal, peer(request))
        if g.patient:
            access.persons.add(g.patient)  # the resident's own access log shows the change
        return RedirectResponse("/resident/apps?done=revoked", status_code=303)
