"""The ``qr_codes`` collection: one document per parametric QR code (a survey's channel).

Document (``_id`` = the scene string, ``"<survey>:<channel>"``)::

    survey, channel, ticket, url, permanent, created_at, expires_at (None: permanent),
    image (the PNG's file name under DATA_DIR/qr), scans (every subscribe/SCAN counted),
    last_scan_at
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from . import Db

__all__ = ["COLLECTION", "count_scan", "ensure_indexes", "find", "insert", "list_codes"]

COLLECTION = "qr_codes"


async def ensure_indexes(db: Db) -> None:
    await db[COLLECTION].create_index(
        [("survey", ASCENDING), ("created_at", ASCENDING)], name="survey_created"
    )


async def insert(db: Db, doc: dict[str, Any]) -> bool:
    """Store a new code; False if the scene exists already (one code per survey and channel)."""
    try:
        await db[COLLECTION].insert_one(doc)
    except DuplicateKeyError:
        return False
    return True


async def find(db: Db, scene: str) -> dict[str, Any] | None:
    return await db[COLLECTION].find_one({"_id": scene})


async def count_scan(db: Db, scene: str, at: dt.datetime) -> None:
    await db[COLLECTION].update_one(
        {"_id": scene}, {"$inc": {"scans": 1}, "$set": {"last_scan_at": at}}
    )


async def list_codes(db: Db, survey_id: str | None = None) -> list[dict[str, Any]]:
    query = {} if survey_id is None else {"survey": survey_id}
    return await db[COLLECTION].find(query).sort("created_at", ASCENDING).to_list()
