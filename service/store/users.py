"""The ``users`` collection: one document per openid (first/last seen, message count, subscribed).

Exact counters, off the hot path. Every stored message carries ``uncounted: true`` from its
insert (no extra round trip). ``UserStats`` counts the messages this process stored in batches,
every half second: it *claims* them (``uncounted`` becomes the batch's id, a conditional update
per message, so a message is claimed by one batch only), reads the claimed messages back, applies
one tagged update per user (the update's filter requires that the user has not seen this batch:
a retry of a write that landed, after a timeout, changes nothing) and then clears the claims.
A batch that failed is retried with the same id. What a killed process left behind (messages
never claimed, or claimed by a batch that never finished) is counted by any process's sweep once
it is ``recover_after`` seconds old. So each message is counted exactly once, whatever fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.errors import BulkWriteError, PyMongoError

from . import Db, is_outage
from . import messages as messages_store

__all__ = ["COLLECTION", "UserStats", "ensure_indexes", "get", "reach", "record_channel"]

COLLECTION = "users"
log = logging.getLogger(__name__)

# The batches a user document remembers (the tag that makes a retried update a no-op). A batch is
# retried within seconds by its own process, or after ``recover_after`` by a sweep: a user would
# need more batches than this in that time (several messages a second) to be counted twice.
REMEMBERED_BATCHES = 64
# The smallest ObjectId: ``{"uncounted": {"$gte": MIN_BATCH}}`` finds claimed messages only
# (``True`` marks unclaimed ones), through the sparse index.
MIN_BATCH = ObjectId("0" * 24)
DUPLICATE_KEY = 11000


async def ensure_indexes(db: Db) -> None:
    coll = db[COLLECTION]
    await coll.create_index([("last_seen", DESCENDING)], name="last_seen")
    await coll.create_index([("first_seen", DESCENDING)], name="first_seen")
    # Only messages not yet counted carry the field: a small index, whatever the collection's size.
    await db[messages_store.COLLECTION].create_index(
        [("uncounted", ASCENDING)], name="uncounted", sparse=True
    )


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


async def reach(db: Db, openids: list[str]) -> dict[str, dict[str, Any]]:
    """What deciding whether a message may reach these users needs, in one round trip:
    ``{openid: {last_seen, subscribed, test_user}}`` (users without a document left out)."""
    cursor = db[COLLECTION].find(
        {"_id": {"$in": sorted(set(openids))}}, {"last_seen": 1, "subscribed": 1, "test_user": 1}
    )
    return {str(doc["_id"]): doc async for doc in cursor}


async def get(db: Db, openid: str) -> dict[str, Any] | None:
    return await db[COLLECTION].find_one({"_id": openid}, {"counted": 0})


@dataclasses.dataclass
class _User:
    first_seen: dt.datetime
    last_seen: dt.datetime
    count: int = 0
    test_user: bool = False
    subscribed_at: dt.datetime | None = None
    unsubscribed_at: dt.datetime | None = None

    def add(self, doc: dict[str, Any]) -> None:
        at = doc["received_at"]
        self.first_seen = min(self.first_seen, at)
        self.last_seen = max(self.last_seen, at)
        self.count += 1
        self.test_user = self.test_user or bool(doc.get("test_user"))
        event = doc.get("event")
        if event in ("subscribe", "subscribe_scan"):
            self.subscribed_at = max(self.subscribed_at or at, at)
        elif event == "unsubscribe":
            self.unsubscribed_at = max(self.unsubscribed_at or at, at)

    def update(self, batch: ObjectId) -> dict[str, Any]:
        update: dict[str, Any] = {
            "$min": {"first_seen": self.first_seen},
            "$max": {"last_seen": self.last_seen},
            "$inc": {"messages": self.count},
            "$push": {"counted": {"$each": [batch], "$slice": -REMEMBERED_BATCHES}},
        }
        sets: dict[str, Any] = {}
        if self.test_user:
            sets["test_user"] = True
        # The later of the two events in this batch decides; an older batch retried late could
        # still flip it, which ``subscribed_at``/``unsubscribed_at`` (kept with $max) make visible.
        if self.subscribed_at is not None:
            update["$max"]["subscribed_at"] = self.subscribed_at
        if self.unsubscribed_at is not None:
            update["$max"]["unsubscribed_at"] = self.unsubscribed_at
        if self.subscribed_at is not None or self.unsubscribed_at is not None:
            sets["subscribed"] = self.subscribed_at is not None and (
                self.unsubscribed_at is None or self.subscribed_at > self.unsubscribed_at
            )
        if sets:
            update["$set"] = sets
        return update


_FIELDS = {"openid": 1, "received_at": 1, "event": 1, "test_user": 1}


async def claim(db: Db, keys: list[str], batch: ObjectId) -> int:
    """Claim the uncounted messages among ``keys`` for ``batch`` (each goes to one batch only);
    how many it claimed."""
    result = await db[messages_store.COLLECTION].update_many(
        {"_id": {"$in": keys}, "uncounted": True}, {"$set": {"uncounted": batch}}
    )
    return int(result.modified_count)


async def apply(db: Db, batch: ObjectId, known: list[dict[str, Any]] | None = None) -> int:
    """Add the messages claimed by ``batch`` to their users and clear the claims; return how many
    messages there were. Safe to repeat, also after a try whose writes landed unseen.

    ``known``: the claimed messages' fields when the caller has them (it claimed every message it
    asked for), which saves reading them back.
    """
    if known is None:
        counted = await add_to_users(db, batch)
    else:
        counted = await _write_users(db, batch, known)
    await db[messages_store.COLLECTION].update_many(
        {"uncounted": batch}, {"$unset": {"uncounted": ""}}
    )
    return counted


async def add_to_users(db: Db, batch: ObjectId) -> int:
    """The users' half of ``apply``: one tagged update per user. A user document that has seen
    ``batch`` does not match the filter, and the upsert then fails on the ``_id`` index: that
    means "already counted", so a repeat changes nothing."""
    docs = await db[messages_store.COLLECTION].find({"uncounted": batch}, _FIELDS).to_list()
    return await _write_users(db, batch, docs)


async def _write_users(db: Db, batch: ObjectId, docs: list[dict[str, Any]]) -> int:
    users: dict[str, _User] = {}
    for doc in docs:
        user = users.get(doc["openid"])
        if user is None:
            at = doc["received_at"]
            user = users[doc["openid"]] = _User(first_seen=at, last_seen=at)
        user.add(doc)
    if not users:
        return 0
    ops = [
        UpdateOne({"_id": openid, "counted": {"$ne": batch}}, user.update(batch), upsert=True)
        for openid, user in users.items()
    ]
    try:
        await db[COLLECTION].bulk_write(ops, ordered=False)
    except BulkWriteError as e:
        errors = e.details.get("writeErrors", [])
        if not errors or any(error.get("code") != DUPLICATE_KEY for error in errors):
            raise
    return sum(user.count for user in users.values())


class UserStats:
    """Counts the messages this process stored, one batch per interval, exactly once.

    ``seen(key)`` after a message insert; ``start()`` runs the sweep for what other (killed)
    processes left uncounted; ``close()`` counts what is left.
    """

    def __init__(
        self,
        db: Db,
        interval: float = 0.5,
        max_pending: int = 1000,
        *,
        recover_after: float = 30.0,
    ) -> None:
        self.db = db
        self.interval = interval
        self.max_pending = max_pending
        self.recover_after = recover_after
        # Message key -> the fields counting needs (None: read them back from the database).
        self._pending: dict[str, dict[str, Any] | None] = {}
        # Batches claimed but not known to be applied: retried (same id) before anything new.
        self._unfinished: list[ObjectId] = []
        self._task: asyncio.Task[None] | None = None
        # The early flush started when the buffer is full; one at a time, or a busy process
        # would start one per message while a slow write is running.
        self._early: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()
        self._closed = False

    def seen(self, key: str, doc: dict[str, Any] | None = None) -> None:
        """Count the newly stored message ``key`` (``doc``: its stored document, whose fields
        spare reading it back) in its user's record, in the next batch."""
        self._pending[key] = {name: doc.get(name) for name in _FIELDS} if doc is not None else None
        if self._closed:
            return
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        if len(self._pending) >= self.max_pending and (self._early is None or self._early.done()):
            self._early = asyncio.get_running_loop().create_task(self._flush_logged())

    @property
    def backlog(self) -> int:
        return len(self._pending) + len(self._unfinished)

    def start(self) -> None:
        """Start the sweep: count messages stored by a process that died before counting them."""
        if self._sweeper is None and not self._closed:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def _run(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.interval)
            if not self._pending and not self._unfinished:
                return
            await self._flush_logged()

    async def _flush_logged(self) -> None:
        try:
            await self.flush()
        except PyMongoError as e:
            # An outage is the database state's news (logged once there); a bug gets its traceback.
            log.warning(
                "user counters not written (%s); will retry",
                type(e).__name__,
                exc_info=not is_outage(e),
            )

    async def flush(self) -> None:
        """Count everything this process has stored so far (kept for the next try on failure)."""
        async with self._flush_lock:
            while self._unfinished:
                await apply(self.db, self._unfinished[0])
                self._unfinished.pop(0)
            if not self._pending:
                return
            pending, self._pending = self._pending, {}
            keys = sorted(pending)
            batch = ObjectId()
            try:
                claimed = await claim(self.db, keys, batch)
            except PyMongoError:
                # It may have landed: then the batch is retried as unfinished, else the keys are
                # claimed again (a claimed message is never claimed twice).
                for key, info in pending.items():
                    self._pending.setdefault(key, info)
                self._unfinished.append(batch)
                raise
            self._unfinished.append(batch)
            # All claimed, all known: no need to read them back (the usual case).
            known = [info for key in keys if (info := pending[key]) is not None]
            everything = claimed == len(keys) == len(known)
            await apply(self.db, batch, known if everything else None)
            self._unfinished.remove(batch)

    async def sweep(self) -> int:
        """Count what no live batch will: batches claimed over ``recover_after`` ago and never
        finished, and messages stored that long ago and never claimed. Returns the count."""
        msgs = self.db[messages_store.COLLECTION]
        now = dt.datetime.now(dt.UTC)
        old = now - dt.timedelta(seconds=self.recover_after)
        counted = 0
        async with self._flush_lock:
            # An ObjectId carries its creation time: the batch's claim time.
            stale = [
                batch
                for batch in await msgs.distinct("uncounted", {"uncounted": {"$gte": MIN_BATCH}})
                if isinstance(batch, ObjectId) and batch.generation_time <= old
            ]
            for batch in stale:
                counted += await apply(self.db, batch)
            keys = [
                doc["_id"]
                async for doc in msgs.find(
                    {"uncounted": True, "received_at": {"$lte": old}}, {"_id": 1}
                ).limit(self.max_pending)
            ]
            if keys:
                batch = ObjectId()
                await claim(self.db, keys, batch)
                counted += await apply(self.db, batch)
        if counted:
            log.info("counted %d message(s) left uncounted by an earlier process", counted)
        return counted

    async def _sweep_forever(self) -> None:
        while not self._closed:
            try:
                while await self.sweep() >= self.max_pending:
                    pass  # a large backlog: keep going
            except PyMongoError as e:
                log.debug("user counter sweep failed (%s); trying again later", type(e).__name__)
            await asyncio.sleep(max(self.recover_after / 3, 1.0))

    async def close(self) -> None:
        """Count what is left and stop the background tasks."""
        self._closed = True
        for task in (self._task, self._sweeper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._early is not None:
            await self._early  # logs its own failure; the flush below retries what it kept
        try:
            await self.flush()
        except PyMongoError as e:
            log.warning(
                "could not count %d message(s) at shutdown (%s); a later sweep counts them",
                self.backlog,
                type(e).__name__,
                exc_info=not is_outage(e),
            )
