"""The ``users`` collection: one document per openid (first/last seen, message count, subscribed).

The endpoint does not write it on the hot path: ``UserStats`` folds the updates of many messages
into one unordered bulk write every half second (and on shutdown), so an ordinary text message
costs two database round trips, not three.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
from typing import Any

from pymongo import DESCENDING, UpdateOne
from pymongo.errors import PyMongoError

from . import Db

__all__ = ["COLLECTION", "UserStats", "ensure_indexes", "get", "record_channel"]

COLLECTION = "users"
log = logging.getLogger(__name__)


async def ensure_indexes(db: Db) -> None:
    coll = db[COLLECTION]
    await coll.create_index([("last_seen", DESCENDING)], name="last_seen")
    await coll.create_index([("first_seen", DESCENDING)], name="first_seen")


async def record_channel(db: Db, openid: str, channel: str, at: dt.datetime) -> None:
    """A QR scan by a user: ``channel`` (the first one, kept), ``channels.<name>`` scans each,
    ``qr_scans`` in all. The user document may not exist yet (their first event)."""
    coll = db[COLLECTION]
    await coll.update_one(
        {"_id": openid},
        {"$inc": {"qr_scans": 1, f"channels.{channel}": 1}, "$set": {"last_scan_at": at}},
        upsert=True,
    )
    await coll.update_one(
        {"_id": openid, "channel": {"$exists": False}},
        {"$set": {"channel": channel, "channel_at": at}},
    )


async def get(db: Db, openid: str) -> dict[str, Any] | None:
    return await db[COLLECTION].find_one({"_id": openid})


@dataclasses.dataclass
class _Pending:
    first_seen: dt.datetime
    last_seen: dt.datetime
    count: int = 0
    test_user: bool = False
    subscribed: bool | None = None
    subscribed_at: dt.datetime | None = None
    unsubscribed_at: dt.datetime | None = None


class UserStats:
    """Buffers per-user counters and writes them with one bulk write per interval."""

    def __init__(self, db: Db, interval: float = 0.5, max_pending: int = 1000) -> None:
        self.db = db
        self.interval = interval
        self.max_pending = max_pending
        self._pending: dict[str, _Pending] = {}
        self._task: asyncio.Task[None] | None = None
        # The early flush started when the buffer is full; one at a time, or a busy process
        # would start one per message while a slow bulk write is running.
        self._early: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()
        self._closed = False

    def seen(
        self,
        openid: str,
        at: dt.datetime,
        *,
        test_user: bool = False,
        subscribed: bool | None = None,
    ) -> None:
        """Count one stored message of ``openid`` (and a subscribe/unsubscribe, if it was one)."""
        entry = self._pending.get(openid)
        if entry is None:
            entry = self._pending[openid] = _Pending(first_seen=at, last_seen=at)
        entry.first_seen = min(entry.first_seen, at)
        entry.last_seen = max(entry.last_seen, at)
        entry.count += 1
        entry.test_user = entry.test_user or test_user
        if subscribed is not None:
            entry.subscribed = subscribed
            if subscribed:
                entry.subscribed_at = at
            else:
                entry.unsubscribed_at = at
        if self._closed:
            return
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        if len(self._pending) >= self.max_pending and (self._early is None or self._early.done()):
            self._early = asyncio.get_running_loop().create_task(self._flush_logged())

    @property
    def backlog(self) -> int:
        return len(self._pending)

    async def _run(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.interval)
            if not self._pending:
                return
            await self._flush_logged()

    async def _flush_logged(self) -> None:
        try:
            await self.flush()
        except PyMongoError:
            log.warning("user stats flush failed; will retry", exc_info=True)

    async def flush(self) -> None:
        """Write everything buffered so far (kept for the next try if the write fails)."""
        async with self._flush_lock:
            if not self._pending:
                return
            batch, self._pending = self._pending, {}
            ops = []
            for openid, p in batch.items():
                update: dict[str, Any] = {
                    "$min": {"first_seen": p.first_seen},
                    "$max": {"last_seen": p.last_seen},
                    "$inc": {"messages": p.count},
                }
                sets: dict[str, Any] = {}
                if p.test_user:
                    sets["test_user"] = True
                if p.subscribed is not None:
                    sets["subscribed"] = p.subscribed
                if p.subscribed_at is not None:
                    update["$max"]["subscribed_at"] = p.subscribed_at
                if p.unsubscribed_at is not None:
                    update["$max"]["unsubscribed_at"] = p.unsubscribed_at
                if sets:
                    update["$set"] = sets
                ops.append(UpdateOne({"_id": openid}, update, upsert=True))
            try:
                await self.db[COLLECTION].bulk_write(ops, ordered=False)
            except PyMongoError:
                for openid, p in batch.items():  # put it back, merged with anything newer
                    newer = self._pending.get(openid)
                    if newer is not None:
                        p.first_seen = min(p.first_seen, newer.first_seen)
                        p.last_seen = max(p.last_seen, newer.last_seen)
                        p.count += newer.count
                        p.test_user = p.test_user or newer.test_user
                        if newer.subscribed is not None:
                            p.subscribed = newer.subscribed
                            p.subscribed_at = newer.subscribed_at or p.subscribed_at
                            p.unsubscribed_at = newer.unsubscribed_at or p.unsubscribed_at
                    self._pending[openid] = p
                raise

    async def close(self) -> None:
        """Flush what is left and stop the background task."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._early is not None:
            await self._early  # logs its own failure; the flush below retries what it kept
        try:
            await self.flush()
        except PyMongoError:
            log.exception("could not flush %d user record(s) at shutdown", len(self._pending))
