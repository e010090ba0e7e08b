"""Outages lose nothing: with the database down the endpoint still answers, every message goes to
the local spool, and the spool is replayed into MongoDB, de-duplicated, once the database is back.

The end-to-end test stops and restarts a dedicated embedded SecantusDB (its own storage path and
port, so its data survives the restart) while traffic keeps coming. The spool tests below it use
the real spool files and the session's database server.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from service.bot import GREETINGS, IMAGE_RECEIVED_TEXT, WELCOME_TEXT
from service.config import Settings
from service.embedded import EmbeddedDatabase
from service.inbox import BUSY_TEXT
from service.spool import Spool, encode
from service.store import messages
from tests.conftest import APP_ID, TOKEN
from tests.ops_helpers import until

_msg_ids = itertools.count(9_100_000)


@pytest.fixture
def outage_db(tmp_path: Path) -> Any:
    """A SecantusDB of this test alone, with a storage path so data survives a restart."""
    server = EmbeddedDatabase(tmp_path / "secantus", log_path=tmp_path / "secantus.log")
    server.start()
    holder = {"server": server}
    yield holder
    # The test is over and its data is thrown away: a kill saves the 2 to 5 s SecantusDB takes
    # to stop after SIGTERM (the restart in the test itself stops it cleanly).
    process = holder["server"].process
    if process is not None and process.poll() is None:
        process.kill()
    holder["server"].stop()


@pytest.fixture
def settings(outage_db: Any, tmp_path: Path) -> Settings:
    """The conftest ``db`` and ``app`` fixtures, pointed at the dedicated server."""
    return Settings(
        wechat_token=TOKEN,
        app_id=APP_ID,
        mongodb_uri=outage_db["server"].uri,
        mongodb_db="outage",
        cookie_secret="test-cookie-secret",
        data_dir=tmp_path / "data",
    )


class Traffic:
    """Sends messages the way WeChat does and remembers every key and answer."""

    def __init__(self, send: Any, wechat: Any) -> None:
        self.send = send
        self.wechat = wechat
        self.keys: set[str] = set()
        self.answers: list[tuple[str, int, dict[str, Any]]] = []

    async def text(self, openid: str, content: str = "hello") -> tuple[str, dict[str, Any]]:
        msg_id = next(_msg_ids)
        return await self._post(f"msg:{msg_id}", self.wechat.text(openid, content, msg_id=msg_id))

    async def subscribe(self, openid: str) -> tuple[str, dict[str, Any]]:
        created = int(dt.datetime.now(dt.UTC).timestamp()) + next(_msg_ids) % 100_000
        xml = self.wechat.event(openid, "subscribe", create_time=created)
        return await self._post(f"ev:{openid}:{created}:subscribe", xml)

    async def image(self, openid: str) -> tuple[str, dict[str, Any]]:
        msg_id = next(_msg_ids)
        xml = self.wechat.message_xml(
            openid, "image", msg_id=msg_id, PicUrl="http://x/y.jpg", MediaId="m1"
        )
        return await self._post(f"msg:{msg_id}", xml)

    async def _post(self, key: str, xml: str) -> tuple[str, dict[str, Any]]:
        response, reply = await self.send(xml)
        assert response.code == 200, key
        self.keys.add(key)
        self.answers.append((key, response.code, reply))
        return key, reply

    async def keep_going(self, stop: asyncio.Event, openid: str) -> int:
        """Background traffic until ``stop`` is set; every request must be answered."""
        sent = 0
        while not stop.is_set():
            await self.text(openid, f"traffic {sent}")
            sent += 1
            await asyncio.sleep(0.05)
        return sent


@pytest.mark.gen_test(timeout=180)
async def test_messages_survive_a_database_restart_exactly_once(
    app, send, wechat, db, outage_db, settings, http_client, base_url
):
    traffic = Traffic(send, wechat)
    inbox = app.settings["inbox"]
    spool = app.settings["spool"]

    # Database up: ordinary answers, stored directly.
    before = [await traffic.text("user-a"), await traffic.subscribe("user-b")]
    assert spool.backlog == 0
    assert all(reply.get("MsgType") == "text" for _, reply in before)

    # Stop the database while messages keep arriving: every request is answered.
    server: EmbeddedDatabase = outage_db["server"]
    stop_traffic = asyncio.Event()
    background = asyncio.ensure_future(traffic.keep_going(stop_traffic, "user-c"))
    await asyncio.to_thread(server.stop)
    await until(lambda: not inbox.db_up, timeout=30)
    stop_traffic.set()
    assert await background > 0

    # Down, and known to be down: answers without the database, straight from memory.
    # Ordinary chat needs no database: greetings go on as usual (the README says so).
    key_text, hello = await traffic.text("user-d")
    assert hello["Content"] in GREETINGS
    # A survey step does: a keyword, or what may be an answer, gets the apology.
    _, busy = await traffic.text("user-d", "爆肝度调查")
    assert busy["Content"] == BUSY_TEXT
    _, answer = await traffic.text("user-f", "3")
    assert answer["Content"] == BUSY_TEXT
    _, welcome = await traffic.subscribe("user-e")
    assert welcome["Content"].startswith(WELCOME_TEXT)  # computed without the database
    _, image = await traffic.image("user-d")
    assert image["Content"] == IMAGE_RECEIVED_TEXT
    backlog = spool.backlog
    assert backlog >= 5
    # WeChat retries a message: same answer, not spooled twice.
    _retry, again = await send(wechat.text("user-d", "hello", msg_id=int(key_text[4:])))
    assert again == hello
    assert spool.backlog == backlog
    files = list((settings.data_dir / "spool").glob("*.jsonl"))
    assert files, "the spool is on disk"

    health = await http_client.fetch(f"{base_url}/healthz", raise_error=False)
    assert health.code == 503
    assert json.loads(health.body)["spool"]["backlog"] == backlog

    # Restart on the same port and storage while traffic continues; the spool drains.
    restarted = EmbeddedDatabase(server.storage_path, port=server.port, log_path=server.log_path)
    outage_db["server"] = restarted
    stop_traffic = asyncio.Event()
    background = asyncio.ensure_future(traffic.keep_going(stop_traffic, "user-f"))
    await asyncio.to_thread(restarted.start)
    await until(lambda: inbox.db_up and spool.backlog == 0, timeout=60)
    stop_traffic.set()
    await background
    await until(lambda: spool.backlog == 0, timeout=30)

    # Every message is in MongoDB exactly once (the key is the _id), the spooled ones marked.
    keys = sorted(traffic.keys)
    stored = await db.messages.find({"_id": {"$in": keys}}, {"spooled": 1}).to_list()
    assert sorted(d["_id"] for d in stored) == keys
    assert await db.messages.count_documents({}) == len(keys)
    assert await db.messages.count_documents({"spooled": True}) >= 3
    assert not list((settings.data_dir / "spool").glob("*.jsonl"))

    # The user counters count each message once, replayed ones included.
    await app.settings["users"].flush()
    per_user = {u["_id"]: u["messages"] for u in await db.users.find().to_list()}
    expected: dict[str, int] = {}
    for d in await db.messages.find({}, {"openid": 1}).to_list():
        expected[d["openid"]] = expected.get(d["openid"], 0) + 1
    assert per_user == expected

    health = await http_client.fetch(f"{base_url}/healthz")
    assert json.loads(health.body)["database"]["ok"] is True
    metrics = app.settings["metrics"]
    assert metrics.value("wechat_survey_spooled_messages_total") >= 3
    assert metrics.value("wechat_survey_replayed_messages_total", result="inserted") >= 3


def doc(key: str, openid: str = "user-s") -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return {
        "_id": key,
        "openid": openid,
        "type": "text",
        "event": None,
        "text": "你好，世界",
        "received_at": now,
        "reply": {"kind": "text", "content": "回复", "media_id": ""},
        "test_user": False,
    }


async def replay_into(db: Any, spool: Spool) -> tuple[int, int]:
    async def insert(d: dict[str, Any]) -> bool:
        return await messages.insert_new(db, d)

    return await spool.replay(insert)


@pytest.mark.gen_test
async def test_spool_round_trip_keeps_types_and_deduplicates(db, tmp_path):
    spool = Spool(tmp_path / "spool")
    first, second = doc("msg:1"), doc("msg:2")
    assert await spool.append(first)
    assert await spool.append(second)
    assert await spool.append(first)  # a retry spooled twice
    assert spool.backlog == 3
    await messages.insert_new(db, second)  # this one made it to the database after all
    inserted, duplicates = await replay_into(db, spool)
    assert (inserted, duplicates) == (1, 2)
    assert spool.backlog == 0
    assert spool.files() == []
    stored = await db.messages.find_one({"_id": "msg:1"})
    assert stored["received_at"] == first["received_at"]  # a datetime again, not a string
    assert stored["text"] == "你好，世界"


@pytest.mark.gen_test
async def test_spool_left_by_a_dead_process_is_replayed_but_a_live_ones_is_not(db, tmp_path):
    folder = tmp_path / "spool"
    dead = Spool(folder, name="dead-host-1")
    assert await dead.append(doc("msg:dead"))
    await dead.close()  # its file is closed: as after a crash, nobody holds it
    alive = Spool(folder, name="live-host-2")
    assert await alive.append(doc("msg:alive"))  # still open and locked by its process

    mine = Spool(folder, name="me")
    assert await replay_into(db, mine) == (1, 0)
    assert await db.messages.find_one({"_id": "msg:dead"}) is not None
    assert await db.messages.find_one({"_id": "msg:alive"}) is None
    assert [p.name.split("-")[0] for p in mine.files()] == ["live"]

    assert await replay_into(db, alive) == (1, 0)  # its owner replays it
    assert mine.files() == []


@pytest.mark.gen_test
async def test_torn_line_is_set_aside_and_the_rest_replayed(db, tmp_path):
    folder = tmp_path / "spool"
    folder.mkdir()
    good = encode(doc("msg:good"))
    (folder / "crashed-1-1.jsonl").write_bytes(good + good[: len(good) // 2])
    spool = Spool(folder)
    assert await replay_into(db, spool) == (1, 0)
    assert await db.messages.find_one({"_id": "msg:good"}) is not None
    assert (folder / "rejected" / "crashed-1-1.jsonl").read_bytes() == good[
        : len(good) // 2
    ] + b"\n"
    assert spool.files() == []


@pytest.mark.gen_test
async def test_full_spool_refuses_and_says_so(tmp_path, caplog):
    line = encode(doc("msg:0"))
    spool = Spool(tmp_path / "spool", max_bytes=len(line) * 2 + 10)
    with caplog.at_level(logging.ERROR, logger="service.spool"):
        results = [await spool.append(doc(f"msg:{i}")) for i in range(4)]
    assert results == [True, True, False, False]
    assert spool.dropped == 2
    assert spool.backlog == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # one clear line, not one per message
    assert "SPOOL_MAX_BYTES" in errors[0]
    assert "NOT saved" in errors[0]


@pytest.mark.gen_test
async def test_spool_file_is_private(tmp_path):
    spool = Spool(tmp_path / "spool")
    assert await spool.append(doc(f"msg:{uuid.uuid4().hex}"))
    (path,) = spool.files()
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(path.parent).st_mode & 0o777 == 0o700
    assert path.read_bytes().count(b"\n") == 1
