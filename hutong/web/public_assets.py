"""Public assets outside the API: the favicon and the self-hosted API docs.

Neither needs a sign-in nor holds resident data, so the gate lets them
through without an audit row (:data:`PUBLIC_PATHS`): a browser asks for
``/favicon.ico`` with every page, and each ask used to be a 401 and a row of
the audit trail (issue 12, finding 19: 221 of 487 rows of a demo session).

``/docs`` is Swagger UI for ``/openapi.json``, served from this origin: the
pinned assets of the ``swagger-ui-bundle`` package (FastAPI's default page
loads unpinned scripts from a CDN, i.e. third-party code running on the
portals' origin with their cookies: issue 12, finding 20).  The page has no
inline script (its start-up is ``/docs/init.js``), so its Content-Security-
Policy allows scripts from this origin only.  Without the package there is no
``/docs`` (the API description stays at ``/openapi.json``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import FastAPI
from starlette.responses import FileResponse, HTMLResponse, Response

STATIC = Path(__file__).parent / "static"
FAVICON = "/favicon.ico"
DOCS = "/docs"
# Swagger UI's files served under /docs/ (exact names: nothing else of the package is reachable).
DOCS_ASSETS = {"swagger-ui.css": "text/css", "swagger-ui-bundle.js": "text/javascript"}
DOCS_INIT = "docs-init.js"   # in hutong/web/static
PUBLIC_PATHS = frozenset({FAVICON, DOCS, f"{DOCS}/init.js", *(f"{DOCS}/{name}" for name in DOCS_ASSETS)})
# Swagger UI styles its widgets with style attributes, hence 'unsafe-inline' for
# styles only; scripts come from this origin alone.
DOCS_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
CACHE = {"Cache-Control": "public, max-age=86400"}

DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} - API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
<link rel="icon" href="/favicon.ico">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body>
</html>
"""


def swagger_ui_dir() -> Path | None:
    """The Swagger UI files of the installed ``swagger-ui-bundle`` package, if any."""
    spec = importlib.util.find_spec("swagger_ui_bundle")
    if spec is None or spec.origin is None:
        return None
    found = sorted((Path(spec.origin).parent / "vendor").glob("swagger-ui-*/swagger-ui-bundle.js"))
    return found[-1].parent if found else None


def register(app: FastAPI, title: str) -> None:
    """Add the favicon and (when Swagger UI is installed) /docs to ``app``,
    which must have been made with ``docs_url=None``."""

    @app.get(FAVICON, include_in_schema=False)
    async def favicon() -> Response:
        return FileResponse(STATIC / "favicon.ico", media_type="image/x-icon", headers=CACHE)

    ui = swagger_ui_dir()
    if ui is None:
        return
    page = DOCS_PAGE.format(title=title.replace("<", "").replace("&", ""))

    @app.get(DOCS, include_in_schema=False)
    async def docs() -> Response:
        return HTMLResponse(page, headers={"Content-Security-Policy": DOCS_CSP, "Cache-Control": "no-cache"})

    @app.get(f"{DOCS}/init.js", include_in_schema=False)
    async def docs_init() -> Response:
        return FileResponse(STATIC / DOCS_INIT, media_type="text/javascript", headers=CACHE)

    def asset(name: str, media_type: str) -> None:
        async def serve() -> Response:
            return FileResponse(ui / name, media_type=media_type, headers=CACHE)

        app.add_api_route(f"{DOCS}/{name}", serve, methods=["GET"], include_in_schema=False)

    for name, media_type in DOCS_ASSETS.items():
        asset(name, media_type)
