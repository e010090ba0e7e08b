"""The ``users`` collection: one document per openid (first/last seen, message count, subscribed).

Exact counters, off the hot path, and no write to a message after its insert.

- **Batches, claimed at the insert.** A process registers a counting batch (an ObjectId) in
  ``counter_batches`` before it uses it; each message it stores carries the batch's id
  (``cb``) from its insert on. Every half second the batch in use is closed (a registered one
  takes its place) and, once its inserts have all settled, applied: the batch's messages are read
  back (``cb`` index, deleted ones gone), one tagged update per user is written (its filter
  requires that the user has not seen this batch: a repeat, after a timeout that landed or by
  another process, changes nothing) and the batch is marked done, in the same write that
  registers the next one. A batch takes messages for a bounded time after its registration
  (``recover_after`` less a margin); its registration says until when (``until``) a message can
  still land in it, so a registration left behind by a killed process is applied by any
  process's sweep after that (and ``recover_after``). An insert whose outcome is
  unknown (a timeout) is inserted again before its batch is read back, so it cannot land after.
  On SecantusDB a message's update costs the server about twice its insert; the claim and the
  clear below cost two per message.
- **Without a registered batch** (a process starting, the database slow, a spool replay), a
  message is stored with ``uncounted: true``; the batch then *claims* it (``uncounted`` becomes
  the batch's id, a conditional update per message, so a message is claimed by one batch only),
  applies the tagged user updates and clears the claims. Messages left unclaimed, or claimed by a
  batch that never finished, are counted by a sweep once ``recover_after`` seconds old.

So each message is counted exactly once, whatever fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import os
import secrets
import socket
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.errors import BulkWriteError, PyMongoError

from . import Db, is_outage, journaled
from . import messages as messages_store

__all__ = [
    "BATCHES",
    "COLLECTION",
    "Batch",
    "UserStats",
    "ensure_indexes",
    "get",
    "reach",
    "record_channel",
]

COLLECTION = "users"
# The registered counting batches (see the module's docstring): only those not yet applied.
BATCHES = "counter_batches"
log = logging.getLogger(__name__)

# Seconds after its last possible message by which a batch's inserts have settled: the hot path
# bounds each insert by its database timeout (4 s, sent to the server as maxTimeMS); a margin.
BATCH_SETTLE = 8.0

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
    # The counting batch a message joined at its insert: its batch is read back by it.
    await db[messages_store.COLLECTION].create_index(
        [("cb", ASCENDING)], name="counting_batch", sparse=True
    )
    # Registered batches not applied yet carry ``until`` (the sweep's); applied ones go after
    # an hour.
    batches = db[BATCHES]
    await batches.create_index([("until", ASCENDING)], name="until", sparse=True)
    await batches.create_index([("done_at", ASCENDING)], name="done_ttl", expireAfterSeconds=3600)


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
    return await _write_found(db, batch, {"uncounted": batch})


def _done(batch: ObjectId, now: dt.datetime) -> UpdateOne:
    return UpdateOne({"_id": batch}, {"$set": {"done_at": now}, "$unset": {"until": ""}})


async def _apply_registered(db: Db, batch: ObjectId) -> int:
    """Count the messages stored with ``cb: batch`` (read back: deleted ones are gone); how many
    there were. Safe to repeat: each user's update is tagged with the batch."""
    return await _write_found(db, batch, {"cb": batch})


async def _write_found(db: Db, batch: ObjectId, query: dict[str, Any]) -> int:
    """The users' updates tagged ``batch`` for the messages ``query`` finds."""
    docs = await db[messages_store.COLLECTION].find(query, _FIELDS).to_list()
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


class Batch:
    """A registered counting batch of this process (see the module's docstring)."""

    __slots__ = ("id", "in_flight", "joined", "opened", "uncertain")

    def __init__(self, batch_id: ObjectId, opened: float) -> None:
        self.id = batch_id
        self.opened = opened  # loop time at which its registration started
        self.joined = 0  # messages that joined it (their insert tried)
        self.in_flight = 0  # of which the insert has not settled yet
        # Stored forms of messages whose insert failed in a way that may have landed.
        self.uncertain: list[dict[str, Any]] = []


class UserStats:
    """Counts the messages this process stored, one batch per interval, exactly once.

    On the hot path: ``join()`` before a message's insert (its batch, stored as ``cb``; None:
    store it unclaimed), ``settle(batch)`` after it, and ``seen(key)`` after an unclaimed one's
    insert. ``start()`` registers the first batch and runs the sweep for what other (killed)
    processes left uncounted; ``close()`` counts what is left.
    """

    def __init__(
        self,
        db: Db,
        interval: float = 0.5,
        max_pending: int = 1000,
        *,
        recover_after: float = 30.0,
        batch_use: float | None = None,
        batch_settle: float = BATCH_SETTLE,
    ) -> None:
        self.db = db
        self.interval = interval
        # How long after its registration a batch takes messages. A batch is closed at every
        # flush; this only binds when flushes stall (a slow database), and then messages are
        # stored unclaimed. Long enough for that to be rare, short enough that a killed
        # process's batch is counted after about ``recover_after``.
        self.batch_use = (
            batch_use if batch_use is not None else max(recover_after - batch_settle, 4 * interval)
        )
        self.batch_settle = batch_settle
        self.max_pending = max_pending
        self.recover_after = recover_after
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        # Message key -> the fields counting needs (None: read them back from the database).
        self._pending: dict[str, dict[str, Any] | None] = {}
        # Batches claimed but not known to be applied: retried (same id) before anything new.
        self._unfinished: list[ObjectId] = []
        # The registered batch messages join now, the one registered to follow it, and those
        # closed but not applied yet.
        self._current: Batch | None = None
        self._next: Batch | None = None
        self._closing: list[Batch] = []
        self._task: asyncio.Task[None] | None = None
        # The early flush started when the buffer is full; one at a time, or a busy process
        # would start one per message while a slow write is running.
        self._early: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()
        self._started = False  # registers batches once started
        self._closed = False

    def join(self) -> Batch | None:
        """The batch a message about to be inserted joins (stored as its ``cb``); None: store it
        with ``uncounted: true`` and call ``seen`` once it is stored. Call ``settle`` after."""
        if self._closed:
            return None
        batch = self._current
        now = asyncio.get_running_loop().time()
        while batch is not None and now - batch.opened > self.batch_use:
            # Idle since the last flush: no message may join it any more; the next one may.
            self._closing.append(batch)
            self._current, self._next = self._next, None
            batch = self._current
        if batch is None:
            self._register_now()
            return None
        batch.joined += 1
        batch.in_flight += 1
        self._ensure_running()
        return batch

    def settle(self, batch: Batch, *, uncertain: dict[str, Any] | None = None) -> None:
        """The insert of a message that joined ``batch`` is over. ``uncertain``: its stored form,
        when the insert failed in a way that may have landed (inserted again before counting)."""
        batch.in_flight -= 1
        if uncertain is not None:
            batch.uncertain.append(uncertain)

    def seen(self, key: str, doc: dict[str, Any] | None = None) -> None:
        """Count the newly stored unclaimed message ``key`` (``doc``: its stored document, whose
        fields spare reading it back) in its user's record, in the next batch."""
        self._pending[key] = {name: doc.get(name) for name in _FIELDS} if doc is not None else None
        if self._closed:
            return
        self._ensure_running()
        if len(self._pending) >= self.max_pending:
            self._flush_early()

    def _register_now(self) -> None:
        """No batch to join: flush now (it registers batches first), not at the next interval."""
        if self._started:
            self._flush_early()

    def _flush_early(self) -> None:
        """A flush now, before the next interval (one at a time)."""
        if self._early is None or self._early.done():
            self._early = asyncio.get_running_loop().create_task(self._flush_logged())

    def _ensure_running(self, *, now: bool = False) -> None:
        if not self._closed and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._run(now=now))

    @property
    def backlog(self) -> int:
        batches = self._closing + ([self._current] if self._current is not None else [])
        return len(self._pending) + len(self._unfinished) + sum(b.joined for b in batches)

    def start(self) -> None:
        """Register the first batch; start the sweep: count messages stored by a process that
        died before counting them."""
        if self._closed:
            return
        self._started = True
        self._ensure_running(now=True)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    def _busy(self) -> bool:
        current = self._current
        return bool(
            self._pending
            or self._unfinished
            or self._closing
            or ((current is None or self._next is None) and self._started)
            or (current is not None and current.joined)
        )

    async def _run(self, *, now: bool = False) -> None:
        while not self._closed:
            if not now:
                await asyncio.sleep(self.interval)
                if not self._busy():
                    return
            now = False
            await self._flush_logged()

    async def _flush_logged(self) -> None:
        try:
            await self.flush()
        except PyMongoError as e:
            # An outage is the database state's news (logged once there); a bug gets its traceback.
            # Nothing to count (only the next batch's registration failed): not worth a warning.
            log.log(
                logging.WARNING if self.backlog else logging.DEBUG,
                "user counters not written (%s); will retry",
                type(e).__name__,
                exc_info=not is_outage(e),
            )

    async def flush(self) -> None:
        """Count everything this process has stored so far (kept for the next try on failure)."""
        async with self._flush_lock:
            # Batches first: a flush started for want of one registers it before the claims.
            await self._flush_batches()
            await self._flush_unclaimed()

    async def _flush_unclaimed(self) -> None:
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

    async def _flush_batches(self) -> None:
        """Close the batch in use (the registered next one takes its place at once), apply the
        closed ones whose inserts have settled, mark them done and register the next batch (one
        write for both)."""
        if self._current is not None and (self._current.joined or self._closed):
            self._closing.append(self._current)
            self._current = None
        if self._current is None and not self._closed:
            self._current, self._next = self._next, None
        ready = [batch for batch in self._closing if batch.in_flight == 0]
        for batch in ready:
            await self._apply_batch(batch)
        now = dt.datetime.now(dt.UTC)
        # One ``update`` command for both: the applied batches are marked done (and leave the
        # sweep's index: no ``until``), the next ones are registered.
        ops: list[UpdateOne] = [_done(batch.id, now) for batch in ready]
        if self._closed and self._next is not None:
            ops.append(_done(self._next.id, now))  # registered, never used
        registering: list[Batch] = []
        if self._started and not self._closed:
            # Two ahead at the start (the one in use and the next), one after.
            wanted = (self._current is None) + (self._next is None)
            loop_time = asyncio.get_running_loop().time()
            registering = [Batch(ObjectId(), loop_time) for _ in range(wanted)]
            # No message joins one after batch_use; their inserts settle within batch_settle.
            until = now + dt.timedelta(seconds=self.batch_use + self.batch_settle)
            fields = {"holder": self.holder, "opened_at": now, "until": until}
            ops += [
                UpdateOne({"_id": batch.id}, {"$setOnInsert": fields}, upsert=True)
                for batch in registering
            ]
        if not ops:
            return
        await journaled(self.db, BATCHES).bulk_write(ops, ordered=True)
        for batch in ready:
            self._closing.remove(batch)
        if self._closed:
            self._next = None
            return
        for batch in registering:
            if self._current is None:
                self._current = batch
            else:
                self._next = batch

    async def _apply_batch(self, batch: Batch) -> None:
        """Count the messages that joined ``batch`` (a repeat changes nothing)."""
        if batch.uncertain:
            # Settle what may have landed: stored now, a late landing of the first try is refused
            # by the unique _id, so the read below sees every message this batch will ever have.
            await messages_store.insert_again(self.db, batch.uncertain, batch.id)
            batch.uncertain = []
        if batch.joined:
            await _apply_registered(self.db, batch.id)

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
            counted += await self._sweep_registered(now, old)
        if counted:
            log.info("counted %d message(s) left uncounted by an earlier process", counted)
        return counted

    async def _sweep_registered(self, now: dt.datetime, old: dt.datetime) -> int:
        """Apply the registered batches of other processes that no message can join any more
        (``until`` passed) and that are ``recover_after`` old: their process died, or is stuck
        (applying a batch twice changes nothing)."""
        counted = 0
        stale = await self.db[BATCHES].find({"until": {"$lte": now}}).to_list(self.max_pending)
        for doc in stale:
            batch = doc["_id"]
            if doc.get("holder") == self.holder or not isinstance(batch, ObjectId):
                continue  # this process's own are applied by its flush
            if batch.generation_time > old:
                continue
            counted += await _apply_registered(self.db, batch)
            await self.db[BATCHES].bulk_write([_done(batch, now)])
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
