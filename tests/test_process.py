"""The composition root (``service.process.Process``): built once, closed once, in order."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from service.bot import Bot
from service.inbox import Inbox
from service.process import Process
from service.spool import Spool
from service.store import users
from service.store.users import UserStats
from service.wechat import Reply, message_from_xml, parse_xml, render_reply
from tests.ops_helpers import until


def spooled_by_an_earlier_run(db: Any, wechat: Any, openid: str, msg_id: int) -> Any:
    """The document an earlier process spooled for ``openid`` and never replayed."""
    raw = wechat.text(openid, "留在 spool 里的消息", msg_id=msg_id)
    message = message_from_xml(parse_xml(raw.encode()), raw)
    reply = Reply.text("你好！")
    inbox = Inbox(db, Bot(db), UserStats(db))  # builds the document a live process would spool
    return inbox.document(
        message, reply, render_reply(reply, message), mode="plain", started=time.perf_counter()
    )


@pytest.mark.gen_test
async def test_a_replay_during_close_is_counted_for_its_user(settings, db, wechat):
    """close() replays the spool before it flushes the user counters: a message replayed at
    shutdown is stored once and counted for its user (the old order lost that count)."""
    doc = spooled_by_an_earlier_run(db, wechat, "user-late", 91001)
    earlier = Spool(settings.data_dir / "spool", name="earlier-run")
    assert await earlier.append(doc)
    await earlier.close()

    process = Process(settings, db=db)  # not started: the only replay is the one in close()
    await process.close()

    stored = await db.messages.find_one({"_id": doc["_id"]})
    assert stored is not None and stored["openid"] == "user-late"
    user = await users.get(db, "user-late")
    assert user is not None and user["messages"] == 1
    assert process.spool is not None and process.spool.files() == []


@pytest.mark.gen_test
async def test_close_runs_once_and_every_part_is_closed(wechat_settings, db):
    process = Process(wechat_settings, db=db)
    await process.start()
    assert process.replayer is not None
    await until(lambda: process.replayer is not None and process.replayer._task is not None)
    await asyncio.gather(process.close(), process.close())  # a second call waits for the first
    await process.close()
    assert process.wechat_api is not None
    with pytest.raises(RuntimeError, match="closed"):
        await process.wechat_api.send_text("someone", "after shutdown")
    assert process.replayer._task is None or process.replayer._task.done()
    assert process.hub.subscribers == 0


@pytest.mark.gen_test
async def test_the_database_state_is_shared_and_health_only_reports_it(
    http_client, base_url, app, send, wechat
):
    """One DatabaseState: what the inbox records is what /healthz reports; a health check never
    marks the database down itself (a flood of them would switch the hot path to the spool)."""
    process = app.settings["process"]
    assert app.settings["database"] is process.database is process.inbox.database
    assert process.replayer is not None and process.replayer.state is process.database

    responses = await asyncio.gather(*[http_client.fetch(f"{base_url}/healthz") for _ in range(20)])
    assert {r.code for r in responses} == {200}
    assert process.database.up and process.database.outages == 0
