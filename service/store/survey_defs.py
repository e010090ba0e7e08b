"""The survey definitions: ``surveys`` (one document per survey) and ``survey_versions``.

``surveys`` (``_id`` = the survey id)::

    latest        the newest published version number (0: nothing published yet)
    draft         {text, saved_at, saved_by} or absent: the owner's work in progress (may be
                  invalid; published only after full validation)
    trial         {text, digest, at}: a valid draft the simulator's test users get instead of
                  the published version ("try it"); cleared by the next publish
    open          False once the owner closed it (absent: the definition's own ``open``)
    opens_at, closes_at   the owner's schedule (absent: the definition's own)
    archived      True: hidden, closed, its keywords free; versions and results kept
    imports       {source key: digest} of the files imported at start-up (``shipped:baogan.yaml``)
    created_at, updated_at

``survey_versions`` (``_id`` = ``"<survey id>:<n>"``), immutable once inserted::

    survey, n, text (the YAML exactly as validated), digest (of its data), published_at,
    published_by, source ("dashboard", "cli", "shipped:baogan.yaml", "dir:lab.yaml", ...)

Publishing inserts the version (the unique ``_id`` makes two publishers of the same number
collide: the loser reads again) and then raises ``latest``; every process follows the ``surveys``
collection (``service.definitions``), so that second write is what makes the version live.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.change_stream import AsyncChangeStream
from pymongo.errors import DuplicateKeyError

from ..clock import now as _now
from . import Db

__all__ = [
    "SURVEYS",
    "VERSIONS",
    "all_surveys",
    "ensure_indexes",
    "get_draft",
    "get_survey",
    "get_version",
    "imported_digest",
    "insert_version",
    "mark_imported",
    "raise_latest",
    "save_draft",
    "set_controls",
    "set_trial",
    "stamps",
    "survey_versions",
    "version_id",
    "version_index",
    "versions_by_id",
    "watch",
]

SURVEYS = "surveys"
VERSIONS = "survey_versions"


async def ensure_indexes(db: Db) -> None:
    await db[VERSIONS].create_index([("survey", ASCENDING), ("n", ASCENDING)], name="survey_n")


def version_id(survey_id: str, n: int) -> str:
    return f"{survey_id}:{n}"


async def all_surveys(db: Db) -> list[dict[str, Any]]:
    """Every survey document (the drafts' text left out)."""
    return await db[SURVEYS].find({}, {"draft.text": 0}).to_list()


async def get_survey(db: Db, survey_id: str) -> dict[str, Any] | None:
    return await db[SURVEYS].find_one({"_id": survey_id})


async def stamps(db: Db) -> list[tuple[str, Any]]:
    """``(id, updated_at)`` of every survey: what the polling fallback compares."""
    docs = await db[SURVEYS].find({}, {"updated_at": 1}).to_list()
    return sorted((str(d["_id"]), d.get("updated_at")) for d in docs)


async def version_index(db: Db) -> list[dict[str, Any]]:
    """``{_id, survey, n, digest}`` of every published version (no text)."""
    return await db[VERSIONS].find({}, {"survey": 1, "n": 1, "digest": 1}).to_list()


async def versions_by_id(db: Db, ids: Iterable[str]) -> list[dict[str, Any]]:
    wanted = list(ids)
    if not wanted:
        return []
    return await db[VERSIONS].find({"_id": {"$in": wanted}}).to_list()


async def get_version(db: Db, survey_id: str, n: int) -> dict[str, Any] | None:
    return await db[VERSIONS].find_one({"_id": version_id(survey_id, n)})


async def survey_versions(db: Db, survey_id: str) -> list[dict[str, Any]]:
    """Every version of one survey, oldest first, texts included."""
    return await db[VERSIONS].find({"survey": survey_id}).sort("n", ASCENDING).to_list()


async def insert_version(db: Db, doc: Mapping[str, Any]) -> bool:
    """Insert version ``doc["n"]``; False when that number exists already (another publisher)."""
    try:
        await db[VERSIONS].insert_one({"_id": version_id(doc["survey"], doc["n"]), **doc})
    except DuplicateKeyError:
        return False
    return True


async def raise_latest(db: Db, survey_id: str, n: int) -> None:
    """Make version ``n`` the newest (never lowers it), creating the survey document if needed."""
    now = _now()
    await db[SURVEYS].update_one(
        {"_id": survey_id},
        {
            "$max": {"latest": n},
            "$set": {"updated_at": now},
            "$setOnInsert": {"created_at": now},
        },
        upsert=True,
    )


async def mark_imported(db: Db, survey_id: str, source: str, digest: str) -> None:
    await db[SURVEYS].update_one(
        {"_id": survey_id}, {"$set": {f"imports.{_key(source)}": digest}}, upsert=True
    )


def _key(source: str) -> str:
    """A source name usable as a field name (no dots, no leading ``$``)."""
    return source.replace(".", "\uff0e").lstrip("$")


def imported_digest(doc: Mapping[str, Any] | None, source: str) -> str | None:
    if doc is None:
        return None
    value = (doc.get("imports") or {}).get(_key(source))
    return str(value) if value else None


async def save_draft(db: Db, survey_id: str, text: str, by: str) -> None:
    now = _now()
    await db[SURVEYS].update_one(
        {"_id": survey_id},
        {
            "$set": {"draft": {"text": text, "saved_at": now, "saved_by": by}, "updated_at": now},
            "$setOnInsert": {"created_at": now, "latest": 0},
        },
        upsert=True,
    )


async def set_trial(db: Db, survey_id: str, text: str, digest: str) -> None:
    now = _now()
    await db[SURVEYS].update_one(
        {"_id": survey_id},
        {
            "$set": {"trial": {"text": text, "digest": digest, "at": now}, "updated_at": now},
            "$setOnInsert": {"created_at": now, "latest": 0},
        },
        upsert=True,
    )


async def get_draft(db: Db, survey_id: str) -> dict[str, Any] | None:
    doc = await db[SURVEYS].find_one({"_id": survey_id}, {"draft": 1})
    return None if doc is None else doc.get("draft")


async def set_controls(
    db: Db, survey_id: str, *, set_fields: Mapping[str, Any], unset_fields: Iterable[str] = ()
) -> bool:
    """Change the owner's controls (open, schedule, archived); False if no such survey."""
    update: dict[str, Any] = {"$set": {**set_fields, "updated_at": _now()}}
    unset = {name: "" for name in unset_fields}
    if unset:
        update["$unset"] = unset
    result = await db[SURVEYS].update_one({"_id": survey_id}, update)
    return result.matched_count == 1


async def watch(
    db: Db, *, resume_after: Mapping[str, Any] | None = None, max_await_ms: int = 1000
) -> AsyncChangeStream[dict[str, Any]]:
    """A change stream of every change to ``surveys`` (the documents themselves not needed)."""
    return await db[SURVEYS].watch(
        [{"$project": {"operationType": 1, "documentKey": 1}}],
        resume_after=resume_after,
        max_await_time_ms=max_await_ms,
    )
