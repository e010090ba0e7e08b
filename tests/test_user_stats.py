"""``UserStats``: per-user counters buffered and written in batches, with a bounded early flush.

Found by the benchmark: when the buffer was full, every further message started another flush
task while a slow bulk write was running (hundreds of small writes and waiting tasks under load).
"""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from service.store.users import UserStats


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


@pytest.mark.gen_test(timeout=60)
async def test_a_full_buffer_starts_one_early_flush_at_a_time(db):
    stats = UserStats(db, interval=3600, max_pending=10)  # only the early flush writes
    at = dt.datetime.now(dt.UTC)
    most = 0
    for i in range(300):
        stats.seen(f"sim-burst-{i}", at, test_user=True)
        most = max(most, _flush_tasks())
        await asyncio.sleep(0)  # let a running flush make progress, as traffic would
    assert most == 1
    await stats.close()
    assert await db["users"].count_documents({"messages": 1, "test_user": True}) == 300


@pytest.mark.gen_test(timeout=60)
async def test_counts_add_up_across_batches(db):
    stats = UserStats(db, interval=3600, max_pending=5)
    at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for round_ in range(4):
        for i in range(7):
            stats.seen(f"sim-u{i}", at + dt.timedelta(minutes=round_))
            await asyncio.sleep(0)
    await stats.close()
    users = {doc["_id"]: doc async for doc in db["users"].find({})}
    assert len(users) == 7
    for doc in users.values():
        assert doc["messages"] == 4
        assert doc["first_seen"] == at
        assert doc["last_seen"] == at + dt.timedelta(minutes=3)
