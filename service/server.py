"""``serve``: run the HTTP service (and the embedded database when ``MONGODB_URI`` is unset)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import AsyncIterator
from typing import Any

import tornado.httpserver
import tornado.web

from . import __version__
from .config import ConfigError, Settings, dev_secret
from .db import CommandCounter, connect, ensure_indexes
from .embedded import EmbeddedDatabase, EmbeddedDatabaseError

__all__ = ["Runtime", "add_parser", "load_settings", "runtime"]

log = logging.getLogger(__name__)


def load_settings(args: argparse.Namespace, *, dev: bool = False, **overrides: Any) -> Settings:
    """Settings from the environment (and ``--config``). ``dev`` fills a development token."""
    config_file = getattr(args, "config", None)
    try:
        return Settings.from_env(config_file=config_file, **overrides)
    except ConfigError as e:
        if not dev or "WECHAT_TOKEN" not in str(e):
            raise
    placeholder = "-"  # replaced by the development token below
    base = Settings.from_env(config_file=config_file, wechat_token=placeholder, **overrides)
    token = dev_secret(base.data_dir, "dev-token")
    return base.replace(wechat_token=token)


@dataclasses.dataclass
class Runtime:
    """What one process holds: settings, database client, application, embedded server."""

    settings: Settings
    client: Any
    db: Any
    app: tornado.web.Application
    counter: CommandCounter
    embedded: EmbeddedDatabase | None = None

    async def close(self) -> None:
        for name in ("users",):
            closer = self.app.settings.get(name)
            if closer is not None:
                await closer.close()
        for hook in self.app.settings.get("on_shutdown", []):
            await hook()


@contextlib.asynccontextmanager
async def runtime(settings: Settings, **app_extra: Any) -> AsyncIterator[Runtime]:
    """Start the embedded database if needed, connect, ensure indexes, build the app."""
    from .app import make_app

    embedded: EmbeddedDatabase | None = None
    uri = settings.mongodb_uri
    if settings.embedded_db:
        embedded = EmbeddedDatabase(
            settings.data_dir / "secantus", log_path=settings.data_dir / "secantus.log"
        )
        await asyncio.to_thread(embedded.start)
        uri = embedded.uri
    counter = CommandCounter()
    client, db = connect(settings, uri, counter=counter)
    try:
        await ensure_indexes(db)
        app = make_app(settings, db=db, db_counter=counter, **app_extra)
        rt = Runtime(settings, client, db, app, counter, embedded)
        try:
            yield rt
        finally:
            await rt.close()
    finally:
        await client.close()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


async def serve(settings: Settings, *, dev: bool = False) -> None:
    async with runtime(settings) as rt:
        server = tornado.httpserver.HTTPServer(
            rt.app,
            xheaders=settings.xheaders,
            # The WeChat handler enforces its own (smaller) limit with a 413.
            max_body_size=max(settings.max_body_bytes * 2, 8 * 1024 * 1024),
        )
        server.listen(settings.port, settings.host)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        where = f"http://{settings.host}:{settings.port}"
        log.info(
            "wechat-survey %s listening on %s (database: %s)",
            __version__,
            where,
            "embedded SecantusDB" if rt.embedded else "MONGODB_URI",
        )
        if not settings.store_messages:
            log.warning("--no-store: messages are answered but NOT stored (benchmark only)")
        if dev:
            from .owners_cli import owner_banner

            print(
                f"\n  WeChat endpoint: {where}/wechat\n"
                f"  Token (development, kept in {settings.data_dir}/dev-token): "
                f"{settings.wechat_token}\n"
                f"  Dashboard: {where}/dashboard/\n" + await owner_banner(rt.db),
                flush=True,
            )
        await stop.wait()
        log.info("shutting down: no new connections, finishing in-flight requests")
        server.stop()
        try:
            await asyncio.wait_for(server.close_all_connections(), timeout=5)
        except TimeoutError:
            log.warning("some connections were still open after 5 s; closing anyway")
    log.info("stopped")


def _serve(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    if args.host:
        overrides["host"] = args.host
    if args.port:
        overrides["port"] = args.port
    if args.no_store:
        overrides["store_messages"] = False
    try:
        settings = load_settings(args, dev=args.dev, **overrides)
        if not settings.cookie_secret:
            settings = settings.replace(
                cookie_secret=dev_secret(settings.data_dir, "cookie-secret")
            )
        asyncio.run(serve(settings, dev=args.dev))
    except (ConfigError, EmbeddedDatabaseError) as e:
        log.error("%s", e)
        return 2
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the HTTP service")
    p.add_argument("--host", help="address to listen on (default HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default PORT or 8000)")
    p.add_argument(
        "--dev",
        action="store_true",
        help="development: without WECHAT_TOKEN, use a generated token kept under DATA_DIR",
    )
    p.add_argument(
        "--no-store",
        action="store_true",
        help="benchmark only: answer messages without storing them (no exactly-once)",
    )
    p.set_defaults(func=_serve)
