"""The application factory: ``make_app(settings, db=...)`` or ``make_app(process=...)`` ->
``tornado.web.Application``.

The collaborators are built by ``service.process.Process`` (the composition root); the
application puts them in its settings, never in module globals, so every test gets a fresh
application on a fresh database. Handlers reach them through typed properties of their base
classes (``handlers/base.py``, ``dashboard/base.py``).
"""

from __future__ import annotations

import logging
from typing import Any

import tornado.httputil
import tornado.web
from pymongo.asynchronous.database import AsyncDatabase

from .config import Settings
from .process import Process

__all__ = ["make_app"]

access_log = logging.getLogger("tornado.access")


def _log_request(handler: tornado.web.RequestHandler) -> None:
    """Tornado's access log without the query string (it carries signatures and nonces)."""
    if handler.request.path.startswith("/wechat"):
        return  # the WeChat handler logs its own line with type, user hash and outcome
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    access_log.log(
        level,
        "%d %s %s %.1fms",
        status,
        handler.request.method,
        handler.request.path,
        1000.0 * handler.request.request_time(),
    )


class DashboardGZip(tornado.web.GZipContentEncoding):
    """gzip for text responses (Tornado's ``compress_response``), except ``/wechat``.

    WeChat's servers get our replies as they always did: small, immediate, uncompressed (and the
    reply budget is not spent compressing). Dashboard pages, JSON and static files are gzipped
    when the browser accepts it (text of 1 KiB or more, as Tornado decides).
    """

    def __init__(self, request: tornado.httputil.HTTPServerRequest) -> None:
        super().__init__(request)
        if request.path.startswith("/wechat"):
            self._gzipping = False


def make_app(
    settings: Settings | None = None,
    *,
    db: AsyncDatabase[dict[str, Any]] | None = None,
    process: Process | None = None,
    **extra: Any,
) -> tornado.web.Application:
    """The Tornado application of ``process`` (or of a new ``Process(settings, db=db)``).

    ``extra``: ``surveys``, ``wechat_api`` and ``db_counter`` go to the new process (tests
    replace those parts); everything else overrides or adds application settings. Close what it
    holds with ``await app.settings["process"].close()``.
    """
    import dashboard
    from handlers import health, wechat

    if process is None:
        if settings is None or db is None:
            raise TypeError("make_app needs a process, or settings and db")
        parts = {k: extra.pop(k) for k in ("surveys", "wechat_api") if k in extra}
        process = Process(settings, db=db, counter=extra.pop("db_counter", None), **parts)
    routes: list[Any] = [*wechat.routes, *health.routes, *dashboard.routes]
    config = process.settings
    app_settings: dict[str, Any] = {
        "process": process,
        "config": config,
        "db": process.db,
        "database": process.database,
        "bot": process.bot,
        "surveys": process.surveys,
        "replies": process.replies,
        "users": process.users,
        "inbox": process.inbox,
        "guard": process.guard,
        "metrics": process.metrics,
        "spool": process.spool,
        "crypto": process.crypto,
        "wechat_api": process.wechat_api,
        "image_reply": process.image_reply,
        "hub": process.hub,
        "survey_index": process.survey_index,
        "requests": process.requests,
        "cookie_secret": config.cookie_secret or None,
        "xsrf_cookies": True,
        "log_function": _log_request,
    }
    app_settings.update(dashboard.app_settings(config))
    app_settings.update(extra)
    return tornado.web.Application(routes, transforms=[DashboardGZip], **app_settings)
