"""The load generator: raw HTTP/1.1 keep-alive connections driven by asyncio, in its own process.

``bench/run.py`` starts one of these per measured cell (workload x concurrency x repeat), pinned
to a core the servers do not use, and talks to it over stdin/stdout, one JSON object a line:

1. run.py writes the spec (workload, concurrency, warm-up, window, keys, ...);
2. load.py warms up, pre-signs the requests of the measured window (signing is never timed),
   prints ``{"event": "window-start"}`` and waits for an ``ack`` line (run.py reads the service's
   database counter then), runs the window, drains in-flight requests, prints
   ``{"event": "window-end"}`` and waits for the ``ack`` again;
3. it prints ``{"event": "result", ...}`` and exits.

Every response is checked cheaply while the clock runs (status, reply shape) and a sample is
opened after the window the way WeChat does (decrypted in safe mode, greeting and addressee
checked). Anything unexpected counts as an error; the target is zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from service.bot import GREETINGS  # noqa: E402
from service.wechat_client import WeChatSide  # noqa: E402

# The greeting's text, as it appears in a plaintext reply.
GREETING_BYTES = tuple(g.encode("utf-8") for g in GREETINGS)
PROGRESS = re.compile(r"第\s*(\d+)\s*/\s*(\d+)\s*题")
VERIFY_SAMPLE = 300


def percentile(ordered: list[float], p: float) -> float | None:
    """The ``p`` quantile (0..1) of an ascending list, by the nearest-rank method."""
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 3)


class ProtocolFailure(Exception):
    """The connection broke or the server sent something that is not HTTP/1.1."""


class Connection(asyncio.Protocol):
    """One keep-alive connection; ``request(raw)`` sends a whole request, returns (status, body)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.need = -1
        self.head_end = -1
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ProtocolFailure(f"connection lost: {exc}"))

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if self.need < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            at = head.find(b"\r\ncontent-length:")
            if at < 0:
                self._fail("response without Content-Length")
                return
            stop = head.find(b"\r\n", at + 2)
            length = int(head[at + 17 : stop if stop >= 0 else len(head)])
            self.head_end = end + 4
            self.need = self.head_end + length
        if len(buf) >= self.need:
            status = int(buf[9:12])
            body = bytes(buf[self.head_end : self.need])
            del buf[: self.need]
            self.need = -1
            waiter, self.waiter = self.waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_result((status, body))

    def _fail(self, reason: str) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(ProtocolFailure(reason))
        if self.transport is not None:
            self.transport.close()

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.transport is None:
            raise ProtocolFailure("connection is closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.waiter


async def connect(host: str, port: int) -> Connection:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(Connection, host, port)
    return protocol


def http_post(host: str, port: int, query: dict[str, str], body: bytes) -> bytes:
    head = (
        f"POST /wechat?{urlencode(query)} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: text/xml\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


@dataclass
class Item:
    """One pre-signed request and what is needed to check its reply."""

    raw: bytes
    openid: str
    query: dict[str, str] = field(default_factory=dict)


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    elapsed: float = 0.0
    samples: list[tuple[Item, bytes]] = field(default_factory=list)
    messages: int = 0

    def error(self, kind: str) -> None:
        self.errors[kind] += 1

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def pct(p: float) -> float | None:
            return percentile(lat, p)

        return {
            "requests": self.requests,
            "messages": self.messages or self.requests,
            "elapsed": round(self.elapsed, 4),
            "rps": round(self.requests / self.elapsed, 1) if self.elapsed else 0.0,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "max_ms": round(lat[-1], 3) if lat else None,
            "errors": sum(self.errors.values()),
            "error_kinds": dict(self.errors),
        }


class Source:
    """Pre-signed requests first, then (if the window outruns the pool) signed on the fly."""

    def __init__(self, make: Callable[[int], Item], start: int = 0) -> None:
        self.make = make
        self.next_index = start
        self.pool: list[Item] = []
        self.position = 0
        self.made_on_the_fly = 0

    def fill(self, count: int) -> None:
        self.pool = [self.make(self.next_index + i) for i in range(count)]
        self.next_index += count
        self.position = 0

    def take(self) -> Item:
        if self.position < len(self.pool):
            item = self.pool[self.position]
            self.position += 1
            return item
        self.made_on_the_fly += 1
        item = self.make(self.next_index)
        self.next_index += 1
        return item


class Load:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.host: str = spec.get("host", "127.0.0.1")
        self.port: int = int(spec["port"])
        self.workload: str = spec["workload"]
        self.mode: str = spec.get("mode", "plain")
        self.concurrency = int(spec["concurrency"])
        self.warmup = float(spec.get("warmup", 2.0))
        self.duration = float(spec.get("duration", 10.0))
        self.rng = random.Random(spec.get("seed", 1))
        self.side = WeChatSide(
            spec["token"],
            encoding_aes_key=spec.get("aes_key", ""),
            app_id=spec.get("app_id", ""),
            account=spec.get("account", "gh_bench"),
        )
        self.prefix: str = spec.get("openid_prefix", "sim-bench-")
        self.users = int(spec.get("users", 10_000))
        self.msg_id_base = int(spec.get("msg_id_base", 25_000_000_000_000_000))

    # -- requests -----------------------------------------------------------------------------
    def text_item(self, index: int) -> Item:
        openid = f"{self.prefix}{self.rng.randrange(self.users)}"
        xml = self.side.text(openid, f"今天也要加油 {index}", msg_id=self.msg_id_base + index)
        signed = self.side.sign(xml, self.mode)
        raw = http_post(self.host, self.port, signed.query, signed.body)
        return Item(raw, openid, signed.query)

    # -- checks -------------------------------------------------------------------------------
    def check_greeting(self, status: int, body: bytes, stats: Stats) -> bool:
        if status != 200:
            stats.error(f"http-{status}")
            return False
        if self.mode == "plain":
            if b"<MsgType><![CDATA[text]]></MsgType>" not in body or not any(
                g in body for g in GREETING_BYTES
            ):
                stats.error("not-a-greeting")
                return False
        elif not body.startswith(b"<xml><Encrypt>"):
            stats.error("not-encrypted")
            return False
        return True

    def verify_samples(self, stats: Stats) -> int:
        """Open a sample of replies the way WeChat does; wrong ones count as errors."""
        verified = 0
        for item, body in stats.samples:
            try:
                reply = self.side.open_reply(body, item.query)
            except Exception as e:
                stats.error(f"unreadable-reply:{type(e).__name__}")
                continue
            if reply.get("ToUserName") != item.openid or reply.get("Content") not in GREETINGS:
                stats.error("wrong-reply")
                continue
            verified += 1
        return verified

    # -- phases -------------------------------------------------------------------------------
    async def mark(self, event: str) -> None:
        print(json.dumps({"event": event}), flush=True)
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        if line.strip() != "ack":
            raise SystemExit(f"expected ack after {event}, got {line!r}")

    async def closed_loop(
        self,
        conns: list[Connection],
        source: Source,
        seconds: float,
        *,
        record: bool,
        limit: int | None = None,
    ) -> Stats:
        """Each connection sends its next request as soon as the previous reply is in.

        Runs for ``seconds``, or until ``limit`` requests have been sent.
        """
        stats = Stats()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        sample_every = max(1, int(len(source.pool) / VERIFY_SAMPLE)) if record else 0
        check = self.workload != "ref"
        clock = time.perf_counter
        sent = 0

        async def worker(conn: Connection) -> None:
            nonlocal sent
            while loop.time() < deadline and (limit is None or sent < limit):
                sent += 1
                item = source.take()
                t0 = clock()
                try:
                    status, body = await conn.request(item.raw)
                except ProtocolFailure as e:
                    stats.error(str(e).split(":")[0])
                    return
                stats.latencies.append((clock() - t0) * 1000.0)
                stats.requests += 1
                if check:
                    ok = self.check_greeting(status, body, stats)
                    sampled = record and stats.requests % sample_every == 0
                    if ok and sampled and len(stats.samples) < VERIFY_SAMPLE:
                        stats.samples.append((item, body))
                elif status != 200:
                    stats.error(f"http-{status}")

        started = clock()
        await asyncio.gather(*(worker(c) for c in conns))
        stats.elapsed = clock() - started
        return stats

    async def retry_storm(self, conns: list[Connection], source: Source, seconds: float) -> Stats:
        """Every message three times at once, on three connections; the replies must be equal."""
        stats = Stats()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        clock = time.perf_counter
        width = min(3, len(conns))
        groups = [conns[i : i + width] for i in range(0, len(conns) - width + 1, width)]

        async def timed(conn: Connection, raw: bytes) -> tuple[int, bytes]:
            t0 = clock()
            result = await conn.request(raw)
            stats.latencies.append((clock() - t0) * 1000.0)
            stats.requests += 1
            return result

        async def group(members: list[Connection]) -> None:
            while loop.time() < deadline:
                item = source.take()
                try:
                    if len(members) == 3:
                        replies = await asyncio.gather(*(timed(c, item.raw) for c in members))
                    else:  # one connection: the retries arrive one after the other
                        replies = [await timed(members[0], item.raw) for _ in range(3)]
                except ProtocolFailure as e:
                    stats.error(str(e).split(":")[0])
                    return
                stats.messages += 1
                if not all(self.check_greeting(s, b, stats) for s, b in replies):
                    continue
                if len({b for _, b in replies}) != 1:
                    stats.error("retries-got-different-replies")

        started = clock()
        await asyncio.gather(*(group(g) for g in groups))
        stats.elapsed = clock() - started
        return stats

    async def survey(self, conns: list[Connection], survey: dict[str, Any]) -> dict[str, Any]:
        """``users`` users each take the whole survey; connections take users from a queue."""
        keyword: str = survey["keyword"]
        options: list[int] = survey["options"]
        questions = len(options)
        counter = iter(range(10**9))

        def conversation(user: int, tag: str) -> tuple[Item, dict[int, Item]]:
            openid = f"{self.prefix}{tag}-{user}"

            def signed(text: str) -> Item:
                xml = self.side.text(openid, text, msg_id=self.msg_id_base + next(counter))
                s = self.side.sign(xml, "plain")
                return Item(http_post(self.host, self.port, s.query, s.body), openid, s.query)

            start = signed(keyword)
            answers = {
                q: signed(str(self.rng.randint(1, max(1, options[q - 1]))))
                for q in range(1, questions + 1)
            }
            return start, answers

        async def take(
            conn: Connection, start: Item, answers: dict[int, Item], stats: Stats
        ) -> None:
            item = start
            seen: set[int] = set()
            for _ in range(questions + 2):
                t0 = time.perf_counter()
                status, body = await conn.request(item.raw)
                stats.latencies.append((time.perf_counter() - t0) * 1000.0)
                stats.requests += 1
                if status != 200 or b"<MsgType><![CDATA[text]]></MsgType>" not in body:
                    stats.error(f"http-{status}" if status != 200 else "not-text")
                    return
                found = PROGRESS.search(body.decode("utf-8"))
                if found is None:
                    if len(seen) < 1:
                        stats.error("survey-did-not-start")
                    return  # the result: this user is done
                number = int(found.group(1))
                if number in seen or number not in answers:
                    stats.error("survey-question-repeated")
                    return
                seen.add(number)
                item = answers[number]
            stats.error("survey-did-not-finish")

        async def run(users: list[tuple[Item, dict[int, Item]]]) -> Stats:
            stats = Stats()
            queue: asyncio.Queue[tuple[Item, dict[int, Item]]] = asyncio.Queue()
            for user in users:
                queue.put_nowait(user)

            async def worker(conn: Connection) -> None:
                while not queue.empty():
                    start, answers = queue.get_nowait()
                    try:
                        await take(conn, start, answers, stats)
                    except ProtocolFailure as e:
                        stats.error(str(e).split(":")[0])
                        return
                    stats.messages += 1

            started = time.perf_counter()
            await asyncio.gather(*(worker(c) for c in conns))
            stats.elapsed = time.perf_counter() - started
            return stats

        tag = self.spec.get("run_tag", "s")
        warm = [conversation(u, f"{tag}w") for u in range(int(survey.get("warmup_users", 20)))]
        await run(warm)
        users = [conversation(u, tag) for u in range(int(survey["users"]))]
        await self.mark("window-start")
        stats = await run(users)
        await self.mark("window-end")
        result = stats.summary()
        result["users_completed"] = stats.messages
        result["messages"] = stats.requests
        return result

    async def live(self, conns: list[Connection], live: dict[str, Any]) -> dict[str, Any]:
        """Delay from our reply to its event on a logged-in dashboard WebSocket.

        Two phases: ``light`` (one connection, a message every ``interval`` seconds) and
        ``busy`` (every connection, closed loop). Every message must show up on the socket.
        """
        from tornado.httpclient import AsyncHTTPClient, HTTPRequest
        from tornado.websocket import websocket_connect

        base = f"http://{self.host}:{self.port}"
        client = AsyncHTTPClient()
        cookies: dict[str, str] = {}

        def keep(response: Any) -> None:
            for header in response.headers.get_list("Set-Cookie"):
                name, _, rest = header.partition("=")
                cookies[name.strip()] = rest.split(";", 1)[0]

        def cookie_header() -> str:
            return "; ".join(f"{k}={v}" for k, v in cookies.items())

        keep(await client.fetch(f"{base}/dashboard/login", raise_error=False))
        form = urlencode(
            {
                "name": live["owner"],
                "password": live["password"],
                "_xsrf": cookies.get("_xsrf", ""),
                "next": "/dashboard/",
            }
        )
        response = await client.fetch(
            f"{base}/dashboard/login",
            method="POST",
            body=form,
            raise_error=False,
            follow_redirects=False,
            headers={"Cookie": cookie_header()},
        )
        if response.code not in (200, 302):
            raise SystemExit(f"dashboard login failed with {response.code}")
        keep(response)
        socket = await websocket_connect(
            HTTPRequest(
                f"ws://{self.host}:{self.port}/dashboard/ws", headers={"Cookie": cookie_header()}
            )
        )
        arrived: dict[str, float] = {}
        pending: set[str] = set()
        all_in = asyncio.Event()
        hello = asyncio.get_running_loop().create_future()

        async def reader() -> None:
            while True:
                text = await socket.read_message()
                if text is None:
                    return
                now = time.perf_counter()
                event = json.loads(text)
                if event.get("type") == "hello" and not hello.done():
                    hello.set_result(None)
                elif event.get("type") == "message":
                    key = event["message"]["id"]
                    arrived.setdefault(key, now)
                    pending.discard(key)
                    if not pending:
                        all_in.set()

        reading = asyncio.get_running_loop().create_task(reader())
        await asyncio.wait_for(hello, 30)
        replied: dict[str, float] = {}
        stats = Stats()

        async def send(conn: Connection, item: Item) -> None:
            status, body = await conn.request(item.raw)
            replied[item.openid] = time.perf_counter()
            stats.requests += 1
            self.check_greeting(status, body, stats)

        def message_item(index: int) -> Item:
            msg_id = self.msg_id_base + index
            openid = f"{self.prefix}{self.rng.randrange(self.users)}"
            signed = self.side.sign(self.side.text(openid, f"实时 {index}", msg_id=msg_id))
            # ``openid`` carries the message key here: that is what the event is matched by.
            return Item(http_post(self.host, self.port, signed.query, signed.body), f"msg:{msg_id}")

        async def phase(items: list[Item], width: int, interval: float) -> dict[str, Any]:
            queue = list(reversed(items))

            async def worker(conn: Connection) -> None:
                while queue:
                    await send(conn, queue.pop())
                    if interval:
                        await asyncio.sleep(interval)

            await asyncio.gather(*(worker(c) for c in conns[:width]))
            keys = [i.openid for i in items]
            pending.update(k for k in keys if k not in arrived)
            if pending:
                all_in.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(all_in.wait(), 10)
            delays = sorted((arrived[k] - replied[k]) * 1000 for k in keys if k in arrived)
            missing = sum(1 for k in keys if k not in arrived)
            if missing:
                stats.error("live-event-missing")
            return {
                "messages": len(items),
                "missing": missing,
                "p50_ms": percentile(delays, 0.5),
                "p99_ms": percentile(delays, 0.99),
                "max_ms": round(delays[-1], 2) if delays else None,
                "connections": width,
            }

        light_items = [message_item(i) for i in range(int(live["light"]))]
        busy_items = [message_item(10**6 + i) for i in range(int(live["busy"]))]
        await self.mark("window-start")
        light = await phase(light_items, 1, float(live.get("interval", 0.02)))
        busy = await phase(busy_items, len(conns), 0.0)
        await self.mark("window-end")
        socket.close()
        reading.cancel()
        client.close()
        return {
            "light": light,
            "busy": busy,
            "requests": stats.requests,
            "errors": sum(stats.errors.values()),
            "error_kinds": dict(stats.errors),
        }

    async def main(self) -> dict[str, Any]:
        conns = [await connect(self.host, self.port) for _ in range(self.concurrency)]
        try:
            if self.workload == "live":
                return await self.live(conns, self.spec["live"])
            if self.workload == "soak":
                source = Source(self.text_item)
                count = int(self.spec["requests"])
                source.fill(count)
                stats = await self.closed_loop(conns, source, 3600.0, record=False, limit=count)
                result = stats.summary()
                result["connections"] = len(conns)
                return result
            if self.workload == "survey":
                result = await self.survey(conns, self.spec["survey"])
                result["connections"] = len(conns)
                return result
            source = Source(self.text_item)
            storm = self.workload == "retry"
            phase = (
                self.retry_storm
                if storm
                else (lambda c, s, t: self.closed_loop(c, s, t, record=False))
            )
            warm = await phase(conns, source, self.warmup)
            rate = (warm.messages or warm.requests) / max(warm.elapsed, 1e-3)
            if self.workload == "ref":
                source.fill(2000)  # the reference ignores the body: a cycled pool is enough
                pool: list[Item] = source.pool
                source.make = lambda i: pool[i % len(pool)]
            else:
                source.fill(int(rate * self.duration * 2.5) + 500)
            await self.mark("window-start")
            if storm:
                stats = await self.retry_storm(conns, source, self.duration)
            else:
                stats = await self.closed_loop(conns, source, self.duration, record=True)
            await self.mark("window-end")
            result = stats.summary()
            result["verified"] = self.verify_samples(stats) if self.workload != "ref" else 0
            result["errors"] = sum(stats.errors.values())
            result["error_kinds"] = dict(stats.errors)
            result["signed_in_window"] = source.made_on_the_fly if self.workload != "ref" else 0
            used = sum(len(g) for g in [conns[i : i + 3] for i in range(0, len(conns) - 2, 3)])
            result["connections"] = (used or len(conns)) if storm else len(conns)
            return result
        finally:
            for conn in conns:
                if conn.transport is not None:
                    conn.transport.close()


def main() -> None:
    spec = json.loads(sys.stdin.readline())
    result = asyncio.run(Load(spec).main())
    print(json.dumps({"event": "result", **result}), flush=True)


if __name__ == "__main__":
    main()
