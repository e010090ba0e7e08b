"""The one place that creates the MongoDB client (PyMongo's async API).

One ``AsyncMongoClient`` per process, created in ``main()`` after any fork. Collections are named
only here and in ``service/store/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pymongo
from pymongo import AsyncMongoClient, monitoring

from .config import Settings
from .embedded import EmbeddedDatabase, running_uri
from .store import Db

__all__ = [
    "STORE_MODULES",
    "CommandCounter",
    "connect",
    "ensure_indexes",
    "open_database",
    "ping",
]

log = logging.getLogger(__name__)

# Every data-access module has ``async def ensure_indexes(db)``; start-up calls them all.
STORE_MODULES = [
    "service.store.messages",
    "service.store.users",
    "service.store.owners",
    "service.store.surveys",
    "service.store.survey_defs",
    "service.store.replies",
    "service.store.tokens",
    "service.store.privacy",
    "service.store.qr_codes",
]


class CommandCounter(monitoring.CommandListener):
    """Counts the commands (round trips) the client sends; exposed as a metric and to ``bench/``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.commands = 0
        self.failures = 0
        self.by_command: dict[str, int] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        with self._lock:
            self.commands += 1
            self.by_command[event.command_name] = self.by_command.get(event.command_name, 0) + 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        with self._lock:
            self.failures += 1

    def snapshot(self) -> dict[str, Any]:
        """``started`` (commands sent), ``failed``, and the count per command name."""
        with self._lock:
            return {
                "started": self.commands,
                "failed": self.failures,
                "by_command": dict(self.by_command),
            }


def connect(
    settings: Settings,
    uri: str | None = None,
    *,
    counter: CommandCounter | None = None,
    **client_options: Any,
) -> tuple[AsyncMongoClient[dict[str, Any]], Db]:
    """Create the process's client and return it with the application database.

    ``uri`` defaults to ``settings.mongodb_uri``. Short server-selection and socket timeouts keep
    the WeChat endpoint inside its 5-second window when the database is down.
    """
    options: dict[str, Any] = {
        "serverSelectionTimeoutMS": 2000,
        "connectTimeoutMS": 2000,
        "socketTimeoutMS": 10000,
        "tz_aware": True,
        "appname": "wechat-survey",
    }
    if counter is not None:
        options["event_listeners"] = [counter]
    options.update(client_options)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        uri or settings.mongodb_uri, **options
    )
    return client, client[settings.mongodb_db]


async def ensure_indexes(db: Db) -> None:
    """Create every collection's indexes; idempotent, run at start-up."""
    for name in STORE_MODULES:
        module = importlib.import_module(name)
        await module.ensure_indexes(db)
    log.info("indexes ensured on %s", db.name)


async def ping(db: Db, limit: float) -> float:
    """Round trip ``ping`` bounded by ``limit`` seconds; the latency in ms, or ``PyMongoError``."""
    started = time.perf_counter()
    with pymongo.timeout(limit):
        await db.command("ping")
    return (time.perf_counter() - started) * 1000


@contextlib.asynccontextmanager
async def open_database(
    settings: Settings,
    *,
    attach: bool = True,
    counter: CommandCounter | None = None,
    indexes: bool = True,
    **client_options: Any,
) -> AsyncIterator[tuple[AsyncMongoClient[dict[str, Any]], Db]]:
    """Connect (to ``MONGODB_URI``, or the embedded server under ``DATA_DIR``) and ensure indexes
    (unless ``indexes`` is false: ``serve`` creates them itself, tolerating an outage).

    Embedded: with ``attach`` (command-line tools) a server already started by a running
    ``serve`` on the same ``DATA_DIR`` is used; otherwise (or when none runs) this process starts
    one and stops it on exit. ``client_options`` go to the client (e.g. a batch tool's longer
    ``socketTimeoutMS``).
    """
    embedded: EmbeddedDatabase | None = None
    uri = settings.mongodb_uri
    if settings.embedded_db:
        storage = settings.data_dir / "secantus"
        attached = running_uri(storage) if attach else None
        if attached is None:
            embedded = EmbeddedDatabase(storage, log_path=settings.data_dir / "secantus.log")
            await asyncio.to_thread(embedded.start)
            uri = embedded.uri
        else:
            log.info("using the embedded database of the running service (%s)", storage)
            uri = attached
    client, db = connect(settings, uri, counter=counter, **client_options)
    try:
        if indexes:
            await ensure_indexes(db)
        yield client, db
    finally:
        await client.close()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
