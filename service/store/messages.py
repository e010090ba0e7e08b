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
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.errors import DuplicateKeyError

from . import Db, journaled

__all__ = [
    "COLLECTION",
    "SignatureReused",
    "ensure_indexes",
    "find",
    "insert_new",
    "insert_once",
    "set_delivery",
    "wait_for",
]

COLLECTION = "messages"


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


def _uncounted(doc: dict[str, Any]) -> dict[str, Any]:
    """The document as stored: not yet in its user's counters (``service.store.users``)."""
    return {**doc, "uncounted": True}


async def insert_once(db: Db, doc: dict[str, Any]) -> dict[str, Any] | None:
    """Insert ``doc``; return ``None`` when it was new, or the stored document when it was not.

    Raises ``SignatureReused`` when its ``signed`` pair is bound to another message.
    """
    try:
        await journaled(db, COLLECTION).insert_one(_uncounted(doc))
    except DuplicateKeyError as e:
        pattern = (e.details or {}).get("keyPattern") or {}
        if "signed" in pattern and doc.get("signed"):
            # A retry with the same URL violates both indexes (and may be reported on either).
            holder = await db[COLLECTION].find_one({"signed": doc["signed"]})
            if holder is not None and holder["_id"] != doc["_id"]:
                raise SignatureReused(str(holder["_id"])) from e
            if holder is not None:
                return holder
        return await wait_for(db, doc["_id"])
    return None


async def insert_new(db: Db, doc: dict[str, Any]) -> bool:
    """Insert ``doc`` (a spool replay); False when a document with its ``_id`` already exists."""
    try:
        await journaled(db, COLLECTION).insert_one(_uncounted(doc))
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
