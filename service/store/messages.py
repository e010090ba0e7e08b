"""The ``messages`` collection: every inbound message with the reply we gave, once per message key.

``_id`` is the message key (``msg:<MsgId>`` or ``ev:<openid>:<CreateTime>:<event>``), so the unique
``_id`` index is what makes WeChat's retries idempotent: the second insert fails with
``DuplicateKeyError`` and the retry is answered with the reply stored by the first.

``signed`` is the ``timestamp:nonce`` pair of the request that brought the message, under a unique
index too: in plaintext mode the signature does not cover the body, so a signed URL seen once (a
log, a proxy) could carry any other message. The insert decides, without another round trip: the
pair is bound to the first message it came with, and a different message with it is refused.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

from bson import ObjectId
from bson.errors import InvalidDocument
from pymongo import ASCENDING, DESCENDING
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from . import Db, is_outage, journaled
from .batcher import Batcher, write_errors

__all__ = [
    "COLLECTION",
    "MessageWriter",
    "SignatureReused",
    "ensure_indexes",
    "find",
    "insert_again",
    "insert_new",
    "insert_once",
    "set_delivery",
    "wait_for",
]

COLLECTION = "messages"
log = logging.getLogger(__name__)


class SignatureReused(Exception):
    """The request's ``timestamp:nonce`` already came with another message (a replayed URL)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"signed pair already used by {key}")
        self.key = key


async def ensure_indexes(db: Db) -> None:
    coll = db[COLLECTION]
    await coll.create_index([("received_at", DESCENDING)], name="received_at")
    await coll.create_index(
        [("openid", ASCENDING), ("received_at", DESCENDING)], name="openid_time"
    )
    await coll.create_index([("type", ASCENDING), ("received_at", DESCENDING)], name="type_time")
    await coll.create_index([("signed", ASCENDING)], name="signed", unique=True, sparse=True)


def _as_stored(doc: dict[str, Any], batch: ObjectId | None = None) -> dict[str, Any]:
    """The document as stored: not yet in its user's counters (``service.store.users``): in the
    counting ``batch`` when given (``cb``), else unclaimed (``uncounted: true``).

    A ``forgotten`` message (its sender just had their data deleted, ``service.privacy``) keeps
    what the reply said, for WeChat's retries, and nothing of who sent it: no openid, body,
    fields, or reply XML (which names the addressee); nobody's to count either.
    """
    if doc.get("forgotten"):
        return {**doc, "openid": "", "raw": "", "fields": {}, "text": "", "reply_xml": ""}
    if batch is not None:
        return {**doc, "cb": batch}
    return {**doc, "uncounted": True}


async def insert_once(db: Db, doc: dict[str, Any]) -> dict[str, Any] | None:
    """Insert ``doc``; return ``None`` when it was new, or the stored document when it was not.

    Raises ``SignatureReused`` when its ``signed`` pair is bound to another message.
    """
    try:
        await journaled(db, COLLECTION).insert_one(_as_stored(doc))
    except DuplicateKeyError as e:
        return await _after_duplicate(db, doc, (e.details or {}).get("keyPattern") or {})
    return None


async def _after_duplicate(
    db: Db, doc: dict[str, Any], pattern: dict[str, Any]
) -> dict[str, Any] | None:
    """``doc``'s insert hit a unique index (``pattern``): the stored message it is a retry of, or
    ``SignatureReused`` when its ``signed`` pair belongs to another message."""
    if "signed" in pattern and doc.get("signed"):
        # A retry with the same URL violates both indexes (and may be reported on either).
        holder = await db[COLLECTION].find_one({"signed": doc["signed"]})
        if holder is not None and holder["_id"] != doc["_id"]:
            raise SignatureReused(str(holder["_id"]))
        if holder is not None:
            return holder
    return await wait_for(db, doc["_id"])


@dataclasses.dataclass(frozen=True)
class _Duplicate:
    pattern: dict[str, Any]


class MessageWriter:
    """The message inserts of one process, naturally batched: the messages in flight together go
    in one unordered ``insert_many`` (one journal flush for all of them). A duplicate key on one
    document is that message's business (a retry, or a reused signed URL); the others are new.
    Same contract as ``insert_once``."""

    def __init__(self, db: Db, *, timeout: float | None = None, max_items: int = 64) -> None:
        self.db = db
        self.batcher: Batcher[dict[str, Any], _Duplicate | None] = Batcher(
            self._insert_many, name="message insert", timeout=timeout, max_items=max_items
        )

    async def insert_once(
        self, doc: dict[str, Any], batch: ObjectId | None = None
    ) -> dict[str, Any] | None:
        """``batch``: the counting batch it joins (``service.store.users``)."""
        size = 3 * (len(doc.get("raw") or "") + len(doc.get("reply_xml") or "")) + 1024
        duplicate = await self.batcher.submit(_as_stored(doc, batch), size)
        if duplicate is None:
            return None
        return await _after_duplicate(self.db, doc, duplicate.pattern)

    async def _insert_many(self, docs: list[dict[str, Any]]) -> list[_Duplicate | Exception | None]:
        results: list[_Duplicate | Exception | None] = [None] * len(docs)
        try:
            await journaled(self.db, COLLECTION).insert_many(docs, ordered=False)
        except BulkWriteError as e:
            # A write concern error raises again: every message of the batch is spooled.
            failed = write_errors(e, lambda error: _Duplicate(dict(error.get("keyPattern") or {})))
            for index, outcome in failed.items():
                results[index] = outcome
        return results


async def insert_again(db: Db, docs: list[dict[str, Any]], batch: ObjectId) -> None:
    """Insert, one by one, the messages of counting ``batch`` whose first insert may or may not
    have landed. A duplicate ``_id`` means it had (and a signed URL another message took, that it
    was refused); a document the database refuses for itself was never stored: both are settled.
    An outage is raised (tried again with the batch)."""
    for doc in docs:
        try:
            await insert_new(db, doc, batch)
        except (InvalidDocument, PyMongoError) as e:
            if is_outage(e):
                raise
            log.warning("message %s cannot be stored (%s); not counted", doc.get("_id"), e)


async def insert_new(db: Db, doc: dict[str, Any], batch: ObjectId | None = None) -> bool:
    """Insert ``doc`` (a spool replay; ``batch``: the counting batch it joins); False when a
    document with its ``_id`` already exists."""
    try:
        await journaled(db, COLLECTION).insert_one(_as_stored(doc, batch))
    except DuplicateKeyError:
        return False
    return True


async def set_delivery(db: Db, key: str, status: str, error: str = "") -> None:
    """Record the fate of a late reply's customer-service message (``sent``, ``failed``, ...)."""
    fields: dict[str, Any] = {"delivery": "custom", "delivery_status": status}
    if error:
        fields["delivery_error"] = error[:500]
    await db[COLLECTION].update_one({"_id": key}, {"$set": fields})


async def find(db: Db, key: str) -> dict[str, Any] | None:
    return await db[COLLECTION].find_one({"_id": key})


async def wait_for(db: Db, key: str, patience: float = 3.0) -> dict[str, Any] | None:
    """The stored message, waiting briefly if a concurrent insert is not visible yet."""
    deadline = asyncio.get_running_loop().time() + patience
    delay = 0.02
    while True:
        doc = await find(db, key)
        if doc is not None or asyncio.get_running_loop().time() >= deadline:
            return doc
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)
