"""The ``messages`` collection: every inbound message with the reply we gave, once per message key.

``_id`` is the message key (``msg:<MsgId>`` or ``ev:<openid>:<CreateTime>:<event>``), so the unique
``_id`` index is what makes WeChat's retries idempotent: the second insert fails with
``DuplicateKeyError`` and the retry is answered with the reply stored by the first.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.errors import DuplicateKeyError

from . import Db, journaled

__all__ = [
    "COLLECTION",
    "ensure_indexes",
    "find",
    "insert_new",
    "insert_once",
    "set_delivery",
    "wait_for",
]

COLLECTION = "messages"


async def ensure_indexes(db: Db) -> None:
    coll = db[COLLECTION]
    await coll.create_index([("received_at", DESCENDING)], name="received_at")
    await coll.create_index(
        [("openid", ASCENDING), ("received_at", DESCENDING)], name="openid_time"
    )
    await coll.create_index([("type", ASCENDING), ("received_at", DESCENDING)], name="type_time")


def _uncounted(doc: dict[str, Any]) -> dict[str, Any]:
    """The document as stored: not yet in its user's counters (``service.store.users``)."""
    return {**doc, "uncounted": True}


async def insert_once(db: Db, doc: dict[str, Any]) -> dict[str, Any] | None:
    """Insert ``doc``; return ``None`` when it was new, or the stored document when it was not."""
    try:
        await journaled(db, COLLECTION).insert_one(_uncounted(doc))
    except DuplicateKeyError:
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
