"""The application factory: ``make_app(settings, db=..., ...) -> tornado.web.Application``.

Shared state (database, bot, inbox, hub, ...) lives in the application settings, never in module
globals, so every test gets a fresh application on a fresh database.
"""

from __future__ import annotations

import logging
from typing import Any

import tornado.web
from pymongo.asynchronous.database import AsyncDatabase

from .bot import Bot
from .config import Settings
from .guard import ReplyGuard
from .image_reply import ImageReply
from .inbox import Inbox
from .metrics import Metrics
from .spool import Spool
from .store.users import UserStats
from .surveys import load_engine
from .wechat import Crypto
from .wechat_api import make_api

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


def make_app(
    settings: Settings,
    *,
    db: AsyncDatabase[dict[str, Any]],
    **extra: Any,
) -> tornado.web.Application:
    """Build the application; ``extra`` overrides or adds application settings (tests use it)."""
    import dashboard
    from handlers import health, wechat

    # An invalid survey definition raises SurveyLoadError here, listing every mistake.
    surveys = extra.pop("surveys", None) or load_engine(settings)
    # The image reply, kept in step with `python -m service media upload` (service/image_reply.py).
    image_reply = ImageReply(db, settings.image_media_id)
    # `serve --no-store` (benchmark only) keeps the database off the message path entirely: survey
    # state lives in the database, so the bot answers without surveys there.
    bot = Bot(
        db,
        surveys=surveys if settings.store_messages else None,
        image=image_reply,
    )
    users = UserStats(db)
    # The WeChat API client (None without AppID/AppSecret).
    wechat_api = extra.pop("wechat_api", None) or make_api(settings, db)
    crypto = (
        Crypto(settings.wechat_token, settings.encoding_aes_key, settings.app_id)
        if settings.aes_enabled
        else None
    )
    # Metrics (own registry per app), the outage spool and the reply budget: service/metrics.py,
    # service/spool.py, service/guard.py. Database calls on the hot path stay within the budget.
    metrics = Metrics(db_counter=extra.get("db_counter"))
    spool = (
        Spool(settings.data_dir / "spool", max_bytes=settings.spool_max_bytes)
        if settings.store_messages
        else None
    )
    metrics.track_spool(lambda: spool.backlog if spool is not None else 0)
    inbox = Inbox(
        db,
        bot,
        users,
        store_messages=settings.store_messages,
        spool=spool,
        metrics=metrics,
        db_timeout=max(0.75 * settings.reply_budget, 1.0),
    )
    guard = ReplyGuard(inbox, budget=settings.reply_budget, metrics=metrics)

    async def close_inbox() -> None:
        await guard.close()
        await inbox.close()

    routes: list[Any] = [*wechat.routes, *health.routes, *dashboard.routes]
    app_settings: dict[str, Any] = {
        "config": settings,
        "db": db,
        "bot": bot,
        "surveys": surveys,
        "users": users,
        "inbox": inbox,
        "guard": guard,
        "metrics": metrics,
        "spool": spool,
        "crypto": crypto,
        "wechat_api": wechat_api,
        "image_reply": image_reply,
        "cookie_secret": settings.cookie_secret or None,
        "xsrf_cookies": True,
        "log_function": _log_request,
    }
    app_settings.update(dashboard.app_settings(settings, db))
    app_settings.update(extra)
    app_settings["on_shutdown"] = [
        close_inbox,  # first: late replies still use the API client and the database
        *app_settings.get("on_shutdown", []),
        image_reply.close,
        *([wechat_api.close] if wechat_api is not None else []),
    ]
    app_settings["on_shutdown"].append(app_settings["hub"].stop)
    hub = app_settings.get("hub")
    if hub is not None:
        metrics.track_websockets(lambda: int(hub.subscribers))
    app = tornado.web.Application(routes, **app_settings)
    guard.api = lambda: app.settings.get("wechat_api")
    return app
