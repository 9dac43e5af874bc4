"""The application object: a FastAPI app that carries its :class:`Platform`.

Routes reach the platform's services through the typed ``platform`` attribute
(:func:`get_platform`), never through ``app.state`` attribute lookups.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.requests import Request

from hutong.platform import Platform


class HutongApp(FastAPI):
    def __init__(self, platform: Platform, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.platform = platform


def get_platform(request: Request) -> Platform:
    """The platform serving ``request`` (usable as a FastAPI dependency)."""
    app = request.app
    assert isinstance(app, HutongApp), "request not served by hutong.web.app.create_app"
    return app.platform


def add_routes(target: FastAPI | APIRouter, group: APIRouter) -> None:
    """Add a route group's routes to ``target``, in order and flat.

    Not ``include_router``: FastAPI (0.16x) keeps an included router nested, so
    ``scope["route"]`` would carry the group's own path and ``app.routes`` would
    hide the group's routes, and the gate names the audited interaction by that
    route (hutong.web.gate.action_of) and the route table test enumerates them."""
    target.routes.extend(group.routes)
