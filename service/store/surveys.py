"""The ``survey_sessions`` collection: one document per user and survey; the dashboard numbers.

Document (``_id`` = ``"<survey id>:<openid>"``)::

    survey, openid, test_user
    state         "in_progress" | "finished" | "screened_out" | "quota_full" | "expired" (the
                  last three end an attempt without a result and are counted apart from
                  completions; "expired" is set by ``service.reminders`` after ``expire_after``)
    reminder      {status, at, attempt, q, errcode?, reason?}: this attempt's reminder (see
                  "reminders and expiry" below); reminder_retries: temporary failures so far
    expired_at    when the attempt expired
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

import copy
import dataclasses
import datetime as dt
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from ..clock import iso as _iso
from ..clock import now as _now
from . import TEST_OPENID_PREFIX, Db, journaled
from . import tokens as tokens_store
from .batcher import Batcher, by_database, write_errors

if TYPE_CHECKING:
    from service.surveys.model import Survey

__all__ = [
    "COLLECTION",
    "NO_FILTERS",
    "REMINDED",
    "STATES",
    "Filters",
    "SessionReader",
    "SessionWriter",
    "band_counts",
    "channel_counts",
    "claim_reminder",
    "completions_over_time",
    "crosstab_counts",
    "delete_test_data",
    "ensure_indexes",
    "expire_idle",
    "funnel",
    "get",
    "in_progress_by_version",
    "insert_session",
    "iter_responses",
    "iter_sessions",
    "option_counts",
    "question_kinds",
    "release_reminder",
    "remind_candidates",
    "report_numbers",
    "response_columns",
    "score_distribution",
    "session_id",
    "set_channel",
    "settle_reminder",
    "text_answers",
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
    # The survey page's filters (service.reports.parse_filters) that narrow most.
    await coll.create_index(
        [("survey", ASCENDING), ("channel", ASCENDING), ("state", ASCENDING)],
        name="survey_channel_state",
    )
    await coll.create_index([("survey", ASCENDING), ("answers.q", ASCENDING)], name="survey_answer")
    await coll.create_index(
        [("survey", ASCENDING), ("changed_at", ASCENDING)], name="survey_changed"
    )  # service.survey_index follows the changes
    # The reminder and expiry scan (service.reminders): sessions in progress, idle the longest.
    await coll.create_index(
        [("state", ASCENDING), ("survey", ASCENDING), ("updated_at", ASCENDING)],
        name="state_survey_updated",
    )


def session_id(survey_id: str, openid: str) -> str:
    return f"{survey_id}:{openid}"


# -- the engine's reads and writes ---------------------------------------------------------------
async def user_sessions(db: Db, openid: str, limit: int = 50) -> list[dict[str, Any]]:
    """All of a user's survey documents, most recently updated first: one round trip."""
    cursor = db[COLLECTION].find({"openid": openid}).sort("updated_at", DESCENDING).limit(limit)
    return await cursor.to_list()


class SessionReader:
    """``user_sessions`` for the hot path, naturally batched: the users of the messages in flight
    together are read in one ``find`` (``openid: {$in: [...]}``), each getting their own list."""

    def __init__(self, *, limit: int = 50, max_items: int = 64) -> None:
        self.limit = limit
        self.batcher: Batcher[tuple[Db, str], list[dict[str, Any]]] = Batcher(
            self._read_many, name="survey-state read", max_items=max_items
        )

    async def read(self, db: Db, openid: str) -> list[dict[str, Any]]:
        return await self.batcher.submit((db, openid))

    async def _read_many(self, items: list[tuple[Db, str]]) -> list[list[dict[str, Any]]]:
        found: dict[tuple[int, str], list[dict[str, Any]]] = {}
        for db, indexes in by_database(items, lambda item: item[0]):
            key = id(db)
            openids = {items[i][1] for i in indexes}
            if len(openids) == 1:
                (openid,) = openids
                found[(key, openid)] = await user_sessions(db, openid, self.limit)
                continue
            cursor = (
                db[COLLECTION]
                .find({"openid": {"$in": sorted(openids)}})
                .sort("updated_at", DESCENDING)
                .limit(self.limit * len(openids))
            )
            async for doc in cursor:
                mine = found.setdefault((key, doc["openid"]), [])
                if len(mine) < self.limit:
                    mine.append(doc)
        results: list[list[dict[str, Any]]] = []
        handed: set[tuple[int, str]] = set()
        for db, openid in items:
            wanted = (id(db), openid)
            docs = found.get(wanted, [])
            # The same user twice in one batch (two messages at once): each gets its own copy.
            results.append(copy.deepcopy(docs) if wanted in handed else docs)
            handed.add(wanted)
        return results


async def get(db: Db, survey_id: str, openid: str) -> dict[str, Any] | None:
    return await db[COLLECTION].find_one({"_id": session_id(survey_id, openid)})


async def insert_session(db: Db, doc: dict[str, Any]) -> bool:
    """Insert a new session; False when it exists already or the user is active elsewhere."""
    try:
        await journaled(db, COLLECTION).insert_one(doc)
    except DuplicateKeyError:
        return False
    return True


def _transition(
    *,
    set_fields: Mapping[str, Any] | None = None,
    unset_fields: Sequence[str] = (),
    answer: Mapping[str, Any] | None = None,
    recent: Mapping[str, str] | None = None,
    archive: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The update document of one transition (see ``update_session``)."""
    update: dict[str, Any] = {
        "$set": {**(set_fields or {}), "updated_at": (now := _now()), "changed_at": now},
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
    return update


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
    update = _transition(
        set_fields=set_fields,
        unset_fields=unset_fields,
        answer=answer,
        recent=recent,
        archive=archive,
    )
    try:
        result = await journaled(db, COLLECTION).update_one(
            {"_id": sid, "v": expected_version}, update
        )
    except DuplicateKeyError:
        return False
    return result.matched_count == 1


class SessionWriter:
    """``update_session`` for the hot path, naturally batched: the survey steps of the messages
    in flight together go in one unordered ``bulk_write`` (one journal flush).

    Each step is still one conditional update with its own answer: sent as an upsert, a step
    whose session is no longer at the expected version fails on the ``_id`` index (a duplicate
    key for that operation alone: it lost the race), and the bulk result lists the upserted
    ones (the session was gone altogether): those stubs are deleted again and the step is
    refused. Same contract as ``update_session``.
    """

    def __init__(self, *, max_items: int = 64) -> None:
        self.batcher: Batcher[tuple[Db, str, int, dict[str, Any]], bool] = Batcher(
            self._write_many, name="survey step", max_items=max_items
        )

    async def update(self, db: Db, sid: str, expected_version: int, **transition: Any) -> bool:
        return await self.batcher.submit((db, sid, expected_version, _transition(**transition)))

    async def _write_many(
        self, items: list[tuple[Db, str, int, dict[str, Any]]]
    ) -> list[bool | Exception]:
        results: list[bool | Exception] = [True] * len(items)
        for db, indexes in by_database(items, lambda item: item[0]):
            ops = [
                UpdateOne({"_id": items[i][1], "v": items[i][2]}, items[i][3], upsert=True)
                for i in indexes
            ]
            upserted: dict[int, Any] = {}
            try:
                result = await journaled(db, COLLECTION).bulk_write(ops, ordered=False)
                upserted = dict(result.upserted_ids or {})
            except BulkWriteError as e:
                # A duplicate key: the step lost the race (or a second active survey).
                for position, outcome in write_errors(e, lambda _error: False).items():
                    results[indexes[position]] = outcome
                upserted = {int(u["index"]): u["_id"] for u in e.details.get("upserted", [])}
            if upserted:
                # Sessions that were gone (deleted meanwhile): no step applies to them.
                await db[COLLECTION].delete_many(
                    {"_id": {"$in": list(upserted.values())}, "survey": {"$exists": False}}
                )
                for position in upserted:
                    results[indexes[position]] = False
        return results


async def set_channel(db: Db, survey_id: str, openid: str, channel: str) -> None:
    """Record the QR channel a session came from; a channel already there is kept."""
    await db[COLLECTION].update_one(
        {"_id": session_id(survey_id, openid), "channel": {"$exists": False}},
        {"$set": {"channel": channel, "changed_at": _now()}},
    )


# Every write to a session sets ``changed_at`` (``updated_at`` is the user's last step: the
# reminders' writes and expiry leave it alone); deleting sessions (a respondent's data, the test
# users') bumps this counter instead, so that ``service.survey_index`` can follow both cheaply.
DELETIONS = "survey_session_deletions"


async def deletions(db: Db) -> int:
    """How many times sessions were deleted (any survey): a change means reload."""
    doc = await db[tokens_store.COLLECTION].find_one({"_id": f"setting:{DELETIONS}"}, {"n": 1})
    return int(doc.get("n") or 0) if doc else 0


async def note_deletion(db: Db) -> None:
    await db[tokens_store.COLLECTION].update_one(
        {"_id": f"setting:{DELETIONS}"},
        {"$inc": {"n": 1}, "$set": {"updated_at": _now()}},
        upsert=True,
    )


async def changed_sessions(
    db: Db, survey_id: str, since: dt.datetime | None, fields: Mapping[str, Any]
) -> AsyncIterator[dict[str, Any]]:
    """The survey's sessions (all of them, or those written at or after ``since``; index
    ``survey_changed``), with ``fields`` and ``changed_at``, in batches."""
    query: dict[str, Any] = {"survey": survey_id}
    if since is not None:
        query["changed_at"] = {"$gte": since}
    cursor = db[COLLECTION].find(query, {**fields, "changed_at": 1}).batch_size(1000)
    async for doc in cursor:
        yield doc


# -- reminders and expiry (service.reminders; off the hot path) -----------------------------------
# A session's ``reminder`` is {status, at, attempt, errcode?, reason?}: claimed as ``sending`` by a
# conditional update before the message goes out, then ``sent``, ``uncertain`` (the answer was lost
# after sending: perhaps delivered, never resent), ``failed`` (WeChat refused, ``errcode`` kept) or
# ``skipped`` (``reason``: unsubscribed, window, test). Present: no other reminder this attempt.
# These writes leave ``v`` and ``updated_at`` alone: the user's own steps never lose a race to them
# (they set ``changed_at``, which only ``service.survey_index`` reads).
REMINDED = ("sent", "uncertain", "sending")  # a reminder went out, or may have
_DUE = {"state": "in_progress", "paused": {"$ne": True}, "active_user": {"$exists": True}}


async def remind_candidates(
    db: Db, survey_id: str, idle_since: dt.datetime, limit: int
) -> list[dict[str, Any]]:
    """Up to ``limit`` sessions of ``survey_id`` answering (not paused), idle since at least
    ``idle_since``, not reminded in this attempt and not a test user's, the idlest first."""
    cursor = (
        db[COLLECTION]
        .find(
            {
                "state": "in_progress",
                "survey": survey_id,
                "updated_at": {"$lte": idle_since},
                "paused": {"$ne": True},
                "active_user": {"$exists": True},
                "reminder": {"$exists": False},
                "test_user": {"$ne": True},
            },
            {"recent": 0, "history": 0},
        )
        .sort("updated_at", ASCENDING)
        .limit(limit)
    )
    return await cursor.to_list()


async def claim_reminder(db: Db, doc: Mapping[str, Any], fields: Mapping[str, Any]) -> bool:
    """Mark the session's attempt reminded (``fields``: status ``sending`` or ``skipped``...) if
    it is still as read (version ``v``), answering and without a reminder: one process, once."""
    result = await journaled(db, COLLECTION).update_one(
        {"_id": doc["_id"], "v": doc.get("v", 0), **_DUE, "reminder": {"$exists": False}},
        {"$set": {"reminder": dict(fields), "changed_at": _now()}},
    )
    return result.matched_count == 1


async def settle_reminder(db: Db, sid: str, fields: Mapping[str, Any]) -> None:
    """What became of a claimed reminder: ``fields`` merged into ``reminder``."""
    await db[COLLECTION].update_one(
        {"_id": sid, "reminder.status": "sending"},
        {
            "$set": {
                **{f"reminder.{key}": value for key, value in fields.items()},
                "changed_at": _now(),
            }
        },
    )


async def release_reminder(db: Db, sid: str) -> None:
    """Give a claimed reminder back (WeChat never got it: safe to try again later)."""
    await db[COLLECTION].update_one(
        {"_id": sid, "reminder.status": "sending"},
        {
            "$unset": {"reminder": ""},
            "$inc": {"reminder_retries": 1},
            "$set": {"changed_at": _now()},
        },
    )


async def expire_idle(db: Db, survey_id: str, idle_since: dt.datetime, at: dt.datetime) -> int:
    """Sessions of ``survey_id`` in progress (paused or not) and idle since ``idle_since`` become
    ``expired``: no longer the user's survey in progress, their answers kept. One conditional
    ``update_many`` (a step of the user that lands first moves ``updated_at`` on; one that comes
    after finds the version moved on and reads again). Returns how many expired."""
    result = await journaled(db, COLLECTION).update_many(
        {"state": "in_progress", "survey": survey_id, "updated_at": {"$lte": idle_since}},
        {
            "$set": {"state": "expired", "expired_at": at, "changed_at": at},
            "$unset": {"active_user": ""},
            "$inc": {"v": 1},
        },
    )
    return int(result.modified_count)


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


STATES = ("finished", "in_progress", "paused", "screened_out", "quota_full", "expired")


@dataclasses.dataclass(frozen=True)
class Filters:
    """Which sessions the survey page, its cross-tab, free-text list and exports count.

    Every field is optional (``None``/empty: no condition), all of them together (AND):
    ``channel`` (the QR channel recorded on the session), ``state`` (one of ``STATES``;
    ``in_progress`` includes the paused ones, ``paused`` only those), ``started_from`` /
    ``started_before`` (UTC instants; ``reports.parse_filters`` turns local dates in TIMEZONE
    into them), ``band`` (the result band's id), ``answered`` (``(question id, option number)``
    pairs: sessions whose answer to that question chose that option; for a rating, the value).
    """

    channel: str | None = None
    state: str | None = None
    started_from: dt.datetime | None = None
    started_before: dt.datetime | None = None
    band: str | None = None
    answered: tuple[tuple[str, int], ...] = ()

    def conditions(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.channel:
            out.append({"channel": self.channel})
        if self.state == "paused":
            out.append({"state": "in_progress", "paused": True})
        elif self.state:
            out.append({"state": self.state})
        started: dict[str, Any] = {}
        if self.started_from is not None:
            started["$gte"] = self.started_from
        if self.started_before is not None:
            started["$lt"] = self.started_before
        if started:
            out.append({"started_at": started})
        if self.band:
            out.append({"result.band": self.band})
        for question, option in self.answered:
            out.append({"answers": {"$elemMatch": {"q": question, "choices": option}}})
        return out

    def __bool__(self) -> bool:
        return bool(self.conditions())

    def matches(self, doc: Mapping[str, Any]) -> bool:
        """``conditions()`` evaluated on a session in memory (``service.survey_index``)."""
        if self.channel and doc.get("channel") != self.channel:
            return False
        if self.state == "paused":
            if doc.get("state") != "in_progress" or doc.get("paused") is not True:
                return False
        elif self.state and doc.get("state") != self.state:
            return False
        if self.started_from is not None or self.started_before is not None:
            started = doc.get("started_at")
            if not isinstance(started, dt.datetime):
                return False
            if started.tzinfo is None:
                started = started.replace(tzinfo=dt.UTC)
            if self.started_from is not None and started < self.started_from:
                return False
            if self.started_before is not None and started >= self.started_before:
                return False
        if self.band and (doc.get("result") or {}).get("band") != self.band:
            return False
        answers = doc.get("answers") or []
        for question, option in self.answered:
            if not any(
                a.get("q") == question and _holds(a.get("choices"), option) for a in answers
            ):
                return False
        return True


def _holds(value: Any, wanted: Any) -> bool:
    """MongoDB's equality on a field that may be an array: equal, or an element equal."""
    return value == wanted or (isinstance(value, list) and wanted in value)


NO_FILTERS = Filters()


def _match(
    survey: Survey,
    include_test_users: bool,
    versions: Versions = None,
    filters: Filters | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """``versions``: only the sessions started on these versions of the survey (``None``: all);
    sessions started before versions existed (no ``sv``) are version 1's. ``filters``: the
    page's filters, ANDed with ``extra`` (a filter on ``state`` and an aggregate's own
    ``state="finished"`` both hold)."""
    match: dict[str, Any] = {"survey": survey.id, **extra}
    if not include_test_users:
        match["test_user"] = {"$ne": True}
    if versions is not None:
        wanted = sorted(set(versions))
        match["sv"] = {"$in": [*wanted, None]} if 1 in wanted else {"$in": wanted}
    conditions = filters.conditions() if filters is not None else []
    if conditions:
        match = {"$and": [match, *conditions]}
    return match


def in_scope(
    doc: Mapping[str, Any],
    include_test_users: bool,
    versions: Versions = None,
    filters: Filters | None = None,
) -> bool:
    """``_match`` (less the survey) evaluated on a session in memory."""
    if not include_test_users and doc.get("test_user") is True:
        return False
    if versions is not None:
        sv = doc.get("sv")
        if (1 if sv is None else sv) not in versions:  # no ``sv``: started on version 1
            return False
    return filters is None or filters.matches(doc)


async def _aggregate(db: Db, pipeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    cursor = await db[COLLECTION].aggregate(pipeline)
    return await cursor.to_list()


# -- the report's numbers: each a few stages and a shaping function, run alone or together --
_FINISHED = {"$match": {"state": "finished"}}
# What the report reads of a session; the rest (recent, history, answer labels) stays behind.
_REPORT_FIELDS = {
    "state": 1,
    "paused": 1,
    "current": 1,
    "score": 1,
    "result.band": 1,
    "channel": 1,
    "finished_at": 1,
    "answers.q": 1,
    "answers.value": 1,
    "answers.choices": 1,
}


def _per_question_stages() -> list[dict[str, Any]]:
    return [
        {"$unwind": "$answers"},
        {
            "$group": {
                "_id": "$answers.q",
                "answered": {"$sum": 1},
                "avg": {"$avg": "$answers.value"},
                "min": {"$min": "$answers.value"},
                "max": {"$max": "$answers.value"},
            }
        },
    ]


def _per_choice_stages() -> list[dict[str, Any]]:
    return [
        {"$unwind": "$answers"},
        {"$match": {"answers.choices": {"$exists": True}}},
        {"$unwind": "$answers.choices"},
        {"$group": {"_id": {"q": "$answers.q", "c": "$answers.choices"}, "n": {"$sum": 1}}},
    ]


def _shape_options(
    survey: Survey, per_question: list[dict[str, Any]], per_choice: list[dict[str, Any]]
) -> list[dict[str, Any]]:
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


async def option_counts(
    db: Db,
    survey: Survey,
    *,
    include_test_users: bool = False,
    finished_only: bool = False,
    versions: Versions = None,
    filters: Filters | None = None,
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
        {"$match": _match(survey, include_test_users, versions, filters, **extra)},
        {"$project": {"answers": 1}},
    ]
    per_question = await _aggregate(db, [*base, *_per_question_stages()])
    per_choice = await _aggregate(db, [*base, *_per_choice_stages()])
    return _shape_options(survey, per_question, per_choice)


def _score_stages() -> list[dict[str, Any]]:
    return [_FINISHED, {"$group": {"_id": "$score", "count": {"$sum": 1}}}, {"$sort": {"_id": 1}}]


def _shape_scores(rows: list[dict[str, Any]]) -> list[dict[str, int]]:
    rows = sorted((r for r in rows if r["_id"] is not None), key=lambda r: r["_id"])
    return [{"score": row["_id"], "count": int(row["count"])} for row in rows]


async def score_distribution(
    db: Db,
    survey: Survey,
    *,
    include_test_users: bool = False,
    versions: Versions = None,
    filters: Filters | None = None,
) -> list[dict[str, int]]:
    """Finished attempts per total score: ``[{"score": 7, "count": 3}, ...]``, by score.

    Only scores that occurred are listed (the dashboard fills the axis from
    ``survey.score_range()`` if it wants every value).
    """
    match = {"$match": _match(survey, include_test_users, versions, filters)}
    return _shape_scores(await _aggregate(db, [match, *_score_stages()]))


def _band_stages() -> list[dict[str, Any]]:
    return [_FINISHED, {"$group": {"_id": "$result.band", "count": {"$sum": 1}}}]


def _shape_bands(survey: Survey, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    counts = {row["_id"]: int(row["count"]) for row in rows}
    out: list[dict[str, Any]] = [
        {"band": b.id, "title": b.title, "min": b.low, "max": b.high, "count": counts.pop(b.id, 0)}
        for b in survey.bands
    ]
    other = sum(counts.values())
    if other:
        out.append({"band": None, "title": "其他", "min": None, "max": None, "count": other})
    return out


async def band_counts(
    db: Db,
    survey: Survey,
    *,
    include_test_users: bool = False,
    versions: Versions = None,
    filters: Filters | None = None,
) -> list[dict[str, Any]]:
    """Finished attempts per result band, in the survey's band order, zeros included::

        [{"band": "light", "title": "轻度熬夜", "min": 7, "max": 13, "count": 4}, ...]

    A finished attempt whose band no longer exists in the definition is counted under
    ``{"band": None, "title": "其他"}`` (listed only when non-zero).
    """
    match = {"$match": _match(survey, include_test_users, versions, filters)}
    return _shape_bands(survey, await _aggregate(db, [match, *_band_stages()]))


def _state_stages() -> list[dict[str, Any]]:
    return [
        {
            "$group": {
                "_id": {"state": "$state", "current": "$current", "reminder": "$reminder.status"},
                "n": {"$sum": 1},
                "paused": {"$sum": {"$cond": [{"$eq": ["$paused", True]}, 1, 0]}},
            }
        }
    ]


def _shape_funnel(
    survey: Survey, states: list[dict[str, Any]], per_question: list[dict[str, Any]]
) -> dict[str, Any]:
    answered = {row["_id"]: int(row.get("answered", row.get("n", 0))) for row in per_question}
    started = finished = paused = 0
    ended = {"screened_out": 0, "quota_full": 0, "expired": 0}
    stuck: dict[str, int] = {}
    reminders = {"reminded": 0, "finished_after": 0, "failed": 0}
    for row in states:
        n = int(row["n"])
        started += n
        state = row["_id"].get("state")
        reminder = row["_id"].get("reminder")
        if reminder in REMINDED:
            reminders["reminded"] += n
            reminders["finished_after"] += n if state == "finished" else 0
        elif reminder == "failed":
            reminders["failed"] += n
        if state == "finished":
            finished += n
            continue
        if state in ended:
            ended[state] += n
            if state != "expired":
                continue  # an expired session stopped at its question: counted as dropped there
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
        "reminders": reminders,
        "questions": questions,
    }


async def funnel(
    db: Db,
    survey: Survey,
    *,
    include_test_users: bool = False,
    versions: Versions = None,
    filters: Filters | None = None,
) -> dict[str, Any]:
    """Starts versus completions, and where people stop::

        {"started": 20, "finished": 12, "in_progress": 6, "paused": 3,
         "screened_out": 1, "quota_full": 1, "expired": 0, "completion_rate": 0.6,
         "reminders": {"reminded": 4, "finished_after": 2, "failed": 1},
         "questions": [{"id": "bedtime", "position": 1, "title": "...",
                        "reached": 20, "answered": 19, "dropped": 1}, ...]}

    ``started`` counts users with a session (current attempt), ``in_progress`` those still
    answering (``paused`` of them paused); ``screened_out``, ``quota_full`` and ``expired``
    (idle past the survey's ``expire_after``) ended without a result and are not completions.
    ``reminders``: attempts sent a reminder (or perhaps sent: ``REMINDED``), of them finished,
    and reminders WeChat refused (45015, 43004, 40003, ...). Per question: ``reached`` =
    answered it or are stuck on it now (an expired session is stuck where it stopped);
    ``dropped`` = stuck on it (reached − answered). With branching, later questions may be
    reached by fewer people without anyone dropping.
    """
    match = {"$match": _match(survey, include_test_users, versions, filters)}
    states = await _aggregate(db, [match, *_state_stages()])
    answered_rows = await _aggregate(
        db,
        [
            match,
            {"$project": {"answers.q": 1}},
            {"$unwind": "$answers"},
            {"$group": {"_id": "$answers.q", "n": {"$sum": 1}}},
        ],
    )
    return _shape_funnel(survey, states, answered_rows)


def _completion_stages(timezone: str, since: dt.datetime | None) -> list[dict[str, Any]]:
    stages: list[dict[str, Any]] = [_FINISHED]
    if since is not None:
        stages.append({"$match": {"finished_at": {"$gte": since}}})
    stages.append(
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
        }
    )
    return stages


def _shape_completions(rows: list[dict[str, Any]], fill: bool) -> list[dict[str, Any]]:
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


async def completions_over_time(
    db: Db,
    survey: Survey,
    *,
    include_test_users: bool = False,
    versions: Versions = None,
    filters: Filters | None = None,
    since: dt.datetime | None = None,
    timezone: str = "Asia/Shanghai",
    fill: bool = True,
) -> list[dict[str, Any]]:
    """Completions per calendar day in ``timezone``: ``[{"date": "2026-11-27", "count": 3}, ...]``.

    Sorted by date; with ``fill`` the days without completions between the first and the last
    are included with ``count: 0`` (a chart's x axis). ``since`` limits to finishes at or after it.
    """
    match = {"$match": _match(survey, include_test_users, versions, filters)}
    rows = await _aggregate(db, [match, *_completion_stages(timezone, since)])
    return _shape_completions(rows, fill)


def _channel_stages() -> list[dict[str, Any]]:
    return [
        {
            "$group": {
                "_id": "$channel",
                "started": {"$sum": 1},
                "finished": {"$sum": {"$cond": [{"$eq": ["$state", "finished"]}, 1, 0]}},
            }
        }
    ]


def _shape_channels(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = [
        {
            "channel": row["_id"],
            "started": int(row["started"]),
            "finished": int(row["finished"]),
            "completion_rate": round(int(row["finished"]) / int(row["started"]), 4),
        }
        for row in rows
    ]
    out.sort(key=lambda r: (-r["started"], r["channel"] is None, str(r["channel"])))
    return out


async def channel_counts(
    db: Db,
    survey: Survey,
    *,
    include_test_users: bool = False,
    versions: Versions = None,
    filters: Filters | None = None,
) -> list[dict[str, Any]]:
    """Sessions per channel (the QR code they came from; ``None``: none), most started first::

    [{"channel": "poster-a", "started": 12, "finished": 7, "completion_rate": 0.5833}, ...]
    """
    match = {"$match": _match(survey, include_test_users, versions, filters)}
    return _shape_channels(await _aggregate(db, [match, *_channel_stages()]))


async def report_numbers(
    db: Db,
    survey: Survey,
    *,
    include_test_users: bool = False,
    versions: Versions = None,
    filters: Filters | None = None,
    timezone: str = "Asia/Shanghai",
) -> dict[str, Any]:
    """Everything the survey page shows in two aggregations: ``{"questions": option_counts,
    "scores": score_distribution, "bands": band_counts, "funnel": funnel, "completions":
    completions_over_time, "channels": channel_counts}``, each as that function returns it.

    On SecantusDB a pass over the sessions costs far more than grouping them (about 0.1 ms a
    session to read, more to unwind; ``$facet`` is slower still), so: one pass groups the
    sessions into a small cube (state, question waited on, paused, score, band, channel, day
    finished) from which every session-level number is summed here; one more pass unwinds the
    answers, grouped by question and the set of options chosen. ``bench/analysis.py``.
    """
    match = {"$match": _match(survey, include_test_users, versions, filters)}
    day = {"$dateToString": {"format": "%Y-%m-%d", "date": "$finished_at", "timezone": timezone}}
    cube = await _aggregate(
        db,
        [
            match,
            {
                "$group": {
                    "_id": {
                        "state": "$state",
                        "current": "$current",
                        "paused": "$paused",
                        "score": "$score",
                        "band": "$result.band",
                        "channel": "$channel",
                        "day": day,
                        "reminder": "$reminder.status",
                    },
                    "n": {"$sum": 1},
                }
            },
        ],
    )
    answers = await _aggregate(
        db,
        [
            match,
            {"$project": {"answers.q": 1, "answers.value": 1, "answers.choices": 1}},
            {"$unwind": "$answers"},
            {
                "$group": {
                    "_id": {"q": "$answers.q", "c": "$answers.choices"},
                    "n": {"$sum": 1},
                    "sum": {"$sum": "$answers.value"},
                    "min": {"$min": "$answers.value"},
                    "max": {"$max": "$answers.value"},
                }
            },
        ],
    )
    return numbers_from_rows(survey, cube, answers)


def numbers_from_rows(
    survey: Survey, cube: list[dict[str, Any]], answers: list[dict[str, Any]]
) -> dict[str, Any]:
    """``report_numbers`` from its two groupings (``cube``: sessions per state, question waited
    on, paused, score, band, channel and day finished; ``answers``: answers per question and set
    of options chosen, with the sum, min and max of their values), however they were counted:
    by MongoDB here, in memory by ``service.survey_index``."""
    per_question: dict[str, dict[str, Any]] = {}
    per_choice: dict[tuple[str, int], int] = {}
    for row in answers:
        q, chosen, n = row["_id"].get("q"), row["_id"].get("c"), int(row["n"])
        entry = per_question.setdefault(
            q, {"_id": q, "answered": 0, "sum": 0.0, "numbers": 0, "min": None, "max": None}
        )
        entry["answered"] += n
        if isinstance(row.get("sum"), int | float) and not isinstance(row.get("min"), list):
            entry["sum"] += row["sum"]
            entry["numbers"] += n
            for key, pick in (("min", min), ("max", max)):
                value = row.get(key)
                if isinstance(value, int | float):
                    entry[key] = value if entry[key] is None else pick(entry[key], value)
        for c in chosen if isinstance(chosen, list) else []:
            per_choice[(q, int(c))] = per_choice.get((q, int(c)), 0) + n
    for entry in per_question.values():
        entry["avg"] = entry["sum"] / entry["numbers"] if entry["numbers"] else None
    states: dict[tuple[Any, Any, Any], dict[str, Any]] = {}
    scores: dict[Any, int] = {}
    bands: dict[Any, int] = {}
    days: dict[Any, int] = {}
    channels: dict[Any, dict[str, Any]] = {}
    for row in cube:
        key, n = row["_id"], int(row["n"])
        state = key.get("state")
        slot = states.setdefault(
            (state, key.get("current"), key.get("reminder")),
            {
                "_id": {
                    "state": state,
                    "current": key.get("current"),
                    "reminder": key.get("reminder"),
                },
                "n": 0,
                "paused": 0,
            },
        )
        slot["n"] += n
        slot["paused"] += n if key.get("paused") is True else 0
        channel = channels.setdefault(
            key.get("channel"), {"_id": key.get("channel"), "started": 0, "finished": 0}
        )
        channel["started"] += n
        if state == "finished":
            channel["finished"] += n
            scores[key.get("score")] = scores.get(key.get("score"), 0) + n
            bands[key.get("band")] = bands.get(key.get("band"), 0) + n
            days[key.get("day")] = days.get(key.get("day"), 0) + n
    question_rows = list(per_question.values())
    choice_rows = [{"_id": {"q": q, "c": c}, "n": n} for (q, c), n in per_choice.items()]
    return {
        "questions": _shape_options(survey, question_rows, choice_rows),
        "scores": _shape_scores([{"_id": k, "count": n} for k, n in scores.items()]),
        "bands": _shape_bands(survey, [{"_id": k, "count": n} for k, n in bands.items()]),
        "funnel": _shape_funnel(survey, list(states.values()), question_rows),
        "completions": _shape_completions([{"_id": k, "count": n} for k, n in days.items()], True),
        "channels": _shape_channels(list(channels.values())),
    }


def question_kinds(survey: Survey, *question_ids: str) -> dict[str, str]:
    """``{question id: kind}`` of the named questions (``LookupError`` for an unknown one)."""
    kinds = {}
    for qid in question_ids:
        question = survey.question(qid)
        if question is None:
            raise LookupError(qid)
        kinds[qid] = question.kind
    return kinds


async def crosstab_counts(
    db: Db,
    survey: Survey,
    row_question: str,
    column_question: str,
    *,
    include_test_users: bool = False,
    versions: Versions = None,
    filters: Filters | None = None,
) -> dict[str, Any]:
    """Sessions that answered both questions, counted per pair of codes, in MongoDB::

        {"respondents": 12, "cells": [{"a": 1, "b": 3, "n": 4}, ...]}

    A code is the option number (single, multiple), the value (rating, number); a multiple-
    choice answer counts once for each option chosen, so the cells may add up to more than
    ``respondents``. No ``$filter``/``$lookup`` (SecantusDB): the answers are unwound twice.
    """
    kinds = question_kinds(survey, row_question, column_question)
    # Both answered; not ``$all`` on "answers.q": SecantusDB matches nothing with it.
    match = {
        "$and": [
            _match(survey, include_test_users, versions, filters),
            {"answers.q": row_question},
            {"answers.q": column_question},
        ]
    }

    def code(side: str, qid: str) -> tuple[list[dict[str, Any]], str]:
        if kinds[qid] in ("single", "multiple", "rating"):
            return [{"$unwind": f"${side}.choices"}], f"${side}.choices"
        return [], f"${side}.value"

    unwind_a, key_a = code("x", row_question)
    unwind_b, key_b = code("y", column_question)
    rows = await _aggregate(
        db,
        [
            {"$match": match},
            {"$project": {"x": "$answers", "y": "$answers"}},
            {"$unwind": "$x"},
            {"$match": {"x.q": row_question}},
            {"$unwind": "$y"},
            {"$match": {"y.q": column_question}},
            *unwind_a,
            *unwind_b,
            {"$group": {"_id": {"a": key_a, "b": key_b}, "n": {"$sum": 1}}},
        ],
    )
    counted = await _aggregate(db, [{"$match": match}, {"$count": "n"}])
    return {
        "respondents": int(counted[0]["n"]) if counted else 0,
        "cells": [
            {"a": row["_id"].get("a"), "b": row["_id"].get("b"), "n": int(row["n"])} for row in rows
        ],
    }


async def text_answers(
    db: Db,
    survey: Survey,
    question_id: str,
    *,
    search: str = "",
    skip: int = 0,
    limit: int = 20,
    include_test_users: bool = False,
    versions: Versions = None,
    filters: Filters | None = None,
) -> dict[str, Any]:
    """One page of the free-text answers to a question, newest session first::

        {"total": 31, "items": [{"openid": "...", "text": "...", "at": datetime,
                                 "state": "finished"}, ...]}

    ``search``: a case-insensitive substring (taken literally, not as a pattern).
    """
    wanted: dict[str, Any] = {"q": question_id}
    if search:
        wanted["value"] = {"$regex": re.escape(search), "$options": "i"}
    match = _match(survey, include_test_users, versions, filters, answers={"$elemMatch": wanted})
    answer_match = {f"answers.{k}": v for k, v in wanted.items()}
    rows = await _aggregate(
        db,
        [
            {"$match": match},
            {"$project": {"openid": 1, "state": 1, "started_at": 1, "answers": 1}},
            {"$unwind": "$answers"},
            {"$match": answer_match},
            {"$sort": {"started_at": -1, "_id": 1}},
            {
                "$facet": {
                    "total": [{"$count": "n"}],
                    "items": [{"$skip": max(0, skip)}, {"$limit": max(1, limit)}],
                }
            },
        ],
    )
    facet = rows[0] if rows else {"total": [], "items": []}
    return {
        "total": int(facet["total"][0]["n"]) if facet["total"] else 0,
        "items": [
            {
                "openid": row.get("openid", ""),
                "text": str(row["answers"].get("value", "")),
                "at": row["answers"].get("at") or row.get("started_at"),
                "state": row.get("state", ""),
            }
            for row in facet["items"]
        ],
    }


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
    filters: Filters | None = None,
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
        .find(
            _match(survey, include_test_users, versions, filters, **extra),
            {"recent": 0, "history": 0},
        )
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


async def iter_sessions(
    db: Db,
    survey: Survey,
    *,
    include_test_users: bool = False,
    versions: Versions = None,
    filters: Filters | None = None,
    batch_size: int = 500,
) -> AsyncIterator[dict[str, Any]]:
    """The survey's session documents (current attempts) by start time, streamed in batches,
    without the retry memory and earlier attempts: what an export reads, one at a time."""
    cursor = (
        db[COLLECTION]
        .find(
            _match(survey, include_test_users, versions, filters),
            {"recent": 0, "history": 0},
        )
        .sort([("started_at", ASCENDING), ("_id", ASCENDING)])
        .batch_size(batch_size)
    )
    async for doc in cursor:
        yield doc


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
    if result.deleted_count:
        await note_deletion(db)
    prefix = f"^{survey_id}:" if survey_id is not None else "^"
    await db[QUOTAS].delete_many({"_id": {"$regex": f"{prefix}.*:test$"}})
    return int(result.deleted_count)
