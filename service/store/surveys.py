"""The ``survey_sessions`` collection: one document per user and survey; the dashboard numbers.

Document (``_id`` = ``"<survey id>:<openid>"``)::

    survey, openid, test_user
    state         "in_progress" | "finished" | "screened_out" | "quota_full" (the last two end
                  an attempt without a result and are counted apart from completions)
    ended         {state, text, q, if} for a screen-out, {state, text, quota} for a full quota
    paused        True after 退出/quit (or when the survey closed mid-way)
    active_user   = openid while the user is answering this survey, absent otherwise; a unique
                  sparse index makes "at most one survey in progress per user" hold under races
    current       id of the question being asked (None when finished)
    sv            the version of the survey the attempt started on (absent: 1); the attempt
                  is finished on it, a retake starts on the newest
    answers       [{q, value, label, choices?, score, dims?, skipped?, at, key}] of the current
                  attempt (``skipped: True``, value None: an optional question skipped)
    score, result {band, title, comment, dims}   when finished
    attempt       1, 2, ... (retakes); earlier attempts are kept in ``history`` (last 10)
    started_at, updated_at, finished_at, paused_at
    v             version, +1 on every write; every write is conditional on it
    recent        [{k: message key, r: reply text}] of the last few messages applied, so a
                  WeChat retry is answered with the same reply and changes nothing

Exactly once: the engine reads the user's documents (one ``find``), decides in memory, then
writes with ``update_one({_id, v: expected}, ...)`` (or ``insert_one`` for a first start). A write
that matches nothing lost a race; the engine reads again. No ``find_one_and_update``: it scans the
whole collection on SecantusDB.

The aggregates below are plain async functions for the dashboard. Each takes the ``Survey`` (the
definition, for titles and option labels), ``include_test_users=False``: the simulator's users
(``test_user: True``, openids starting with ``sim-``) are left out unless asked for, and
``versions=None``: the versions whose sessions count (``sv``, the version a session started on;
none recorded means version 1), all by default.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pymongo import ASCENDING, DESCENDING
from pymongo.errors import DuplicateKeyError

from ..clock import iso as _iso
from ..clock import now as _now
from . import TEST_OPENID_PREFIX, Db, journaled

if TYPE_CHECKING:
    from service.surveys.model import Survey

__all__ = [
    "COLLECTION",
    "band_counts",
    "completions_over_time",
    "delete_test_data",
    "ensure_indexes",
    "funnel",
    "get",
    "in_progress_by_version",
    "insert_session",
    "iter_responses",
    "option_counts",
    "response_columns",
    "score_distribution",
    "session_id",
    "update_session",
    "user_sessions",
]

COLLECTION = "survey_sessions"
RECENT_KEYS = 8
HISTORY = 10


async def ensure_indexes(db: Db) -> None:
    coll = db[COLLECTION]
    await coll.create_index(
        [("openid", ASCENDING), ("updated_at", DESCENDING)], name="openid_updated"
    )
    await coll.create_index("active_user", unique=True, sparse=True, name="active_user")
    await coll.create_index([("survey", ASCENDING), ("state", ASCENDING)], name="survey_state")
    await coll.create_index(
        [("survey", ASCENDING), ("finished_at", ASCENDING)], name="survey_finished"
    )
    await coll.create_index(
        [("survey", ASCENDING), ("started_at", ASCENDING)], name="survey_started"
    )  # the export's order
    await coll.create_index("test_user", name="test_user")


def session_id(survey_id: str, openid: str) -> str:
    return f"{survey_id}:{openid}"


# -- the engine's reads and writes ---------------------------------------------------------------
async def user_sessions(db: Db, openid: str, limit: int = 50) -> list[dict[str, Any]]:
    """All of a user's survey documents, most recently updated first: one round trip."""
    cursor = db[COLLECTION].find({"openid": openid}).sort("updated_at", DESCENDING).limit(limit)
    return await cursor.to_list()


async def get(db: Db, survey_id: str, openid: str) -> dict[str, Any] | None:
    return await db[COLLECTION].find_one({"_id": session_id(survey_id, openid)})


async def insert_session(db: Db, doc: dict[str, Any]) -> bool:
    """Insert a new session; False when it exists already or the user is active elsewhere."""
    try:
        await journaled(db, COLLECTION).insert_one(doc)
    except DuplicateKeyError:
        return False
    return True


async def update_session(
    db: Db,
    sid: str,
    expected_version: int,
    *,
    set_fields: Mapping[str, Any] | None = None,
    unset_fields: Sequence[str] = (),
    answer: Mapping[str, Any] | None = None,
    recent: Mapping[str, str] | None = None,
    archive: Mapping[str, Any] | None = None,
) -> bool:
    """Apply one transition if the document is still at ``expected_version``; True if it was.

    ``answer`` is appended to ``answers``, ``recent`` ({k, r}) to the retry memory, ``archive``
    (a previous attempt) to ``history``. False means another message got there first (or the
    unique ``active_user`` index refused a second active survey): read again and re-decide.
    """
    update: dict[str, Any] = {
        "$set": {**(set_fields or {}), "updated_at": _now()},
        "$inc": {"v": 1},
    }
    if unset_fields:
        update["$unset"] = {name: "" for name in unset_fields}
    push: dict[str, Any] = {}
    if answer is not None:
        push["answers"] = answer
    if recent is not None:
        push["recent"] = {"$each": [dict(recent)], "$slice": -RECENT_KEYS}
    if archive is not None:
        push["history"] = {"$each": [dict(archive)], "$slice": -HISTORY}
    if push:
        update["$push"] = push
    try:
        result = await journaled(db, COLLECTION).update_one(
            {"_id": sid, "v": expected_version}, update
        )
    except DuplicateKeyError:
        return False
    return result.matched_count == 1


# -- aggregates for the dashboard ----------------------------------------------------------------
async def in_progress_by_version(
    db: Db, survey_id: str | None = None
) -> dict[tuple[str, int], int]:
    """Sessions in progress (test users left out) per ``(survey, version)``; sessions started
    before versions existed count for version 1."""
    match: dict[str, Any] = {"state": "in_progress", "test_user": {"$ne": True}}
    if survey_id is not None:
        match["survey"] = survey_id
    rows = await _aggregate(
        db,
        [
            {"$match": match},
            {"$group": {"_id": {"s": "$survey", "v": "$sv"}, "n": {"$sum": 1}}},
        ],
    )
    out: dict[tuple[str, int], int] = {}
    for row in rows:
        key = (str(row["_id"].get("s")), int(row["_id"].get("v") or 1))
        out[key] = out.get(key, 0) + int(row["n"])
    return out


Versions = Sequence[int] | None


def _match(
    survey: Survey, include_test_users: bool, versions: Versions = None, **extra: Any
) -> dict[str, Any]:
    """``versions``: only the sessions started on these versions of the survey (``None``: all);
    sessions started before versions existed (no ``sv``) are version 1's."""
    match: dict[str, Any] = {"survey": survey.id, **extra}
    if not include_test_users:
        match["test_user"] = {"$ne": True}
    if versions is not None:
        wanted = sorted(set(versions))
        match["sv"] = {"$in": [*wanted, None]} if 1 in wanted else {"$in": wanted}
    return match


async def _aggregate(db: Db, pipeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    cursor = await db[COLLECTION].aggregate(pipeline)
    return await cursor.to_list()


async def option_counts(
    db: Db,
    survey: Survey,
    *,
    include_test_users: bool = False,
    finished_only: bool = False,
    versions: Versions = None,
) -> list[dict[str, Any]]:
    """How often each option was chosen, per question (current attempts; all or finished only).

    Returns one entry per question, in survey order::

        {"id": "bedtime", "position": 1, "title": "...", "kind": "single", "answered": 12,
         "options": [{"value": 1, "label": "...", "count": 5}, ...],   # single/multiple/rating
         "stats": {"count": 3, "avg": 7.5, "min": 6, "max": 9}}       # number questions only

    Options never chosen are listed with ``count: 0``; for multiple choice the counts add up to
    more than ``answered``. Rating questions list every value of the scale.
    """
    extra = {"state": "finished"} if finished_only else {}
    base: list[dict[str, Any]] = [
        {"$match": _match(survey, include_test_users, versions, **extra)},
        {"$project": {"answers": 1}},
        {"$unwind": "$answers"},
    ]
    per_question = await _aggregate(
        db,
        [
            *base,
            {
                "$group": {
                    "_id": "$answers.q",
                    "answered": {"$sum": 1},
                    "avg": {"$avg": "$answers.value"},
                    "min": {"$min": "$answers.value"},
                    "max": {"$max": "$answers.value"},
                }
            },
        ],
    )
    per_choice = await _aggregate(
        db,
        [
            *base,
            {"$match": {"answers.choices": {"$exists": True}}},
            {"$unwind": "$answers.choices"},
            {"$group": {"_id": {"q": "$answers.q", "c": "$answers.choices"}, "n": {"$sum": 1}}},
        ],
    )
    answered = {row["_id"]: row for row in per_question}
    counts: dict[tuple[str, int], int] = {
        (row["_id"]["q"], int(row["_id"]["c"])): int(row["n"]) for row in per_choice
    }
    out: list[dict[str, Any]] = []
    for position, question in enumerate(survey.questions, 1):
        row = answered.get(question.id, {})
        entry: dict[str, Any] = {
            "id": question.id,
            "position": position,
            "title": question.text,
            "kind": question.kind,
            "answered": int(row.get("answered", 0)),
            "options": [],
        }
        if question.kind in ("single", "multiple"):
            entry["options"] = [
                {"value": i, "label": o.label, "count": counts.get((question.id, i), 0)}
                for i, o in enumerate(question.options, 1)
            ]
        elif question.kind == "rating":
            entry["options"] = [
                {"value": v, "label": str(v), "count": counts.get((question.id, v), 0)}
                for v in range(question.scale_min, question.scale_max + 1)
            ]
        elif question.kind == "number":
            entry["stats"] = {
                "count": entry["answered"],
                "avg": row.get("avg"),
                "min": row.get("min"),
                "max": row.get("max"),
            }
        out.append(entry)
    return out


async def score_distribution(
    db: Db, survey: Survey, *, include_test_users: bool = False, versions: Versions = None
) -> list[dict[str, int]]:
    """Finished attempts per total score: ``[{"score": 7, "count": 3}, ...]``, by score.

    Only scores that occurred are listed (the dashboard fills the axis from
    ``survey.score_range()`` if it wants every value).
    """
    rows = await _aggregate(
        db,
        [
            {"$match": _match(survey, include_test_users, versions, state="finished")},
            {"$group": {"_id": "$score", "count": {"$sum": 1}}},
            {"$sort": {"_id": 1}},
        ],
    )
    return [
        {"score": row["_id"], "count": int(row["count"])} for row in rows if row["_id"] is not None
    ]


async def band_counts(
    db: Db, survey: Survey, *, include_test_users: bool = False, versions: Versions = None
) -> list[dict[str, Any]]:
    """Finished attempts per result band, in the survey's band order, zeros included::

        [{"band": "light", "title": "轻度熬夜", "min": 7, "max": 13, "count": 4}, ...]

    A finished attempt whose band no longer exists in the definition is counted under
    ``{"band": None, "title": "其他"}`` (listed only when non-zero).
    """
    rows = await _aggregate(
        db,
        [
            {"$match": _match(survey, include_test_users, versions, state="finished")},
            {"$group": {"_id": "$result.band", "count": {"$sum": 1}}},
        ],
    )
    counts = {row["_id"]: int(row["count"]) for row in rows}
    out: list[dict[str, Any]] = [
        {"band": b.id, "title": b.title, "min": b.low, "max": b.high, "count": counts.pop(b.id, 0)}
        for b in survey.bands
    ]
    other = sum(counts.values())
    if other:
        out.append({"band": None, "title": "其他", "min": None, "max": None, "count": other})
    return out


async def funnel(
    db: Db, survey: Survey, *, include_test_users: bool = False, versions: Versions = None
) -> dict[str, Any]:
    """Starts versus completions, and where people stop::

        {"started": 20, "finished": 12, "in_progress": 6, "paused": 3,
         "screened_out": 1, "quota_full": 1, "completion_rate": 0.6,
         "questions": [{"id": "bedtime", "position": 1, "title": "...",
                        "reached": 20, "answered": 19, "dropped": 1}, ...]}

    ``started`` counts users with a session (current attempt), ``in_progress`` those still
    answering (``paused`` of them paused); ``screened_out`` and ``quota_full`` ended without a
    result and are not completions. Per question: ``reached`` = answered it or are stuck on it now;
    ``dropped`` = stuck on it (reached − answered). With branching, later questions may be
    reached by fewer people without anyone dropping.
    """
    match = _match(survey, include_test_users, versions)
    states = await _aggregate(
        db,
        [
            {"$match": match},
            {
                "$group": {
                    "_id": {"state": "$state", "current": "$current"},
                    "n": {"$sum": 1},
                    "paused": {"$sum": {"$cond": [{"$eq": ["$paused", True]}, 1, 0]}},
                }
            },
        ],
    )
    answered_rows = await _aggregate(
        db,
        [
            {"$match": match},
            {"$project": {"answers.q": 1}},
            {"$unwind": "$answers"},
            {"$group": {"_id": "$answers.q", "n": {"$sum": 1}}},
        ],
    )
    answered = {row["_id"]: int(row["n"]) for row in answered_rows}
    started = finished = paused = 0
    ended = {"screened_out": 0, "quota_full": 0}
    stuck: dict[str, int] = {}
    for row in states:
        n = int(row["n"])
        started += n
        state = row["_id"].get("state")
        if state == "finished":
            finished += n
        elif state in ended:
            ended[state] += n
        else:
            paused += int(row["paused"])
            current = row["_id"].get("current")
            if current:
                stuck[current] = stuck.get(current, 0) + n
    questions = []
    for position, question in enumerate(survey.questions, 1):
        done = answered.get(question.id, 0)
        waiting = stuck.get(question.id, 0)
        questions.append(
            {
                "id": question.id,
                "position": position,
                "title": question.text,
                "reached": done + waiting,
                "answered": done,
                "dropped": waiting,
            }
        )
    return {
        "started": started,
        "finished": finished,
        "in_progress": started - finished - sum(ended.values()),
        "paused": paused,
        **ended,
        "completion_rate": round(finished / started, 4) if started else 0.0,
        "questions": questions,
    }


async def completions_over_time(
    db: Db,
    survey: Survey,
    *,
    include_test_users: bool = False,
    versions: Versions = None,
    since: dt.datetime | None = None,
    timezone: str = "Asia/Shanghai",
    fill: bool = True,
) -> list[dict[str, Any]]:
    """Completions per calendar day in ``timezone``: ``[{"date": "2026-11-27", "count": 3}, ...]``.

    Sorted by date; with ``fill`` the days without completions between the first and the last
    are included with ``count: 0`` (a chart's x axis). ``since`` limits to finishes at or after it.
    """
    extra: dict[str, Any] = {"state": "finished"}
    if since is not None:
        extra["finished_at"] = {"$gte": since}
    rows = await _aggregate(
        db,
        [
            {"$match": _match(survey, include_test_users, versions, **extra)},
            {
                "$group": {
                    "_id": {
                        "$dateToString": {
                            "format": "%Y-%m-%d",
                            "date": "$finished_at",
                            "timezone": timezone,
                        }
                    },
                    "count": {"$sum": 1},
                }
            },
            {"$sort": {"_id": 1}},
        ],
    )
    days = {row["_id"]: int(row["count"]) for row in rows if row["_id"]}
    if not fill or not days:
        return [{"date": day, "count": n} for day, n in sorted(days.items())]
    first = dt.date.fromisoformat(min(days))
    last = dt.date.fromisoformat(max(days))
    out = []
    day = first
    while day <= last:
        key = day.isoformat()
        out.append({"date": key, "count": days.get(key, 0)})
        day += dt.timedelta(days=1)
    return out


def response_columns(survey: Survey) -> list[tuple[str, str]]:
    """The columns of ``iter_responses`` rows, in order: ``[(key, header), ...]``.

    Fixed columns first (openid, state, attempt, started_at, finished_at, score, result), then
    one column per question keyed by question id, headed ``"Q3 <question text>"``.
    """
    columns = [
        ("openid", "openid"),
        ("state", "state"),
        ("attempt", "attempt"),
        ("started_at", "started_at"),
        ("finished_at", "finished_at"),
        ("score", "score"),
        ("result", "result"),
        ("ended", "ended"),
    ]
    columns += [(q.id, f"Q{i} {q.text}") for i, q in enumerate(survey.questions, 1)]
    return columns


async def iter_responses(
    db: Db,
    survey: Survey,
    *,
    include_test_users: bool = False,
    finished_only: bool = False,
    versions: Versions = None,
    batch_size: int = 500,
) -> AsyncIterator[dict[str, Any]]:
    """One row per user (the current attempt), keyed like ``response_columns``; CSV-friendly.

    Values are plain: strings, ints/floats, ISO 8601 times (UTC, ``service.clock.iso``; None
    when unset) or ``""``. A question's cell is
    the option text(s) (several joined by ``；``), the rating or number, or the free text;
    ``""`` when not answered (or skipped). ``state`` is ``in_progress``, ``paused``,
    ``finished``, ``screened_out`` or ``quota_full`` (``ended`` says why: the screen-out's
    condition or the quota's id). Rows are
    ordered by start time and streamed in batches, so a large survey never sits in memory.
    """
    extra = {"state": "finished"} if finished_only else {}
    cursor = (
        db[COLLECTION]
        .find(_match(survey, include_test_users, versions, **extra), {"recent": 0, "history": 0})
        .sort([("started_at", ASCENDING), ("_id", ASCENDING)])
        .batch_size(batch_size)
    )
    async for doc in cursor:
        state = doc.get("state", "")
        if state == "in_progress" and doc.get("paused"):
            state = "paused"
        row: dict[str, Any] = {
            "openid": doc.get("openid", ""),
            "state": state,
            "attempt": doc.get("attempt", 1),
            "started_at": _iso(doc.get("started_at")),
            "finished_at": _iso(doc.get("finished_at")),
            "score": doc.get("score") if doc.get("score") is not None else "",
            "result": (doc.get("result") or {}).get("title") or "",
            "ended": _ended(doc.get("ended")),
        }
        for question in survey.questions:
            row[question.id] = ""
        for answer in doc.get("answers") or []:
            if answer.get("q") in row:
                row[answer["q"]] = answer.get("label", answer.get("value", ""))
        yield row


def _ended(ended: Any) -> str:
    """Why an attempt ended without a result, for the CSV: ``age < 18`` or ``quota night-owls``."""
    if not isinstance(ended, Mapping):
        return ""
    if ended.get("quota"):
        return f"quota {ended['quota']}"
    return str(ended.get("if") or "")


# -- quotas ----------------------------------------------------------------------------------------
# Collection ``survey_quotas``: one counter per quota, ``_id`` = ``"<survey>:<quota>"`` (with
# ``:test`` for the simulator's users), ``n`` admitted so far and ``members`` (who: a session id and
# attempt), so a re-decided answer of the same attempt is admitted again, never counted twice.
QUOTAS = "survey_quotas"


def quota_counter_id(survey_id: str, quota_id: str, *, test: bool = False) -> str:
    return f"{survey_id}:{quota_id}{':test' if test else ''}"


async def claim_quota(db: Db, counter_id: str, member: str, limit: int) -> bool:
    """Admit ``member`` to a quota of at most ``limit``; False when it is full.

    One conditional update (upserted on the first claim): it matches only while ``n < limit``
    and ``member`` is not in yet, so concurrent claims in any number of processes never admit
    more than ``limit``. Only when it does not match (full, or ``member`` already admitted by an
    earlier try of the same step) is the counter read, to tell the two apart.
    """
    coll = journaled(db, QUOTAS)
    try:
        result = await coll.update_one(
            {"_id": counter_id, "n": {"$lt": limit}, "members": {"$ne": member}},
            {"$inc": {"n": 1}, "$push": {"members": member}},
            upsert=True,
        )
    except DuplicateKeyError:
        doc = await db[QUOTAS].find_one({"_id": counter_id, "members": member}, {"_id": 1})
        return doc is not None
    return result.matched_count == 1 or result.upserted_id is not None


async def quota_counts(db: Db, survey_id: str) -> dict[str, int]:
    """Users admitted to each quota of a survey (test users left out): ``{quota id: n}``."""
    prefix = f"{survey_id}:"
    out: dict[str, int] = {}
    async for doc in db[QUOTAS].find({"_id": {"$regex": f"^{survey_id}:"}}, {"n": 1}):
        name = str(doc["_id"])[len(prefix) :]
        if not name.endswith(":test"):
            out[name] = int(doc.get("n") or 0)
    return out


async def delete_test_data(db: Db, survey_id: str | None = None) -> int:
    """Delete the survey sessions of test users (all surveys, or one); returns how many."""
    query: dict[str, Any] = {
        "$or": [{"test_user": True}, {"openid": {"$regex": f"^{TEST_OPENID_PREFIX}"}}]
    }
    if survey_id is not None:
        query["survey"] = survey_id
    result = await db[COLLECTION].delete_many(query)
    prefix = f"^{survey_id}:" if survey_id is not None else "^"
    await db[QUOTAS].delete_many({"_id": {"$regex": f"{prefix}.*:test$"}})
    return int(result.deleted_count)
