"""``UserStats``: each stored message counted for its user exactly once, in batches, whatever fails.

Found by the fault run (issue 14): the counters' bulk write was retried after a timeout even when
it had landed (+11 after a stalled database), and a killed service lost its half-second buffer
(7 users one message short). Found by the benchmark: a full buffer started one flush per message.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
from bson import ObjectId

from service.store import messages
from service.store.users import UserStats, add_to_users, apply, claim


def _flush_tasks() -> int:
    return len(
        [
            task
            for task in asyncio.all_tasks()
            if not task.done()
            and "UserStats" in task.get_coro().__qualname__  # type: ignore[union-attr]
            and "flush" in task.get_coro().__qualname__  # type: ignore[union-attr]
        ]
    )


def message(key: str, openid: str, at: dt.datetime, event: str | None = None) -> dict[str, Any]:
    return {
        "_id": key,
        "openid": openid,
        "received_at": at,
        "type": "event" if event else "text",
        "event": event,
        "test_user": openid.startswith("sim-"),
    }


async def store(db, *docs: dict[str, Any]) -> None:
    for doc in docs:
        assert await messages.insert_once(db, doc) is None


async def users(db) -> dict[str, dict[str, Any]]:
    return {doc["_id"]: doc async for doc in db["users"].find({})}


@pytest.mark.gen_test(timeout=60)
async def test_a_full_buffer_starts_one_early_flush_at_a_time(db):
    at = dt.datetime.now(dt.UTC)
    await store(db, *(message(f"k{i}", f"sim-burst-{i}", at) for i in range(300)))
    stats = UserStats(db, interval=3600, max_pending=10)  # only the early flush writes
    most = 0
    for i in range(300):
        stats.seen(f"k{i}")
        most = max(most, _flush_tasks())
        await asyncio.sleep(0)  # let a running flush make progress, as traffic would
    assert most == 1
    await stats.close()
    assert await db["users"].count_documents({"messages": 1, "test_user": True}) == 300
    assert await db["messages"].count_documents({"uncounted": {"$exists": True}}) == 0


@pytest.mark.gen_test(timeout=60)
async def test_counts_and_times_add_up_across_batches(db):
    at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    stats = UserStats(db, interval=3600, max_pending=5)
    for round_ in range(4):
        for i in range(7):
            key = f"r{round_}-{i}"
            await store(db, message(key, f"sim-u{i}", at + dt.timedelta(minutes=round_)))
            stats.seen(key)
            await asyncio.sleep(0)
    await stats.close()
    found = await users(db)
    assert len(found) == 7
    for doc in found.values():
        assert doc["messages"] == 4
        assert doc["first_seen"] == at
        assert doc["last_seen"] == at + dt.timedelta(minutes=3)


@pytest.mark.gen_test(timeout=60)
async def test_subscription_follows_the_latest_event(db):
    at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    stats = UserStats(db, interval=3600)
    await store(db, message("e1", "u-sub", at, "subscribe"))
    stats.seen("e1")
    await stats.flush()
    assert (await users(db))["u-sub"]["subscribed"] is True
    later = at + dt.timedelta(minutes=1)
    await store(db, message("e2", "u-sub", later, "unsubscribe"))
    await store(db, message("e3", "u-sub", later + dt.timedelta(seconds=1), "subscribe"))
    stats.seen("e2")
    stats.seen("e3")
    await stats.close()
    doc = (await users(db))["u-sub"]
    assert (doc["subscribed"], doc["messages"]) == (True, 3)


@pytest.mark.gen_test(timeout=60)
async def test_a_batch_retried_after_its_writes_landed_counts_once(db):
    """The +11: the users' write landed, the client timed out before it heard so, and the batch
    was written again."""
    at = dt.datetime.now(dt.UTC)
    await store(db, *(message(f"t{i}", f"u-{i % 3}", at) for i in range(9)))
    batch = ObjectId()
    await claim(db, [f"t{i}" for i in range(9)], batch)
    assert await add_to_users(db, batch) == 9  # landed; the answer was lost
    assert await add_to_users(db, batch) == 9  # the retry reads the same claims...
    assert await apply(db, batch) == 9  # ...and so does the one that finishes the batch
    assert {k: v["messages"] for k, v in (await users(db)).items()} == {
        "u-0": 3,
        "u-1": 3,
        "u-2": 3,
    }
    assert await apply(db, batch) == 0  # a finished batch has no claims left


@pytest.mark.gen_test(timeout=60)
async def test_two_processes_seeing_the_same_messages_count_them_once(db):
    """A spool replay whose insert "failed" but landed: both the replaying process and the one
    that stored the message may try to count it."""
    at = dt.datetime.now(dt.UTC)
    await store(db, *(message(f"d{i}", "u-dup", at) for i in range(20)))
    first, second = UserStats(db, interval=3600), UserStats(db, interval=3600)
    for i in range(20):
        first.seen(f"d{i}")
        second.seen(f"d{i}")
    await asyncio.gather(first.close(), second.close())
    assert (await users(db))["u-dup"]["messages"] == 20


@pytest.mark.gen_test(timeout=60)
async def test_what_a_killed_process_left_uncounted_is_counted_once_by_a_sweep(db):
    old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    # Stored, never claimed: the process died within its half second.
    await store(db, *(message(f"n{i}", f"u-{i % 7}", old) for i in range(14)))
    # Claimed by a batch that never finished: the process died between the claim and the users'
    # write, or between that write and clearing the claims.
    await store(db, *(message(f"c{i}", "u-claimed", old) for i in range(3)))
    await store(db, *(message(f"w{i}", "u-written", old) for i in range(2)))
    died_before = ObjectId.from_datetime(old)
    died_after = ObjectId.from_datetime(old + dt.timedelta(seconds=1))
    await claim(db, ["c0", "c1", "c2"], died_before)
    await claim(db, ["w0", "w1"], died_after)
    await add_to_users(db, died_after)
    # Recent and unclaimed: a live process will count it; the sweep leaves it alone.
    await store(db, message("fresh", "u-fresh", dt.datetime.now(dt.UTC)))

    sweeper = UserStats(db, recover_after=60)
    assert await sweeper.sweep() == 14 + 3 + 2
    assert await sweeper.sweep() == 0
    counts = {k: v["messages"] for k, v in (await users(db)).items()}
    assert counts == {**{f"u-{i}": 2 for i in range(7)}, "u-claimed": 3, "u-written": 2}
    assert await db["messages"].count_documents({"uncounted": {"$exists": True}}) == 1

    live = UserStats(db)
    live.seen("fresh")
    await live.close()
    assert (await users(db))["u-fresh"]["messages"] == 1
