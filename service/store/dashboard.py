"""Read models for the owner's dashboard: overview counts, the message log, users, conversations.

Everything here reads the ``messages`` and ``users`` collections written by the endpoint; the only
writes are the test-data wipe. Survey numbers come from ``service.store.surveys``.

``include_test`` everywhere: the simulator's users (openids starting with ``sim-``) are stored with
``test_user: True``; statistics leave them out unless asked.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import AsyncIterator, Mapping
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.change_stream import AsyncChangeStream

from ..clock import iso as _iso
from . import Db
from . import messages as messages_store
from . import users as users_store

__all__ = [
    "MESSAGE_TYPES",
    "conversation",
    "first_message",
    "iter_messages",
    "iter_users",
    "local_days",
    "message_detail",
    "message_view",
    "messages_after",
    "messages_per_day",
    "messages_per_minute",
    "messages_query",
    "overview",
    "recent_messages",
    "search_messages",
    "search_users",
    "survey_answers_of",
    "user_view",
    "users_query",
    "watch_messages",
    "wipe_test_messages",
]

MESSAGES = messages_store.COLLECTION
USERS = users_store.COLLECTION
# What the message-log filter offers: WeChat's message types plus "event".
MESSAGE_TYPES = ("text", "image", "voice", "video", "shortvideo", "location", "link", "event")
# Left out of everything the dashboard reads: large, and the raw XML may be shown on demand only.
_LIGHT = {"raw": 0, "reply_xml": 0, "fields": 0}


def _not_test(include_test: bool) -> dict[str, Any]:
    return {} if include_test else {"test_user": {"$ne": True}}


# The stored ``text`` of a non-text message is its log summary ("[位置] 广州 (23.1, 113.2)",
# "[事件] click survey_x"): the dashboard shows a translated type label and only the rest.
_SUMMARY_TAG = re.compile(r"^\[[^\]]*\]\s*")


def message_detail(doc: Mapping[str, Any]) -> str:
    """What a message says besides its type: the text, a location's label, an event's key..."""
    text = str(doc.get("text") or "")
    if doc.get("type") == "text":
        return text
    rest = _SUMMARY_TAG.sub("", text, count=1)
    event = str(doc.get("event") or "")
    if event and rest.lower().startswith(event.lower()):
        rest = rest[len(event) :]
    return rest.strip()


def message_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A stored message as the dashboard shows it (JSON-ready; no raw XML)."""
    reply = doc.get("reply") or {}
    return {
        "id": doc["_id"],
        "openid": doc.get("openid", ""),
        "type": doc.get("type", ""),
        "event": doc.get("event") or "",
        "kind": doc.get("kind", ""),
        "text": doc.get("text", ""),
        "detail": message_detail(doc),
        "reply_kind": reply.get("kind", ""),
        "reply": doc.get("reply_text", ""),
        "latency_ms": doc.get("latency_ms"),
        "received_at": _iso(doc.get("received_at")),
        "created_at": _iso(doc.get("created_at")),
        "mode": doc.get("mode", ""),
        "test_user": bool(doc.get("test_user")),
        "process": doc.get("process", ""),
    }


def user_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "openid": doc["_id"],
        "nickname": doc.get("nickname") or "",
        "first_seen": _iso(doc.get("first_seen")),
        "last_seen": _iso(doc.get("last_seen")),
        "messages": int(doc.get("messages") or 0),
        "subscribed": doc.get("subscribed"),
        "subscribed_at": _iso(doc.get("subscribed_at")),
        "unsubscribed_at": _iso(doc.get("unsubscribed_at")),
        "test_user": bool(doc.get("test_user")),
    }


def day_start(now: dt.datetime, tz: str) -> dt.datetime:
    """Midnight of ``now``'s day in the owner's time zone, as a UTC datetime."""
    local = now.astimezone(zoneinfo.ZoneInfo(tz))
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(dt.UTC)


async def overview(
    db: Db, *, now: dt.datetime | None = None, tz: str = "UTC", include_test: bool = False
) -> dict[str, Any]:
    """Messages today / last 7 days, active users, subscribes and unsubscribes.

    "Today" starts at midnight in ``tz``; "7 days" is the last 7 × 24 hours.
    """
    now = now or dt.datetime.now(dt.UTC)
    today = day_start(now, tz)
    week = now - dt.timedelta(days=7)
    since = min(today, week)

    def when(condition: dict[str, Any]) -> dict[str, Any]:
        return {"$sum": {"$cond": [condition, 1, 0]}}

    is_today = {"$gte": ["$received_at", today]}
    is_week = {"$gte": ["$received_at", week]}
    pipeline: list[dict[str, Any]] = [
        {"$match": {"received_at": {"$gte": since, "$lte": now}, **_not_test(include_test)}},
        {"$project": {"received_at": 1, "event": 1, "openid": 1}},
        {
            "$group": {
                "_id": None,
                "messages_today": when(is_today),
                "messages_7d": when(is_week),
                "subscribes_today": when({"$and": [is_today, {"$eq": ["$event", "subscribe"]}]}),
                "subscribes_7d": when({"$and": [is_week, {"$eq": ["$event", "subscribe"]}]}),
                "unsubscribes_today": when(
                    {"$and": [is_today, {"$eq": ["$event", "unsubscribe"]}]}
                ),
                "unsubscribes_7d": when({"$and": [is_week, {"$eq": ["$event", "unsubscribe"]}]}),
            }
        },
    ]
    counts: dict[str, Any] = {}
    async for row in await db[MESSAGES].aggregate(pipeline):
        counts = row
    result: dict[str, Any] = {
        key: int(counts.get(key, 0))
        for key in (
            "messages_today",
            "messages_7d",
            "subscribes_today",
            "subscribes_7d",
            "unsubscribes_today",
            "unsubscribes_7d",
        )
    }
    users = db[USERS]
    base = _not_test(include_test)
    result["active_users_today"] = await users.count_documents(
        {"last_seen": {"$gte": today}, **base}
    )
    result["active_users_7d"] = await users.count_documents({"last_seen": {"$gte": week}, **base})
    result["users_total"] = await users.count_documents(base)
    result["subscribed_users"] = await users.count_documents({"subscribed": True, **base})
    result["today_start"] = _iso(today)
    result["now"] = _iso(now)
    return result


async def messages_per_minute(
    db: Db, *, now: dt.datetime | None = None, minutes: int = 60, include_test: bool = False
) -> list[dict[str, Any]]:
    """Inbound messages per minute for the last ``minutes`` minutes, oldest first, zeros included.

    The last bucket is the current (unfinished) minute.
    """
    now = now or dt.datetime.now(dt.UTC)
    current = now.replace(second=0, microsecond=0)
    first = current - dt.timedelta(minutes=minutes - 1)
    pipeline: list[dict[str, Any]] = [
        {"$match": {"received_at": {"$gte": first, "$lte": now}, **_not_test(include_test)}},
        {
            "$group": {
                "_id": {
                    "$dateToString": {
                        "format": "%Y-%m-%dT%H:%M",
                        "date": "$received_at",
                        "timezone": "UTC",
                    }
                },
                "count": {"$sum": 1},
            }
        },
    ]
    found: dict[str, int] = {}
    async for row in await db[MESSAGES].aggregate(pipeline):
        found[row["_id"]] = int(row["count"])
    buckets = []
    for i in range(minutes):
        minute = first + dt.timedelta(minutes=i)
        label = minute.strftime("%Y-%m-%dT%H:%M")
        buckets.append({"t": _iso(minute), "count": found.get(label, 0)})
    return buckets


def local_days(now: dt.datetime, days: int, tz: str) -> list[str]:
    """The last ``days`` calendar days in ``tz``, oldest first, today last (``YYYY-MM-DD``)."""
    today = now.astimezone(zoneinfo.ZoneInfo(tz)).date()
    return [(today - dt.timedelta(days=i)).isoformat() for i in range(days - 1, -1, -1)]


async def messages_per_day(
    db: Db,
    *,
    days: int = 7,
    tz: str = "UTC",
    include_test: bool = False,
    now: dt.datetime | None = None,
) -> list[dict[str, Any]]:
    """Messages, follows and unfollows per calendar day in ``tz``, the last ``days`` days
    (today included, zeros included), oldest first: ``[{"date", "messages", "follows",
    "unfollows"}, ...]``. One aggregation."""
    now = now or dt.datetime.now(dt.UTC)
    dates = local_days(now, days, tz)
    first = day_start(now, tz) - dt.timedelta(days=days - 1)

    def when(condition: dict[str, Any]) -> dict[str, Any]:
        return {"$sum": {"$cond": [condition, 1, 0]}}

    pipeline: list[dict[str, Any]] = [
        {"$match": {"received_at": {"$gte": first, "$lte": now}, **_not_test(include_test)}},
        {"$project": {"received_at": 1, "event": 1}},
        {
            "$group": {
                "_id": {
                    "$dateToString": {"format": "%Y-%m-%d", "date": "$received_at", "timezone": tz}
                },
                "messages": {"$sum": 1},
                "follows": when({"$in": ["$event", ["subscribe", "subscribe_scan"]]}),
                "unfollows": when({"$eq": ["$event", "unsubscribe"]}),
            }
        },
    ]
    found: dict[str, dict[str, Any]] = {}
    async for row in await db[MESSAGES].aggregate(pipeline):
        found[row["_id"]] = row
    return [
        {
            "date": date,
            "messages": int(found.get(date, {}).get("messages", 0)),
            "follows": int(found.get(date, {}).get("follows", 0)),
            "unfollows": int(found.get(date, {}).get("unfollows", 0)),
        }
        for date in dates
    ]


def _regex(text: str) -> dict[str, Any]:
    return {"$regex": re.escape(text), "$options": "i"}


def messages_query(
    *,
    text: str = "",
    openid: str = "",
    msg_type: str = "",
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    include_test: bool = True,
) -> dict[str, Any]:
    """The message log's filter: ``text`` matches what the user sent or our reply.

    ``openid`` matches part of the openid; ``msg_type`` is a WeChat MsgType (``event`` for all
    events); ``since`` is inclusive and ``until`` exclusive.
    """
    query: dict[str, Any] = {**_not_test(include_test)}
    if text:
        query["$or"] = [{"text": _regex(text)}, {"reply_text": _regex(text)}]
    if openid:
        query["openid"] = _regex(openid)
    if msg_type:
        query["type"] = msg_type
    when: dict[str, Any] = {}
    if since is not None:
        when["$gte"] = since
    if until is not None:
        when["$lt"] = until
    if when:
        query["received_at"] = when
    return query


async def search_messages(
    db: Db, *, page: int = 1, per_page: int = 50, **filters: Any
) -> dict[str, Any]:
    """The message log, newest first, a page at a time (``filters``: ``messages_query``'s)."""
    query = messages_query(**filters)
    page = max(1, page)
    total = await db[MESSAGES].count_documents(query)
    cursor = (
        db[MESSAGES]
        .find(query, _LIGHT)
        .sort([("received_at", DESCENDING), ("_id", DESCENDING)])
        .skip((page - 1) * per_page)
        .limit(per_page)
    )
    items = [message_view(doc) async for doc in cursor]
    return {"items": items, "total": total, "page": page, "per_page": per_page}


async def iter_messages(
    db: Db, *, batch_size: int = 500, **filters: Any
) -> AsyncIterator[dict[str, Any]]:
    """Every message the log's filters match, newest first, streamed (the CSV export)."""
    cursor = (
        db[MESSAGES]
        .find(messages_query(**filters), _LIGHT)
        .sort([("received_at", DESCENDING), ("_id", DESCENDING)])
        .batch_size(batch_size)
    )
    async for doc in cursor:
        yield message_view(doc)


def users_query(
    *, query: str = "", subscribed: bool | None = None, include_test: bool = True
) -> dict[str, Any]:
    """The users list's filter: ``query`` matches part of the openid or nickname."""
    flt: dict[str, Any] = {**_not_test(include_test)}
    if query:
        flt["$or"] = [{"_id": _regex(query)}, {"nickname": _regex(query)}]
    if subscribed is not None:
        flt["subscribed"] = True if subscribed else {"$ne": True}
    return flt


async def search_users(
    db: Db, *, page: int = 1, per_page: int = 50, **filters: Any
) -> dict[str, Any]:
    """Users, most recently seen first, a page at a time (``filters``: ``users_query``'s)."""
    flt = users_query(**filters)
    page = max(1, page)
    total = await db[USERS].count_documents(flt)
    cursor = (
        db[USERS]
        .find(flt, {"counted": 0})
        .sort([("last_seen", DESCENDING), ("_id", ASCENDING)])
        .skip((page - 1) * per_page)
        .limit(per_page)
    )
    items = [user_view(doc) async for doc in cursor]
    return {"items": items, "total": total, "page": page, "per_page": per_page}


async def iter_users(
    db: Db, *, batch_size: int = 200, **filters: Any
) -> AsyncIterator[list[dict[str, Any]]]:
    """Every user the list's filters match, in the list's order, a batch at a time (a batch's
    survey progress is then one query)."""
    cursor = (
        db[USERS]
        .find(users_query(**filters), {"counted": 0})
        .sort([("last_seen", DESCENDING), ("_id", ASCENDING)])
        .batch_size(batch_size)
    )
    batch: list[dict[str, Any]] = []
    async for doc in cursor:
        batch.append(user_view(doc))
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


async def get_user(db: Db, openid: str) -> dict[str, Any] | None:
    doc = await db[USERS].find_one({"_id": openid}, {"counted": 0})
    return user_view(doc) if doc is not None else None


async def conversation(
    db: Db, openid: str, *, before: dt.datetime | None = None, limit: int = 100
) -> dict[str, Any]:
    """One user's messages and our replies, oldest first; ``before`` pages back in time.

    ``more`` says whether older messages exist (pass the first item's ``received_at`` as
    ``before`` to get them).
    """
    query: dict[str, Any] = {"openid": openid}
    if before is not None:
        query["received_at"] = {"$lt": before}
    cursor = (
        db[MESSAGES]
        .find(query, _LIGHT)
        .sort([("received_at", DESCENDING), ("_id", DESCENDING)])
        .limit(limit + 1)
    )
    docs = [doc async for doc in cursor]
    more = len(docs) > limit
    items = [message_view(doc) for doc in reversed(docs[:limit])]
    return {"items": items, "more": more}


async def first_message(db: Db, *, include_test: bool = False) -> dict[str, Any] | None:
    """The earliest stored message (of a real user unless ``include_test``), or None."""
    return await db[MESSAGES].find_one(
        _not_test(include_test), _LIGHT, sort=[("received_at", ASCENDING), ("_id", ASCENDING)]
    )


async def recent_messages(db: Db, *, limit: int = 50) -> list[dict[str, Any]]:
    """The last ``limit`` messages, oldest first (what the live page opens with)."""
    cursor = (
        db[MESSAGES]
        .find({}, _LIGHT)
        .sort([("received_at", DESCENDING), ("_id", DESCENDING)])
        .limit(limit)
    )
    docs = [doc async for doc in cursor]
    return list(reversed(docs))


async def messages_after(db: Db, since: dt.datetime, *, limit: int = 500) -> list[dict[str, Any]]:
    """Messages received at or after ``since``, oldest first (fills a live view's gap)."""
    cursor = (
        db[MESSAGES]
        .find({"received_at": {"$gte": since}}, _LIGHT)
        .sort([("received_at", ASCENDING), ("_id", ASCENDING)])
        .limit(limit)
    )
    return [doc async for doc in cursor]


async def watch_messages(
    db: Db, *, resume_after: Mapping[str, Any] | None = None, max_await_ms: int = 1000
) -> AsyncChangeStream[dict[str, Any]]:
    """A change stream of new messages (inserts only, without the raw XML)."""
    pipeline: list[dict[str, Any]] = [
        {"$match": {"operationType": "insert"}},
        {
            "$project": {
                "fullDocument.raw": 0,
                "fullDocument.reply_xml": 0,
                "fullDocument.fields": 0,
            }
        },
    ]
    return await db[MESSAGES].watch(
        pipeline, resume_after=resume_after, max_await_time_ms=max_await_ms
    )


async def wipe_test_messages(db: Db, prefix: str) -> dict[str, int]:
    """Delete the simulator's users and their messages (openids starting with ``prefix``)."""
    flt = {"$or": [{"test_user": True}, {"openid": {"$regex": "^" + re.escape(prefix)}}]}
    deleted_messages = (await db[MESSAGES].delete_many(flt)).deleted_count
    user_flt = {"$or": [{"test_user": True}, {"_id": {"$regex": "^" + re.escape(prefix)}}]}
    deleted_users = (await db[USERS].delete_many(user_flt)).deleted_count
    return {"messages": deleted_messages, "users": deleted_users}


async def survey_answers_of(db: Db, openid: str) -> list[dict[str, Any]]:
    """One user's survey sessions (their current attempt in each survey) with every answer."""
    from . import surveys as surveys_store

    cursor = db[surveys_store.COLLECTION].find(
        {"openid": openid}, {"recent": 0, "history": 0, "answers.key": 0}
    )
    return [doc async for doc in cursor]


async def survey_sessions_of(db: Db, openids: list[str]) -> list[dict[str, Any]]:
    """The survey sessions of several users in one query (the users list shows their progress).

    ``service.store.surveys.progress`` answers for one user and one survey; a page of 50 users
    and several surveys would cost hundreds of round trips that way.
    """
    from . import surveys as surveys_store

    if not openids:
        return []
    cursor = db[surveys_store.COLLECTION].find(
        {"openid": {"$in": openids}},
        {
            "survey": 1,
            "openid": 1,
            "state": 1,
            "current": 1,
            "paused": 1,
            "score": 1,
            "result": 1,
            "answers.q": 1,
            "attempt": 1,
            "finished_at": 1,
            "started_at": 1,
        },
    )
    return [doc async for doc in cursor]
