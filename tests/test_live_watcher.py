"""One change stream per process, whatever the number of dashboard WebSockets.

Every process that follows the live feed tails every insert (one change stream each), so what it
costs the database grows with the processes watching (``bench/watchers.py`` measures it), and must
not grow with the sockets: the hub (``service/live.py``) is one object per process, shared by every
WebSocket, with one watcher task. Counted on the wire (PyMongo command monitoring).
"""

from __future__ import annotations

import time

import pytest

from service.live import Hub
from tests.dashboard_fixtures import next_event
from tests.survey_helpers import TracingCounter


@pytest.fixture
def db_counter() -> TracingCounter:
    return TracingCounter()


def _aggregates(counter: TracingCounter) -> int:
    # A change stream is opened by an ``aggregate`` with $changeStream; the live feed's is on
    # ``messages`` (the survey and reply definitions' watchers follow their own collections).
    return counter.trace.count(("aggregate", "messages"))


@pytest.mark.gen_test(timeout=60)
async def test_every_websocket_of_a_process_shares_one_change_stream(
    logged_in, app, send, wechat, db_counter
):
    hub: Hub = app.settings["hub"]
    assert hub._task is None, "no watcher before the first dashboard opens"
    before = _aggregates(db_counter)
    sockets = [await logged_in.websocket() for _ in range(3)]
    for ws in sockets:
        assert (await next_event(ws, kind="hello"))["mode"] == "change-stream"
    assert hub.subscribers == 3
    assert _aggregates(db_counter) - before == 1, "one change stream for the three sockets"
    watcher = hub._task
    assert watcher is not None

    _, reply = await send(wechat.text("shared-watcher", "一条消息"))
    for ws in sockets:
        event = await next_event(ws, kind="message")
        assert event["message"]["openid"] == "shared-watcher"
        assert event["message"]["reply"] == reply["Content"]
    assert hub.delivered == 1, "the message was read once from the stream, then fanned out"

    # A page closing and another opening keep the same watcher and stream.
    sockets.pop().close()
    sockets.append(await logged_in.websocket())
    await next_event(sockets[-1], kind="hello")
    assert hub._task is watcher and not watcher.done()
    assert _aggregates(db_counter) - before == 1
    for ws in sockets:
        ws.close()


@pytest.mark.gen_test(timeout=60)
async def test_quiet_definition_streams_cost_no_read_per_stored_message(
    app, send, wechat, db_counter
):
    """SecantusDB ends a change stream's wait at any write in the database: the surveys' and the
    reply rules' watchers read again at most twice a second, not once per stored message."""
    assert isinstance(db_counter, TracingCounter)
    await send(wechat.text("warm-up", "你好"))
    mark = db_counter.mark()
    started = time.monotonic()
    for i in range(40):
        response, _ = await send(wechat.text(f"quiet-{i % 4}", "你好"))
        assert response.code == 200
    elapsed = time.monotonic() - started
    reads = [c for n, c in db_counter.trace[mark:] if n == "getMore"]
    definitions = [c for c in reads if c in ("surveys", "reply_rules")]
    # two watchers, one read each per 0.5 s at most (plus the reads in flight at either end)
    assert len(definitions) <= 2 * (elapsed / 0.5 + 2), (len(definitions), elapsed)
