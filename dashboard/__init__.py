"""The owner's dashboard: pages, JSON API, live WebSocket, simulator (served by ``make_app``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from service.config import Settings

from . import (
    api,
    auth,
    exports,
    media,
    menu,
    pages,
    qr,
    replies,
    setup,
    simulator,
    survey_editor,
    surveys,
    ws,
)
from .base import StaticHandler
from .i18n import Translations

__all__ = ["STATIC_DIR", "TEMPLATE_DIR", "app_settings", "routes"]

PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATE_DIR = PACKAGE_DIR / "templates"
TRANSLATION_DIR = PACKAGE_DIR / "translations"
STATIC_DIR = PACKAGE_DIR.parent / "static"

routes: list[Any] = [
    *auth.routes,
    *exports.routes,  # before pages: /dashboard/users/export.csv is no user
    *pages.routes,
    *api.routes,
    *setup.routes,
    *qr.routes,
    *surveys.routes,
    *survey_editor.routes,
    *replies.routes,
    *menu.routes,
    *media.routes,
    *simulator.routes,
    *ws.routes,
]


def jinja_env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def app_settings(settings: Settings) -> dict[str, Any]:
    """The application settings the dashboard needs; ``make_app`` merges them in. (The live
    hub is the process's: ``service.process.Process`` builds it and closes it.)"""
    return {
        "login_url": "/dashboard/login",
        "static_path": str(STATIC_DIR),
        "static_url_prefix": "/static/",
        "static_handler_class": StaticHandler,
        "default_handler_class": pages.NotFoundHandler,
        "jinja_env": jinja_env(),
        "translations": Translations(TRANSLATION_DIR, STATIC_DIR),
        "xsrf_cookie_kwargs": {"httponly": True, "samesite": "Lax"},
    }
