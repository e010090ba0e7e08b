"""Past one machine (issue 14): two ``serve`` processes as two hosts on one database.

Each host has its own ``DATA_DIR`` (its spool) and address; host A reaches the database through
a TCP proxy the test can cut, as a network partition would, while host B keeps its own path.
Both answer with ``REPLY_BUDGET`` so small that every reply is late and goes out as a
customer-service message: that makes each host use the WeChat API (the fake one), so the shared
access_token, and the rule that a message's reply is sent once, are both exercised across hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from service.embedded import free_port
from service.store import owners
from service.wechat_client import WeChatSide
from tests.conftest import TOKEN
from tests.dashboard_fixtures import OWNER, PASSWORD, Session, next_event
from tests.fake_wechat_api import FAKE_APP_ID, FAKE_APP_SECRET
from tests.ops_helpers import until
from tests.test_shutdown import Service

pytestmark = pytest.mark.slow


class Partition:
    """A TCP proxy to the database that can be cut (every connection dropped, new ones refused)
    and restored on the same port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.difference_update((writer, up_writer))


class Host(Service):
    """``python -m service serve`` with its own DATA_DIR and port, waited for without blocking
    the loop (the proxy and the fake API run on it)."""

    def __init__(self, name: str, tmp_path: Path, mongodb_uri: str, database: str, api: str):
        self.name = name
        folder = tmp_path / name
        folder.mkdir()
        super().__init__(
            folder,
            WECHAT_APP_ID=FAKE_APP_ID,
            WECHAT_APP_SECRET=FAKE_APP_SECRET,
            WECHAT_API_BASE=api,
            MONGODB_URI=mongodb_uri,
            MONGODB_DB=database,
            DATA_DIR=str(folder / "data"),
            REPLY_BUDGET="0.001",
        )

    async def status(self) -> dict[str, Any]:
        import json

        response = await AsyncHTTPClient().fetch(f"{self.url}/healthz", raise_error=False)
        return dict(json.loads(response.body))

    async def ready(self) -> None:
        async def up() -> bool:
            assert self.process.poll() is None, f"host {self.name} exited:\n{self.log}"
            try:
                await self.status()
            except (OSError, HTTPClientError, ValueError):
                return False
            return True

        await until(up, timeout=90, every=0.2)

    async def shut_down(self) -> None:
        """SIGTERM and wait without blocking the loop (the proxy and the fake API run on it)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                await until(lambda: self.process.poll() is not None, timeout=30)
            except AssertionError:
                self.process.kill()
                self.process.wait(10)


async def post(host: Host, signed: Any) -> bytes:
    response = await AsyncHTTPClient().fetch(
        signed.url(host.url), method="POST", body=signed.body, request_timeout=10
    )
    assert response.code == 200
    return bytes(response.body)


@pytest.mark.gen_test(timeout=240)
async def test_two_hosts_share_messages_the_token_and_the_live_feed(
    tmp_path, settings, db, fake_wechat_api
):
    parsed = urlsplit(settings.mongodb_uri)
    assert parsed.hostname and parsed.port
    partition = Partition(parsed.hostname, parsed.port)
    await partition.open()
    via_proxy = settings.mongodb_uri.replace(f":{parsed.port}/", f":{partition.port}/", 1)
    name = settings.mongodb_db
    api = fake_wechat_api.base_url
    a = Host("host-a", tmp_path, via_proxy, name, api)
    b = Host("host-b", tmp_path, settings.mongodb_uri, name, api)
    wechat = WeChatSide(TOKEN)
    stack = contextlib.ExitStack()
    try:
        await asyncio.gather(a.ready(), b.ready())
        await owners.create(db, OWNER, PASSWORD)
        dashboard = Session(AsyncHTTPClient(), a.url)
        assert (await dashboard.login()).code == 302
        ws = await dashboard.websocket()
        stack.callback(ws.close)
        await next_event(ws, kind="hello")

        # The first message on each host, at once: both need an access_token; one is fetched.
        first = [
            wechat.sign(wechat.text(f"user-host-{h.name}", "你好", msg_id=7_100_000 + i))
            for i, h in enumerate((a, b))
        ]
        answers = await asyncio.gather(post(a, first[0]), post(b, first[1]))
        assert answers == [b"success", b"success"]  # the budget is tiny: every reply is late
        await until(lambda: len(fake_wechat_api.sent) == 2, timeout=30)
        assert fake_wechat_api.token_fetches == 1, "the hosts share one access_token"

        # The live feed on host A shows the messages both hosts answered.
        seen: dict[str, str] = {}
        while len(seen) < 2:
            event = await next_event(ws, kind="message", timeout=30)
            seen[event["message"]["openid"]] = event["message"]["process"]
        assert seen.keys() == {"user-host-host-a", "user-host-host-b"}
        assert len(set(seen.values())) == 2, "answered by two different processes"

        # WeChat retries a message on the other host: stored once, its reply sent once.
        xml = wechat.text("user-retry", "重试", msg_id=7_100_010)
        assert await post(a, wechat.sign(xml)) == b"success"
        assert await post(b, wechat.sign(xml)) == b"success"
        await until(
            lambda: db.messages.count_documents({"_id": "msg:7100010", "delivery_status": "sent"})
        )
        assert await db.messages.count_documents({"openid": "user-retry"}) == 1
        assert [m["touser"] for m in fake_wechat_api.sent].count("user-retry") == 1

        # Host A loses the database (only A): it answers and spools; B answers as usual.
        await partition.cut()
        for i in range(3):
            signed = wechat.sign(wechat.text("user-cut-a", f"断网 {i}", msg_id=7_100_100 + i))
            assert await post(a, signed) == b"success"
        await until(lambda: _backlog(a, 3), timeout=30)
        for i in range(3):
            signed = wechat.sign(wechat.text("user-on-b", f"正常 {i}", msg_id=7_100_200 + i))
            assert await post(b, signed) == b"success"
        await until(lambda: _count(db, "user-on-b", 3), timeout=30)  # stored after the answer
        assert (await b.status())["spool"]["backlog"] == 0
        assert await db.messages.count_documents({"openid": "user-cut-a"}) == 0

        # A's path comes back: its spool is replayed, each message stored once, all answered.
        await partition.open()
        await until(lambda: _count(db, "user-cut-a", 3), timeout=60)
        await until(lambda: _backlog(a, 0), timeout=60)
        sent_to = [m["touser"] for m in fake_wechat_api.sent]
        assert sent_to.count("user-cut-a") == 3 and sent_to.count("user-on-b") == 3
    finally:
        stack.close()
        await asyncio.gather(a.shut_down(), b.shut_down())
        with contextlib.suppress(AssertionError):
            await partition.cut()
    for host in (a, b):
        assert host.process.returncode == 0, host.log
        assert "Traceback" not in host.log, host.log


async def _count(db: Any, openid: str, expected: int) -> bool:
    return bool(await db.messages.count_documents({"openid": openid}) == expected)


async def _backlog(host: Host, expected: int) -> bool:
    return bool((await host.status())["spool"]["backlog"] == expected)
