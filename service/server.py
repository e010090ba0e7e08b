"""``serve``: run the HTTP service (and the embedded database when ``MONGODB_URI`` is unset).

Shutdown on SIGTERM or SIGINT (supervisord's ``stopsignal=TERM``, Ctrl-C), in this order, each
step bounded so the whole stays well inside supervisord's ``stopwaitsecs``:

1. stop accepting connections;
2. let requests in progress finish (``DRAIN_TIMEOUT``), then close idle keep-alive connections;
3. close the process (``service.process.Process.close``): let messages still being processed
   finish, late customer-service replies included (``FLIGHT_TIMEOUT``; what is left is kept in
   the spool), stop the live feed, replay the spool if the database is up and close it, flush the
   user counters, close the WeChat API client, the database client and the embedded database.

The database may be down when the service starts (``serve`` only): it then answers from the
spool and creates the indexes once the database is back.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import Any

import tornado.httpserver
import tornado.httputil
import tornado.netutil
import tornado.web

from . import __version__, eventloop
from .config import ConfigError, Settings, dev_secret, http_server_options
from .embedded import EmbeddedDatabaseError
from .inflight import InFlight
from .process import Process

__all__ = ["InFlight", "add_parser", "load_settings", "serve"]

log = logging.getLogger(__name__)

DRAIN_TIMEOUT = 8.0  # seconds for requests in progress (a reply takes at most REPLY_BUDGET)
CLOSE_TIMEOUT = 5.0  # seconds to close the remaining (idle) connections


class ListenError(RuntimeError):
    """The service cannot listen on its address (the port is taken, the address is wrong)."""


def load_settings(args: argparse.Namespace, *, dev: bool = False, **overrides: Any) -> Settings:
    """Settings from the environment (and ``--config``). ``dev`` fills a development token."""
    config_file = getattr(args, "config", None)
    settings = Settings.from_env(config_file=config_file, require_token=not dev, **overrides)
    if not settings.has_token:  # development: a generated token kept under DATA_DIR
        settings = settings.replace(wechat_token=dev_secret(settings.data_dir, "dev-token"))
    return settings


async def serve(settings: Settings, *, dev: bool = False) -> None:
    from .app import make_app

    # Bind first: a port already taken is one clear line, before anything else has started.
    try:
        sockets = tornado.netutil.bind_sockets(settings.port, settings.host)
    except OSError as e:
        raise ListenError(
            f"cannot listen on {settings.host}:{settings.port}: {e.strerror or e} "
            "(is another service running there? choose another one with PORT or --port)"
        ) from e
    async with Process.open(settings, tolerate_db_outage=True) as process:
        app = make_app(process=process)
        tracker = InFlight(app, process.requests)
        server = tornado.httpserver.HTTPServer(tracker, **http_server_options(settings))
        server.add_sockets(sockets)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        where = f"http://{settings.host}:{settings.port}"
        log.info(
            "wechat-survey %s listening on %s (database: %s; event loop: %s)",
            __version__,
            where,
            "embedded SecantusDB" if settings.embedded_db else "MONGODB_URI",
            eventloop.describe(loop, settings.event_loop),
        )
        log.info("WeChat message mode: %s", settings.describe_message_mode())
        if not settings.store_messages:
            log.warning(
                "--no-store: messages are answered without the database and NOT stored "
                "(benchmark only)"
            )
        if dev:
            from .owners_cli import framed, owner_banner

            lines = [
                f"WeChat endpoint (URL):  {where}/wechat",
                f"Token:                  {settings.wechat_token}",
                f"  (development token, kept in {settings.data_dir}/dev-token)",
                f"Dashboard:              {where}/dashboard/",
                *await owner_banner(process.db, settings.data_dir),
            ]
            # Last, framed: after the install and start-up logs, where it is seen.
            print("\n" + framed(lines) + "\n", flush=True)
        await stop.wait()
        log.info(
            "shutting down: no new connections; %d request(s) in progress", process.requests.active
        )
        server.stop()
        if not await process.requests.wait_idle(DRAIN_TIMEOUT):
            log.warning(
                "%d request(s) still in progress after %.0f s; closing them",
                process.requests.active,
                DRAIN_TIMEOUT,
            )
        try:
            await asyncio.wait_for(server.close_all_connections(), timeout=CLOSE_TIMEOUT)
        except TimeoutError:
            log.warning("connections still open after %.0f s; exiting anyway", CLOSE_TIMEOUT)
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
        eventloop.run(serve(settings, dev=args.dev), settings.event_loop)
    except (ConfigError, EmbeddedDatabaseError, ListenError) as e:
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
        help="benchmark only: answer without the database (nothing stored, no surveys, "
        "no exactly-once)",
    )
    p.set_defaults(func=_serve)
