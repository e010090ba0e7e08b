"""One change stream per process, whatever the number of dashboard WebSockets.

Every process that follows the live feed tails every insert (one change stream each), so what it
costs the database grows with the processes watching (``bench/watchers.py`` measures it), and must
not grow with the sockets: the hub (``service/live.py``) is one object per process, shared by every
WebSocket, with one watcher task. Counted on the wire (PyMongo command monitoring).
"""

from __future__ import annotations

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
