"""HTTP-level limits of ``/wechat``: body size on every path (413, logged, counted), and the
header and body timeouts of ``http_server_options`` against slow clients (issue 14).

Raw sockets, so the test controls exactly what goes on the wire and when.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import tornado.httpserver
import tornado.netutil

from service.config import Settings, http_server_options
from service.wechat_client import WeChatSide

LIMIT = 2000


@pytest.fixture
def port(http_server: Any, http_port: int) -> int:
    """The port of pytest-tornado's server for ``app`` (``http_port`` alone does not start it)."""
    return http_port


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The suite's settings with a small body limit."""
    return settings.replace(max_body_bytes=LIMIT)


async def _exchange(port: int, data: bytes) -> bytes:
    """Send ``data``, then read until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=20)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def _head(signed: Any, **headers: str) -> bytes:
    lines = [f"POST {signed.url('', '/wechat')} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def _wechat_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "handlers.wechat"]


@pytest.mark.gen_test
async def test_a_chunked_body_over_the_limit_is_413_logged_and_counted(
    port: int, app: Any, db: Any, wechat: WeChatSide, caplog: pytest.LogCaptureFixture
) -> None:
    signed = wechat.sign(wechat.text("user-big", "x" * (2 * LIMIT), msg_id=9500))
    # One chunk over the limit and nothing after it: the server has read all that was sent when
    # it answers, so its close is a clean FIN and the 413 cannot be lost to a reset.
    body = signed.body
    data = _head(signed, Transfer_Encoding="chunked") + b"%x\r\n" % len(body) + body
    with caplog.at_level(logging.INFO, logger="handlers.wechat"):
        answer = await _exchange(port, data)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:100]
    metrics = app.settings["metrics"]
    assert metrics.value("wechat_survey_refused_total", reason="too-large") == 1
    assert metrics.value("wechat_survey_requests_total", outcome="too-large") == 1
    lines = _wechat_lines(caplog)
    assert len(lines) == 1 and "status=413 outcome=too-large" in lines[0], lines
    assert signed.query["signature"] not in lines[0]
    assert await db.messages.count_documents({}) == 0


@pytest.mark.gen_test
async def test_a_chunked_body_under_the_limit_is_answered(
    port: int, db: Any, wechat: WeChatSide
) -> None:
    signed = wechat.sign(wechat.text("user-small", "你好", msg_id=9501))
    half = len(signed.body) // 2
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(c), c) for c in (signed.body[:half], signed.body[half:])
    )
    data = _head(signed, Transfer_Encoding="chunked", Connection="close") + chunks + b"0\r\n\r\n"
    answer = await _exchange(port, data)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    assert await db.messages.count_documents({"_id": "msg:9501"}) == 1


@pytest.mark.gen_test
async def test_a_declared_length_over_the_limit_is_413_logged_and_counted(
    port: int, app: Any, wechat: WeChatSide, caplog: pytest.LogCaptureFixture
) -> None:
    signed = wechat.sign(wechat.text("user-big", "hi"))
    with caplog.at_level(logging.INFO, logger="handlers.wechat"):
        answer = await _exchange(port, _head(signed, Content_Length=str(LIMIT + 1)))
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:100]
    assert app.settings["metrics"].value("wechat_survey_refused_total", reason="too-large") == 1
    assert ["status=413 outcome=too-large" in line for line in _wechat_lines(caplog)] == [True]


# -- slow clients -------------------------------------------------------------------------------


def test_http_server_options_follow_the_settings(settings: Settings) -> None:
    options = http_server_options(
        settings.replace(idle_connection_timeout=12.0, body_timeout=3.0, xheaders=False)
    )
    assert options == {
        "xheaders": False,
        "max_body_size": 8 * 1024 * 1024,
        "idle_connection_timeout": 12.0,
        "body_timeout": 3.0,
    }


@contextlib.asynccontextmanager
async def _server(app: Any, settings: Settings) -> AsyncIterator[int]:
    """A real HTTPServer on loopback built from ``http_server_options`` (as ``serve`` does)."""
    options = http_server_options(settings.replace(idle_connection_timeout=0.5, body_timeout=0.5))
    server = tornado.httpserver.HTTPServer(app, **options)
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server.add_sockets(sockets)
    try:
        yield sockets[0].getsockname()[1]
    finally:
        server.stop()
        await server.close_all_connections()


async def _trickle_until_closed(port: int, first: bytes, drip: bytes) -> float:
    """Send ``first``, then one byte of ``drip`` every 50 ms, until the server closes the
    connection; return how long that took. The test waits for the close, not for a time."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()

    async def drip_bytes() -> None:
        writer.write(first)
        for byte in drip:
            await asyncio.sleep(0.05)
            writer.write(bytes([byte]))
            await writer.drain()

    dripping = asyncio.ensure_future(drip_bytes())
    try:
        try:
            # Closed: end of stream (the 20 s are only a bound for a broken server).
            received = await asyncio.wait_for(reader.read(), timeout=20)
        except ConnectionResetError:  # closed while we were still writing
            received = b""
        assert received == b"" or b" 408 " in received or b" 400 " in received, received
        return time.monotonic() - started
    finally:
        dripping.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await dripping
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@pytest.mark.gen_test
async def test_slowloris_headers_are_cut_off_by_the_idle_connection_timeout(
    app: Any, settings: Settings
) -> None:
    async with _server(app, settings) as port:
        head = b"POST /wechat?signature=x HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        elapsed = await _trickle_until_closed(port, head, b"X-Slow: " + b"a" * 10_000)
    assert elapsed >= 0.5  # closed by the timeout, not by anything else


@pytest.mark.gen_test
async def test_a_slow_body_is_cut_off_by_the_body_timeout(
    app: Any, settings: Settings, db: Any, wechat: WeChatSide
) -> None:
    signed = wechat.sign(wechat.text("user-slow", "慢慢来", msg_id=9502))
    async with _server(app, settings) as port:
        head = _head(signed, Content_Length=str(len(signed.body)))
        elapsed = await _trickle_until_closed(port, head, signed.body)
    assert elapsed >= 0.5
    assert await db.messages.count_documents({}) == 0
