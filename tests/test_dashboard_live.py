"""Live traffic: the WebSocket feed, gap filling, and delivery across two application instances."""

from __future__ import annotations

import asyncio
import datetime as dt
import os

import pytest
import tornado.httpserver
import tornado.testing

from service.app import make_app
from service.db import connect
from service.live import Hub, Listener
from service.store import messages
from tests.dashboard_fixtures import next_event
from tests.ops_helpers import until
from tests.test_dashboard_api import message_doc


@pytest.mark.gen_test(timeout=60)
async def test_websocket_delivers_each_message_and_reply(logged_in, send, wechat):
    ws = await logged_in.websocket()
    hello = await next_event(ws, kind="hello")
    assert hello["mode"] == "change-stream"
    _, reply = await send(wechat.text("live-user", "实时消息测试"), "aes")
    event = await next_event(ws, kind="message")
    m = event["message"]
    assert m["openid"] == "live-user"
    assert m["type"] == "text" and m["kind"] == "text"
    assert m["text"] == "实时消息测试"
    assert m["reply"] == reply["Content"]
    assert m["mode"] == "aes"
    assert m["latency_ms"] >= 0
    assert m["received_at"].endswith("Z")
    await send(wechat.event("live-user", "subscribe"))
    event = await next_event(ws, kind="message")
    assert event["message"]["kind"] == "event:subscribe"
    ws.close()


@pytest.mark.gen_test(timeout=60)
async def test_reconnect_fills_the_gap(logged_in, send, wechat):
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    await send(wechat.text("gap-user", "while you were away 1"))
    await send(wechat.text("gap-user", "while you were away 2"))
    since = before.isoformat().replace("+00:00", "Z")
    ws = await logged_in.websocket(f"?since={since}")
    backlog = await next_event(ws, kind="backlog")
    assert [m["text"] for m in backlog["messages"]] == [
        "while you were away 1",
        "while you were away 2",
    ]
    assert backlog["truncated"] is False
    await next_event(ws, kind="hello")
    ws.close()


@pytest.mark.gen_test(timeout=60)
async def test_unsubscribes_when_the_page_goes_away(logged_in, app):
    hub: Hub = app.settings["hub"]
    ws = await logged_in.websocket()
    await next_event(ws, kind="hello")
    assert hub.subscribers == 1
    ws.close()
    await until(lambda: hub.subscribers == 0, timeout=10)


@pytest.mark.gen_test(timeout=90)
async def test_message_answered_by_another_instance_reaches_this_dashboard(
    logged_in, settings, send, wechat, http_client, io_loop
):
    """Two application instances on one database (as supervisord runs several processes):
    a message POSTed to instance B shows up on the WebSocket of instance A."""
    client_b, db_b = connect(settings)
    app_b = make_app(settings, db=db_b)
    sock, port = tornado.testing.bind_unused_port()
    server_b = tornado.httpserver.HTTPServer(app_b)
    server_b.add_sockets([sock])
    try:
        ws = await logged_in.websocket()  # instance A: the pytest-tornado server
        await next_event(ws, kind="hello")
        signed = wechat.sign(wechat.text("cross-user", "从进程 B 来的消息"), "aes")
        response = await http_client.fetch(
            signed.url(f"http://127.0.0.1:{port}"), method="POST", body=signed.body
        )
        assert response.code == 200
        event = await next_event(ws, kind="message")
        assert event["message"]["text"] == "从进程 B 来的消息"
        assert event["message"]["openid"] == "cross-user"
        ws.close()
        assert app_b.settings["hub"].subscribers == 0  # B's hub never had to start
    finally:
        server_b.stop()
        await server_b.close_all_connections()
        await app_b.settings["process"].close()
        await client_b.close()


@pytest.mark.slow
@pytest.mark.gen_test(timeout=120)
async def test_message_answered_by_another_process_reaches_this_dashboard(
    logged_in, service_process, wechat, http_client
):
    """As under supervisord: ``python -m service serve`` (another process, same database)
    answers the message; the dashboard served by this process shows it."""
    ws = await logged_in.websocket()
    await next_event(ws, kind="hello")
    signed = wechat.sign(wechat.text("other-process", "进程间消息"), "aes")
    response = await http_client.fetch(signed.url(service_process), method="POST", body=signed.body)
    assert response.code == 200
    event = await next_event(ws, kind="message", timeout=30)
    m = event["message"]
    assert (m["openid"], m["text"]) == ("other-process", "进程间消息")
    assert m["process"] != f"{os.uname().nodename}:{os.getpid()}"  # answered over there
    ws.close()


# -- the hub on its own ---------------------------------------------------------------------------


async def _collect(hub: Hub, count: int) -> tuple[list[dict], asyncio.Event, Listener]:
    """Subscribe a listener that keeps events; the event is set once ``count`` have come."""
    got: list[dict] = []
    done = asyncio.Event()

    def listener(event: dict) -> None:
        got.append(event)
        if len(got) >= count:
            done.set()

    hub.subscribe(listener)
    return got, done, listener


@pytest.mark.gen_test(timeout=60)
async def test_hub_drops_a_subscriber_whose_delivery_fails(db):
    hub = Hub(db)
    try:
        got, done, _ = await _collect(hub, 1)

        def broken(event: dict) -> None:
            raise ConnectionError("gone")

        hub.subscribe(broken)
        async with asyncio.timeout(20):
            await hub.ready()
        now = dt.datetime.now(dt.UTC)
        await messages.insert_once(db, message_doc("msg:h1", "hub-user", now, text="one"))
        async with asyncio.timeout(20):
            await done.wait()
        assert got[0]["message"]["text"] == "one"
        assert hub.subscribers == 1  # the broken one is gone, the good one stays
    finally:
        await hub.stop()


@pytest.mark.gen_test(timeout=60)
async def test_hub_polls_where_there_are_no_change_streams_and_deduplicates(db):
    hub = Hub(db, poll_interval=0.2)
    hub.mode = "polling"  # what a standalone mongod (no change streams) gets
    try:
        got, done, _ = await _collect(hub, 2)
        async with asyncio.timeout(20):
            await hub.ready()
        now = dt.datetime.now(dt.UTC)
        await messages.insert_once(db, message_doc("msg:p1", "poll-user", now, text="a"))
        await messages.insert_once(
            db, message_doc("msg:p2", "poll-user", now + dt.timedelta(milliseconds=5), text="b")
        )
        async with asyncio.timeout(20):
            await done.wait()
        passes = hub.polls
        await until(lambda: hub.polls >= passes + 3)  # more polls overlap the same window
        assert [e["message"]["text"] for e in got] == ["a", "b"]
    finally:
        await hub.stop()


async def _following(hub: Hub, prefix: str) -> tuple[list[dict], asyncio.Event, dt.datetime]:
    """``hub`` following, a first message ("before") delivered; the event is set at the second.
    Returns what was delivered, that event and the first message's time."""
    got, done, _ = await _collect(hub, 2)
    async with asyncio.timeout(20):
        await hub.ready()
    now = dt.datetime.now(dt.UTC)
    await messages.insert_once(hub.db, message_doc(f"msg:{prefix}-1", prefix, now, text="before"))
    await until(lambda: got, timeout=20)
    return got, done, now


@pytest.mark.gen_test(timeout=60)
async def test_hub_fills_the_gap_after_losing_its_stream(db):
    """A lost resume point: the hub starts a new stream and reads what it missed meanwhile."""
    hub = Hub(db)
    try:
        got, done, now = await _following(hub, "gap")
        # Break the watcher the way a dropped connection would, and forget the resume token.
        task = hub._task
        assert task is not None
        task.cancel()
        async with asyncio.timeout(10):
            await asyncio.gather(task, return_exceptions=True)
        hub._resume_token = None
        await messages.insert_once(
            db, message_doc("msg:g2", "gap", now + dt.timedelta(seconds=1), text="missed")
        )
        hub.start()
        async with asyncio.timeout(20):
            await done.wait()
        assert [e["message"]["text"] for e in got] == ["before", "missed"]
    finally:
        async with asyncio.timeout(10):
            await hub.stop()


@pytest.mark.gen_test(timeout=60)
async def test_hub_follows_again_after_its_database_is_dropped(db):
    """A dropped database ends the change stream (``invalidate``); the hub must not spin on the
    closed stream (its reads return at once and would keep the event loop to themselves): it
    starts a fresh stream and delivers what is stored from then on."""
    hub = Hub(db)
    try:
        got, done, now = await _following(hub, "drop")
        await db.client.drop_database(db.name)
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.ensure_future(tick())
        try:
            await until(lambda: ticks >= 20, timeout=20)  # the event loop is not held
            later = now + dt.timedelta(seconds=1)
            await messages.insert_once(db, message_doc("msg:d2", "drop", later, text="after"))
            async with asyncio.timeout(20):
                await done.wait()
        finally:
            ticker.cancel()
        assert [e["message"]["text"] for e in got] == ["before", "after"]
    finally:
        async with asyncio.timeout(10):
            await hub.stop()


@pytest.mark.gen_test(timeout=60)
async def test_hub_stops_following_when_nobody_watches_and_starts_afresh(db):
    """A process whose dashboards are closed costs the database nothing; the next dashboard
    gets what comes from then on, not what came while nobody watched."""
    hub = Hub(db, idle_stop=0.3)
    try:
        got, _, listener = await _collect(hub, 1)
        async with asyncio.timeout(20):
            await hub.ready()
        hub.unsubscribe(listener)
        await until(lambda: hub._task is not None and hub._task.done(), timeout=20)
        assert hub.mode == "idle"
        now = dt.datetime.now(dt.UTC)
        await messages.insert_once(db, message_doc("msg:i1", "idle", now, text="unwatched"))
        got, done, _ = await _collect(hub, 1)
        async with asyncio.timeout(20):
            await hub.ready()
        await messages.insert_once(
            db, message_doc("msg:i2", "idle", now + dt.timedelta(seconds=1), text="watched")
        )
        async with asyncio.timeout(20):
            await done.wait()
        assert [e["message"]["text"] for e in got] == ["watched"]
    finally:
        async with asyncio.timeout(10):
            await hub.stop()


@pytest.mark.gen_test(timeout=60)
async def test_hub_reads_a_burst_in_few_round_trips(db, db_counter):
    hub = Hub(db)
    try:
        got, done, _ = await _collect(hub, 40)
        async with asyncio.timeout(20):
            await hub.ready()
        before = db_counter.snapshot()["by_command"].get("getMore", 0)
        now = dt.datetime.now(dt.UTC)
        for i in range(40):  # one after the other, as busy traffic arrives
            await messages.insert_once(db, message_doc(f"msg:b{i}", f"burst-{i}", now))
        async with asyncio.timeout(20):
            await done.wait()
        reads = db_counter.snapshot()["by_command"].get("getMore", 0) - before
        assert len(got) == 40
        assert reads <= 15, f"{reads} getMore for 40 messages"
    finally:
        async with asyncio.timeout(10):
            await hub.stop()
