"""The ``wechat_api`` collection: the shared access_token, its refresh lease, and API settings.

Documents, all addressed by ``_id`` (no other index is needed):

- ``token:<appid>``: ``value``, ``expires_at``, ``fetched_at`` (tz-aware UTC), ``fetched_by``.
  Every process reads the access_token from here; WeChat allows about 2000 token fetches a day
  and a fresh fetch makes the previous token expire five minutes later, so processes share one.
- ``lease:<name>``: ``holder``, ``until``. Whoever holds an unexpired lease may fetch a new token;
  the others wait for the new document. Acquired with a conditional ``update_one(upsert=True)``:
  it matches only an expired lease, and when the lease is held the upsert's insert collides with
  the existing ``_id`` (``DuplicateKeyError``), which means "someone else has it". No
  ``find_one_and_update`` (it scans the whole collection on SecantusDB).
- ``setting:<name>``: ``value``, ``updated_at`` and free-form details; e.g. ``image_media_id``,
  the image sent back for images (written by ``python -m service media upload``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from typing import Any

from pymongo.errors import DuplicateKeyError

from . import Db

__all__ = [
    "COLLECTION",
    "IMAGE_MEDIA_ID",
    "Token",
    "acquire_lease",
    "ensure_indexes",
    "get_setting",
    "image_media_id",
    "load_token",
    "release_lease",
    "save_token",
    "set_image_media_id",
    "set_setting",
]

COLLECTION = "wechat_api"
IMAGE_MEDIA_ID = "image_media_id"


def _utc(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC)


def _timestamp(value: dt.datetime) -> float:
    if value.tzinfo is None:  # a client without tz_aware: BSON dates are UTC
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


@dataclasses.dataclass(frozen=True)
class Token:
    """An access_token and its lifetime (Unix timestamps)."""

    value: str
    expires_at: float
    fetched_at: float

    def fresh(self, margin: float, now: float | None = None) -> bool:
        """Still good for more than ``margin`` seconds (at most half its lifetime).

        Capping the margin keeps a short-lived token (``expires_in`` below the margin) usable for
        a while instead of refreshing it on every call.
        """
        now = time.time() if now is None else now
        lifetime = max(self.expires_at - self.fetched_at, 0.0)
        return now < self.expires_at - min(margin, lifetime / 2)


async def ensure_indexes(db: Db) -> None:
    """Nothing to create: every document is addressed by ``_id``."""


async def load_token(db: Db, app_id: str) -> Token | None:
    doc = await db[COLLECTION].find_one({"_id": f"token:{app_id}"})
    if doc is None or not doc.get("value"):
        return None
    return Token(doc["value"], _timestamp(doc["expires_at"]), _timestamp(doc["fetched_at"]))


async def save_token(
    db: Db, app_id: str, value: str, expires_in: float, *, fetched_by: str
) -> Token:
    """Store a token WeChat just issued (called by the lease holder only)."""
    now = time.time()
    token = Token(value, now + expires_in, now)
    fields = {
        "value": value,
        "expires_at": _utc(token.expires_at),
        "fetched_at": _utc(now),
        "fetched_by": fetched_by,
    }
    key = {"_id": f"token:{app_id}"}
    try:
        await db[COLLECTION].update_one(key, {"$set": fields}, upsert=True)
    except DuplicateKeyError:  # a racing first insert: the document exists now
        await db[COLLECTION].update_one(key, {"$set": fields})
    return token


async def acquire_lease(db: Db, name: str, holder: str, ttl: float) -> bool:
    """Take the lease ``name`` for ``ttl`` seconds if it is free or expired; True when taken.

    Re-acquiring a lease one already holds also succeeds (and extends it).
    """
    now = time.time()
    try:
        result = await db[COLLECTION].update_one(
            {"_id": f"lease:{name}", "$or": [{"until": {"$lte": _utc(now)}}, {"holder": holder}]},
            {"$set": {"holder": holder, "until": _utc(now + ttl), "taken_at": _utc(now)}},
            upsert=True,
        )
    except DuplicateKeyError:
        return False  # the lease document exists and someone else holds it
    return result.matched_count == 1 or result.upserted_id is not None


async def release_lease(db: Db, name: str, holder: str) -> None:
    """Give the lease back early (only if we still hold it)."""
    await db[COLLECTION].delete_one({"_id": f"lease:{name}", "holder": holder})


async def get_setting(db: Db, name: str) -> dict[str, Any] | None:
    """The setting document (``value``, ``updated_at``, details) or None."""
    return await db[COLLECTION].find_one({"_id": f"setting:{name}"})


async def set_setting(db: Db, name: str, value: Any, **details: Any) -> None:
    fields = {"value": value, "updated_at": _utc(time.time()), **details}
    key = {"_id": f"setting:{name}"}
    try:
        await db[COLLECTION].replace_one(key, fields, upsert=True)
    except DuplicateKeyError:
        await db[COLLECTION].replace_one(key, fields)


async def image_media_id(db: Db) -> str | None:
    """The stored image reply (from ``media upload``), or None when there is none."""
    doc = await get_setting(db, IMAGE_MEDIA_ID)
    value = doc.get("value") if doc else None
    return str(value) if value else None


async def set_image_media_id(db: Db, media_id: str, **details: Any) -> None:
    await set_setting(db, IMAGE_MEDIA_ID, media_id, **details)
