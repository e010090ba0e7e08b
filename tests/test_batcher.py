"""Natural batching (``service.store.batcher``) and the batched message insert (issue 15)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pymongo
import pytest
from pymongo.errors import BulkWriteError, NetworkTimeout, WriteError

from service.store.batcher import Batcher, by_database, write_errors
from service.store.messages import MessageWriter, SignatureReused
from tests.ops_helpers import until
from tests.survey_helpers import TracingCounter


@pytest.fixture
def db_counter() -> TracingCounter:
    return TracingCounter()


class Recorder:
    """A ``run`` that records its batches and answers when released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()

    async def run(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        await self.release.wait()
        return [ValueError(i) if i < 0 else i * 10 for i in items]


@pytest.mark.gen_test
async def test_an_idle_item_goes_at_once_and_alone():
    recorder = Recorder()
    recorder.release.set()
    batcher: Batcher[int, int] = Batcher(recorder.run, name="t")
    assert await batcher.submit(1) == 10
    assert await batcher.submit(2) == 20
    assert recorder.batches == [[1], [2]]


@pytest.mark.gen_test
async def test_items_queued_behind_a_round_trip_go_together_bounded():
    recorder = Recorder()
    batcher: Batcher[int, int] = Batcher(recorder.run, name="t", max_items=4, max_bytes=1000)
    first = asyncio.ensure_future(batcher.submit(0))
    await until(lambda: recorder.batches)  # the first batch is in flight
    rest = [asyncio.ensure_future(batcher.submit(i, size=300)) for i in range(1, 8)]
    recorder.release.set()
    assert await first == 0
    assert [await r for r in rest] == [i * 10 for i in range(1, 8)]
    # Four items at most, and no more than 1000 bytes (three items of 300).
    assert recorder.batches == [[0], [1, 2, 3], [4, 5, 6], [7]]
    assert (batcher.stats.batches, batcher.stats.items, batcher.stats.largest) == (4, 8, 3)


@pytest.mark.gen_test
async def test_a_failure_is_its_items_own_and_a_failed_round_trip_everyones():
    recorder = Recorder()
    recorder.release.set()
    batcher: Batcher[int, int] = Batcher(recorder.run, name="t")
    results = await asyncio.gather(
        batcher.submit(1), batcher.submit(-2), batcher.submit(3), return_exceptions=True
    )
    assert results[0] == 10 and results[2] == 30
    assert isinstance(results[1], ValueError)

    async def broken(items: list[int]) -> list[int]:
        raise pymongo.errors.AutoReconnect("down")

    failing: Batcher[int, int] = Batcher(broken, name="t")
    outcomes = await asyncio.gather(*(failing.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(o, pymongo.errors.AutoReconnect) for o in outcomes)


@pytest.mark.gen_test
async def test_a_caller_gives_up_at_its_own_deadline_and_its_item_is_dropped():
    recorder = Recorder()
    batcher: Batcher[int, int] = Batcher(recorder.run, name="t")
    first = asyncio.ensure_future(batcher.submit(1))
    await until(lambda: recorder.batches)
    with pytest.raises(NetworkTimeout), pymongo.timeout(0.05):
        await batcher.submit(2)  # queued behind the first, which is stuck
    recorder.release.set()
    assert await first == 10
    await batcher.close()
    assert recorder.batches == [[1]], "the abandoned item never went"


def _doc(key: str, signed: str = "") -> dict[str, Any]:
    doc: dict[str, Any] = {"_id": key, "openid": "u-batch", "received_at": dt.datetime.now(dt.UTC)}
    if signed:
        doc["signed"] = signed
    return doc


@pytest.mark.gen_test(timeout=60)
async def test_concurrent_inserts_share_round_trips_and_keep_each_answer(db, db_counter):
    writer = MessageWriter(db, timeout=5)
    await writer.insert_once(_doc("warm"))
    stored = await db.messages.find_one({"_id": "warm"})
    assert stored is not None and stored["uncounted"] is True
    before = db_counter.snapshot()["by_command"].get("insert", 0)
    results = await asyncio.gather(
        *(writer.insert_once(_doc(f"m{i}", f"t:{i}")) for i in range(16))
    )
    assert results == [None] * 16
    spent = db_counter.snapshot()["by_command"].get("insert", 0) - before
    assert spent <= 2, f"16 concurrent inserts took {spent} round trips"
    assert await db.messages.count_documents({"_id": {"$regex": "^m"}}) == 16

    # In one batch: a retry of a stored message, a reused signed URL and a new message.
    outcomes: list[Any] = await asyncio.gather(
        writer.insert_once(_doc("m3", "t:other")),
        writer.insert_once(_doc("forged", "t:5")),
        writer.insert_once(_doc("m99", "t:99")),
        return_exceptions=True,
    )
    retry, reused, new = outcomes
    assert isinstance(retry, dict) and retry["_id"] == "m3"
    assert isinstance(reused, SignatureReused) and reused.key == "m5"
    assert new is None
    assert await db.messages.count_documents({"_id": "forged"}) == 0


@pytest.mark.gen_test(timeout=60)
async def test_messages_in_flight_together_share_their_round_trips(send, wechat, db, db_counter):
    """16 texts at once through the real /wechat: the survey-state reads go in few ``find``s and
    the inserts in few ``insert``s; every message is stored once and gets its own answer."""
    from service.bot import GREETINGS

    await send(wechat.text("user-warm", "warm up"))
    users = [f"user-b{i}" for i in range(16)]
    # Half of them are in the survey, so the batch mixes survey steps and greetings.
    for openid in users[:8]:
        await send(wechat.text(openid, "爆肝度调查"))
    mark = db_counter.mark()
    replies = await asyncio.gather(
        *(send(wechat.text(u, "1" if i < 8 else "你好")) for i, u in enumerate(users))
    )
    spent = db_counter.since(mark)
    for i, (_response, reply) in enumerate(replies):
        if i < 8:
            assert "第 2/10 题" in reply["Content"], reply
        else:
            assert reply["Content"] in GREETINGS
    reads = spent.count(("find", "survey_sessions"))
    inserts = spent.count(("insert", "messages"))
    assert reads < 16 and inserts < 16, spent
    # Eight conditional steps, each decided on its own, in fewer round trips.
    assert spent.count(("update", "survey_sessions")) < 8, spent
    assert await db.messages.count_documents({"openid": {"$in": users}}) == 24


@pytest.mark.gen_test(timeout=60)
async def test_batched_survey_steps_are_decided_one_by_one(db):
    """In one bulk write: a step at the right version applies, one at a stale version loses
    its race, one whose session is gone is refused and leaves nothing behind."""
    from service.store.surveys import SessionWriter

    await db.survey_sessions.insert_many(
        [
            {"_id": "s:ok", "survey": "s", "openid": "a", "v": 3, "answers": []},
            {"_id": "s:stale", "survey": "s", "openid": "b", "v": 5, "answers": []},
        ]
    )
    writer = SessionWriter()
    step = {"set_fields": {"current": "q2"}, "answer": {"q": "q1", "o": 1}}
    ok, stale, gone = await asyncio.gather(
        writer.update(db, "s:ok", 3, **step),
        writer.update(db, "s:stale", 4, **step),
        writer.update(db, "s:gone", 1, **step),
    )
    assert (ok, stale, gone) == (True, False, False)
    assert writer.batcher.stats.batches <= 2
    stored = {d["_id"]: d async for d in db.survey_sessions.find({})}
    assert set(stored) == {"s:ok", "s:stale"}, "no stub for the session that was gone"
    assert (stored["s:ok"]["v"], stored["s:ok"]["current"]) == (4, "q2")
    assert stored["s:ok"]["answers"] == [{"q": "q1", "o": 1}]
    assert (stored["s:stale"]["v"], stored["s:stale"]["answers"]) == (5, [])


@pytest.mark.gen_test(timeout=60)
async def test_two_answers_of_one_user_at_once_apply_in_turn(send, wechat, db):
    """The same session twice in one batch: one step wins, the other reads again."""
    from tests.survey_helpers import Chat

    user = Chat(send, wechat, "user-twice")
    await user.say("爆肝度调查")
    replies = await asyncio.gather(user.say("1"), user.say("2"))
    asked = sorted(n for r in replies for n in (2, 3) if f"第 {n}/10 题" in r)
    assert asked == [2, 3], replies
    doc = await db.survey_sessions.find_one({"openid": "user-twice"})
    assert doc is not None and len(doc["answers"]) == 2


# -- the helpers for a batch's ``run`` -------------------------------------------------------------


@pytest.mark.gen_test
async def test_by_database_groups_positions_in_first_seen_order(db):
    other = db.client.get_database(db.name + "_other")  # never written: nothing to drop
    items = [(db, "a"), (other, "b"), (db, "c"), (db, "d"), (other, "e")]
    groups = by_database(items, lambda item: item[0])
    assert [(group_db is db, indexes) for group_db, indexes in groups] == [
        (True, [0, 2, 3]),
        (False, [1, 4]),
    ]
    assert by_database([], lambda item: item[0]) == []


@pytest.mark.gen_test
async def test_write_errors_gives_each_failed_operation_its_own_outcome(db):
    await db.messages.insert_one({"_id": "taken"})
    docs = [{"_id": "new-1"}, {"_id": "taken"}, {"_id": "new-2"}]
    with pytest.raises(BulkWriteError) as caught:
        await db.messages.insert_many(docs, ordered=False)
    failed = write_errors(caught.value, lambda error: ("duplicate", dict(error["keyPattern"])))
    assert failed == {1: ("duplicate", {"_id": 1})}  # the others went in
    assert await db.messages.count_documents({"_id": {"$in": ["new-1", "new-2"]}}) == 2


def test_write_errors_other_failures_and_write_concern_errors():
    other = BulkWriteError(
        {"writeErrors": [{"index": 2, "code": 121, "errmsg": "validation"}], "nInserted": 2}
    )
    failed = write_errors(other, lambda error: "duplicate")
    assert list(failed) == [2]
    assert isinstance(failed[2], WriteError) and failed[2].code == 121
    unsure = BulkWriteError(
        {
            "writeErrors": [{"index": 0, "code": 11000, "errmsg": "dup", "keyPattern": {"_id": 1}}],
            "writeConcernErrors": [{"code": 64, "errmsg": "waiting for replication timed out"}],
        }
    )
    with pytest.raises(BulkWriteError) as caught:
        write_errors(unsure, lambda error: "duplicate")
    assert caught.value is unsure  # not known to be durable: the whole batch's failure
