"""Reply rules and the custom menu as the owner last saved them: ``reply_rules`` and ``menus``.

``reply_rules`` holds one document, ``_id: "current"``::

    data        the whole definition (welcome, default, unknown, image, rules), validated
                before it was written (``service.replies``); the hot path never reads it
    version     1, 2, 3… raised by every save (a save may require the version it was based on)
    updated_at, updated_by, source ("dashboard", "cli")

Every process follows the collection (``service.definitions.DefinitionWatcher``) and keeps the
rules in memory. ``menus`` holds ``_id: "pushed"``: the menu last pushed to WeChat, who pushed it
and when (the platform does not say who set a menu).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pymongo.asynchronous.change_stream import AsyncChangeStream
from pymongo.errors import DuplicateKeyError

from ..clock import now as _now
from . import Db

__all__ = [
    "MENUS",
    "RULES",
    "ensure_indexes",
    "get_pushed_menu",
    "get_rules",
    "save_pushed_menu",
    "save_rules",
    "stamp",
    "watch",
]

RULES = "reply_rules"
MENUS = "menus"
_ID = "current"


async def ensure_indexes(db: Db) -> None:
    """Nothing beyond ``_id``: one document per collection."""


async def get_rules(db: Db) -> dict[str, Any] | None:
    return await db[RULES].find_one({"_id": _ID})


async def stamp(db: Db) -> Any:
    """What the polling fallback compares: the version and time of the last save."""
    doc = await db[RULES].find_one({"_id": _ID}, {"version": 1, "updated_at": 1})
    return None if doc is None else (doc.get("version"), doc.get("updated_at"))


async def save_rules(
    db: Db,
    data: Mapping[str, Any],
    *,
    by: str,
    source: str,
    expected_version: int | None = None,
) -> int | None:
    """Write the definition as the next version; returns it, or ``None`` when
    ``expected_version`` is given and is no longer the stored one (someone saved in between)."""
    now = _now()
    fields = {"data": dict(data), "updated_at": now, "updated_by": by, "source": source}
    if expected_version is not None:
        if expected_version == 0:
            try:
                await db[RULES].insert_one({"_id": _ID, "version": 1, **fields})
            except DuplicateKeyError:
                return None
            return 1
        doc = await db[RULES].find_one_and_update(
            {"_id": _ID, "version": expected_version},
            {"$set": fields, "$inc": {"version": 1}},
            projection={"version": 1},
            return_document=True,
        )
        return None if doc is None else int(doc["version"])
    doc = await db[RULES].find_one_and_update(
        {"_id": _ID},
        {"$set": fields, "$inc": {"version": 1}},
        projection={"version": 1},
        upsert=True,
        return_document=True,
    )
    return int(doc["version"]) if doc is not None else None


async def watch(
    db: Db, *, resume_after: Mapping[str, Any] | None = None, max_await_ms: int = 1000
) -> AsyncChangeStream[dict[str, Any]]:
    """A change stream of every change to ``reply_rules`` (the documents themselves not needed)."""
    return await db[RULES].watch(
        [{"$project": {"operationType": 1, "documentKey": 1}}],
        resume_after=resume_after,
        max_await_time_ms=max_await_ms,
    )


async def get_pushed_menu(db: Db) -> dict[str, Any] | None:
    return await db[MENUS].find_one({"_id": "pushed"})


async def save_pushed_menu(db: Db, menu: Mapping[str, Any], *, by: str) -> None:
    await db[MENUS].replace_one(
        {"_id": "pushed"},
        {"menu": dict(menu), "pushed_at": _now(), "pushed_by": by},
        upsert=True,
    )
