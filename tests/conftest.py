"""Shared fixtures: a real MongoDB-compatible server, a fresh database per test, the app.

``MONGODB_URI`` set: the tests use that server (a real MongoDB). Unset: one embedded SecantusDB
process is started for the session and stopped at the end. Every test gets its own database,
dropped afterwards. If the server cannot be reached the tests fail; they never skip.
"""

from __future__ import annotations

import gc
import logging
import os
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import argon2
import pymongo
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from service.app import make_app
from service.config import Settings
from service.db import CommandCounter, connect, ensure_indexes
from service.embedded import EmbeddedDatabase
from service.store import owners
from service.wechat_client import WeChatSide

TOKEN = "test-token"
APP_ID = "wx1234567890abcdef"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"  # 43 characters, as WeChat generates

# Fixture plugins of other parts of the suite (one line each).
pytest_plugins = [
    "tests.dashboard_fixtures",
    "tests.fake_wechat_api_fixtures",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--event-loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="the event loop of the in-process tests (pytest-tornado's io_loop); default asyncio",
    )


def pytest_configure(config: pytest.Config) -> None:
    # The suite stays on asyncio's loop unless asked: `serve` chooses its loop itself
    # (EVENT_LOOP, service/eventloop.py) and installs no policy, and tests/test_event_loop.py
    # starts `serve` on each loop. pytest-tornado's io_loop makes its loops through the policy,
    # so `--event-loop uvloop` runs the in-process tests on uvloop too.
    if config.getoption("--event-loop") == "uvloop":
        import asyncio

        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


@pytest.fixture(autouse=True)
def _collect_known_socket_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests marked ``leaks_sockets`` collect, at their end, a socket a library left unclosed.

    Otherwise the garbage collector finds it during a later test, where ``filterwarnings =
    error`` turns its ResourceWarning into that innocent test's failure. Only the marked tests
    are forgiven, and only unclosed-socket warnings.
    """
    yield
    if request.node.get_closest_marker("leaks_sockets") is None:
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "unclosed <socket", ResourceWarning)
        gc.collect()


@pytest.fixture(autouse=True)
def _no_uncaught_handler_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail a test whose request raised an uncaught exception (Tornado logs it, not raises)."""
    yield
    errors = [
        r
        for r in caplog.get_records("call")
        if r.name == "tornado.application" and r.levelno >= logging.ERROR
    ]
    assert not errors, "uncaught errors in handlers:\n" + "\n".join(
        f"{r.getMessage()} {r.exc_text or ''}" for r in errors
    )


# The same argon2id, at its lowest cost: the service's own parameters spend about 0.4 s of CPU on
# each hash and each check, and hundreds of tests log in, which is CPU the suite spends proving
# nothing about the code. The hash stays a real argon2id hash through the same functions;
# services the tests start as subprocesses keep the real cost (and rehash such a password at its
# first login, as they would after a change of parameters). Tests marked
# ``real_password_hash`` (the throttle's concurrency tests) keep the service's parameters.
CHEAP_HASHER = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture(autouse=True)
def _cheap_password_hash(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.node.get_closest_marker("real_password_hash") is not None:
        yield
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(owners, "_hasher", CHEAP_HASHER)
        yield


@pytest.fixture(scope="session")
def mongo_uri() -> Iterator[str]:
    """One server per pytest process: with pytest-xdist (``make test``), one for each worker."""
    uri = os.environ.get("MONGODB_URI")
    if uri:
        yield uri
        return
    server = EmbeddedDatabase(None)
    server.start()
    try:
        yield server.uri
    finally:
        # In memory, so there is nothing to flush: a kill saves the 2 to 5 s that SecantusDB
        # takes to stop after SIGTERM (stop() then only collects the process).
        if server.process is not None and server.process.poll() is None:
            server.process.kill()
        server.stop()


@pytest.fixture
def settings(mongo_uri: str, tmp_path: Any) -> Settings:
    return Settings(
        wechat_token=TOKEN,
        app_id=APP_ID,
        encoding_aes_key=AES_KEY,
        message_mode="compat",  # the tests send plaintext and encrypted requests alike
        mongodb_uri=mongo_uri,
        mongodb_db=f"test_{uuid.uuid4().hex[:12]}",
        cookie_secret="test-cookie-secret",
        data_dir=tmp_path / "data",
    )


@pytest.fixture
def db_counter() -> CommandCounter:
    return CommandCounter()


@pytest.fixture
def db(
    io_loop: Any, settings: Settings, db_counter: CommandCounter
) -> Iterator[AsyncDatabase[Any]]:
    """A fresh database on the test server, with indexes, dropped after the test."""
    client, database = connect(settings, counter=db_counter)
    io_loop.run_sync(lambda: ensure_indexes(database))
    yield database

    # The async client may have sat idle while the loop did not run (a synchronous test): close
    # it, then drop with a synchronous client, which does not depend on its state.
    io_loop.run_sync(client.close)
    sync: pymongo.MongoClient[dict[str, Any]]
    with pymongo.MongoClient(settings.mongodb_uri, serverSelectionTimeoutMS=10000) as sync:
        sync.drop_database(database.name)


@pytest.fixture
def app_extra() -> dict[str, Any]:
    """Extra application settings for ``app``; override in a test module to change them."""
    return {}


@pytest.fixture
def app(
    io_loop: Any, settings: Settings, db: AsyncDatabase[Any], app_extra: dict[str, Any]
) -> Iterator[Any]:
    application = make_app(settings, db=db, **app_extra)
    yield application

    io_loop.run_sync(application.settings["process"].close)


@pytest.fixture
def wechat() -> WeChatSide:
    """WeChat's side: builds, signs and encrypts messages, opens our replies."""
    return WeChatSide(TOKEN, encoding_aes_key=AES_KEY, app_id=APP_ID)


@pytest.fixture
def send(http_client: Any, base_url: str, wechat: WeChatSide) -> Any:
    """``await send(xml, mode="plain")`` → (HTTP response, opened reply dict)."""

    async def _send(
        xml: str, mode: str = "plain", *, raise_error: bool = True
    ) -> tuple[Any, dict[str, Any]]:
        signed = wechat.sign(xml, mode)
        response = await http_client.fetch(
            signed.url(base_url), method="POST", body=signed.body, raise_error=raise_error
        )
        opened = wechat.open_reply(response.body) if response.code == 200 else {}
        return response, opened

    return _send
