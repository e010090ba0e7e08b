"""``serve``: run the HTTP service (and the embedded database when ``MONGODB_URI`` is unset).

Shutdown on SIGTERM or SIGINT (supervisord's ``stopsignal=TERM``, Ctrl-C), in this order, each
step bounded so the whole stays well inside supervisord's ``stopwaitsecs``:

1. stop accepting connections;
2. let requests in progress finish (``DRAIN_TIMEOUT``), then close idle keep-alive connections;
3. let messages still being processed finish, late customer-service replies included
   (``FLIGHT_TIMEOUT``; what is left is kept in the spool);
4. replay the spool if the database is up, close the spool file, flush the user counters, run the
   ``on_shutdown`` hooks;
5. close the database client and stop the embedded database.

The database may be down when the service starts (``serve`` only): it then answers from the
spool and creates the indexes once the database is back.
"""

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
import tornado.httputil
import tornado.web
from pymongo.errors import PyMongoError

from . import __version__
from .config import ConfigError, Settings, dev_secret
from .db import CommandCounter, ensure_indexes, open_database
from .embedded import EmbeddedDatabaseError
from .spool import is_outage

__all__ = ["Runtime", "add_parser", "load_settings", "runtime"]

log = logging.getLogger(__name__)

DRAIN_TIMEOUT = 8.0  # seconds for requests in progress (a reply takes at most REPLY_BUDGET)
FLIGHT_TIMEOUT = 10.0  # seconds for late replies still being produced or sent
CLOSE_TIMEOUT = 5.0  # seconds to close the remaining (idle) connections


class InFlight(tornado.httputil.HTTPServerConnectionDelegate):
    """The application, plus a count of requests between their headers and the last byte of
    their response, so that shutdown can wait for them: Tornado's ``close_all_connections``
    would cut them off mid-request.

    The end of a response is the request connection's finish future, which Tornado resolves once
    the response is flushed, the client is gone, or the connection is detached (WebSocket).
    """

    def __init__(self, app: tornado.web.Application) -> None:
        self.app = app
        self.active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def start_request(
        self,
        server_conn: object,
        request_conn: tornado.httputil.HTTPConnection,
    ) -> tornado.httputil.HTTPMessageDelegate:
        delegate = self.app.start_request(server_conn, request_conn)
        return _Tracked(self, delegate, request_conn)

    def on_close(self, server_conn: object) -> None:
        self.app.on_close(server_conn)

    def _begin(self) -> None:
        self.active += 1
        self._idle.clear()

    def _end(self) -> None:
        self.active -= 1
        if self.active <= 0:
            self.active = 0
            self._idle.set()

    async def wait_idle(self, grace: float) -> bool:
        """True once no request is in progress; False if some still were after ``grace`` s."""
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except TimeoutError:
            return False
        return True


class _Tracked(tornado.httputil.HTTPMessageDelegate):
    def __init__(
        self,
        tracker: InFlight,
        delegate: tornado.httputil.HTTPMessageDelegate,
        connection: tornado.httputil.HTTPConnection,
    ) -> None:
        self.tracker = tracker
        self.delegate = delegate
        self.connection = connection
        self.counted = False

    def headers_received(
        self,
        start_line: tornado.httputil.RequestStartLine | tornado.httputil.ResponseStartLine,
        headers: tornado.httputil.HTTPHeaders,
    ) -> Any:
        # Tornado's HTTP1Connection resolves this when the response is done (or the connection
        # is closed or detached); without it the request is simply not waited for.
        finished = getattr(self.connection, "_finish_future", None)
        if isinstance(finished, asyncio.Future) and not finished.done():
            self.counted = True
            self.tracker._begin()
            finished.add_done_callback(lambda _: self._done())
        return self.delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Any:
        return self.delegate.data_received(chunk)

    def finish(self) -> None:
        self.delegate.finish()

    def on_connection_close(self) -> None:
        self._done()
        self.delegate.on_connection_close()

    def _done(self) -> None:
        if self.counted:
            self.counted = False
            self.tracker._end()


def load_settings(args: argparse.Namespace, *, dev: bool = False, **overrides: Any) -> Settings:
    """Settings from the environment (and ``--config``). ``dev`` fills a development token."""
    config_file = getattr(args, "config", None)
    settings = Settings.from_env(config_file=config_file, require_token=not dev, **overrides)
    if not settings.has_token:  # development: a generated token kept under DATA_DIR
        settings = settings.replace(wechat_token=dev_secret(settings.data_dir, "dev-token"))
    return settings


@dataclasses.dataclass
class Runtime:
    """What one process holds: settings, database client, application."""

    settings: Settings
    client: Any
    db: Any
    app: tornado.web.Application
    counter: CommandCounter

    async def close(self) -> None:
        guard = self.app.settings.get("guard")
        if guard is not None:  # late replies in progress: they still need the database
            await guard.close(FLIGHT_TIMEOUT)
        inbox = self.app.settings.get("inbox")
        if inbox is not None:  # replay the spool if the database is up; close it
            await inbox.close()
        for name in ("users",):
            closer = self.app.settings.get(name)
            if closer is not None:
                await closer.close()
        for hook in self.app.settings.get("on_shutdown", []):
            await hook()


@contextlib.asynccontextmanager
async def runtime(
    settings: Settings, *, tolerate_db_outage: bool = False, **app_extra: Any
) -> AsyncIterator[Runtime]:
    """Start the embedded database if needed, connect, ensure indexes, build the app.

    ``tolerate_db_outage`` (``serve``): an unreachable database does not stop the start-up; the
    service answers and spools, and the indexes are created when the database is back.
    """
    from .app import make_app

    counter = CommandCounter()
    # attach=False: the service owns its embedded database (a second one on DATA_DIR fails).
    async with open_database(settings, attach=False, counter=counter, indexes=False) as (
        client,
        db,
    ):
        outage: PyMongoError | None = None
        try:
            await ensure_indexes(db)
        except PyMongoError as e:
            if not (tolerate_db_outage and is_outage(e)):
                raise
            outage = e
            log.warning(
                "database unavailable at start-up (%s); answering anyway and spooling messages "
                "until it is back",
                type(e).__name__,
            )
        app = make_app(settings, db=db, db_counter=counter, **app_extra)
        rt = Runtime(settings, client, db, app, counter)
        try:
            inbox = app.settings.get("inbox")
            replayer = getattr(inbox, "replayer", None)
            if replayer is not None:
                if outage is not None:
                    replayer.prepare = lambda: ensure_indexes(db)
                    replayer.failed(outage, "start-up")
                replayer.start()  # also replays what an earlier run left in the spool
            yield rt
        finally:
            await rt.close()


async def serve(settings: Settings, *, dev: bool = False) -> None:
    async with runtime(settings, tolerate_db_outage=True) as rt:
        tracker = InFlight(rt.app)
        server = tornado.httpserver.HTTPServer(
            tracker,
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
            "embedded SecantusDB" if settings.embedded_db else "MONGODB_URI",
        )
        if not settings.store_messages:
            log.warning(
                "--no-store: messages are answered without the database and NOT stored "
                "(benchmark only)"
            )
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
        log.info("shutting down: no new connections; %d request(s) in progress", tracker.active)
        server.stop()
        if not await tracker.wait_idle(DRAIN_TIMEOUT):
            log.warning(
                "%d request(s) still in progress after %.0f s; closing them",
                tracker.active,
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
        help="benchmark only: answer without the database (nothing stored, no surveys, "
        "no exactly-once)",
    )
    p.set_defaults(func=_serve)
