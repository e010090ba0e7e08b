"""The survey page's numbers from memory: each process keeps the sessions of the surveys the
dashboard looks at, follows their changes, and counts there.

Why: the numbers come from every session of a survey, and on the embedded SecantusDB every
aggregation is a pass over all of them (about 0.1 ms a session to read, 0.5 ms more to unwind
the answers): 2.4 s at 2,000 sessions, past the client's 10 s at 10,000, and the database busy
for all that time, the WeChat endpoint included. Here a survey's sessions are read once (one
batched ``find`` of the fields the report needs), then only what changed since: every write to
a session sets ``changed_at`` (index ``survey_changed``), so a page load reads the last
minute's changes (a few documents) and counts the rest in memory, on any filter. Deleting
sessions (a respondent's data, the test users) bumps a counter
(``store.surveys.deletions``) that makes the next page load read the survey again.

Nothing here is on the hot path: ``/wechat`` neither reads nor writes more than before, and a
process that never shows a survey page holds nothing. The numbers are those of the aggregation
(``store.surveys.report_numbers``, whose shaping they share), checked against it by the tests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import zoneinfo
from collections.abc import Mapping
from typing import Any

from .store import Db
from .store import surveys as store
from .store.surveys import Filters, Versions
from .surveys import Survey

__all__ = ["SurveyIndex"]

# What the report reads of a session (the filters included).
FIELDS = {
    "state": 1,
    "paused": 1,
    "current": 1,
    "score": 1,
    "result.band": 1,
    "channel": 1,
    "started_at": 1,
    "finished_at": 1,
    "sv": 1,
    "test_user": 1,
    "answers.q": 1,
    "answers.value": 1,
    "answers.choices": 1,
    "reminder.status": 1,
}
# Changes are read from this long before the newest ``changed_at`` seen: a write stamped by
# another process's clock, or acknowledged after a later one, is still read.
OVERLAP = dt.timedelta(minutes=1)
MAX_SURVEYS = 50  # surveys kept per process (the least recently shown go first)


@dataclasses.dataclass
class _Sessions:
    docs: dict[Any, dict[str, Any]] = dataclasses.field(default_factory=dict)
    newest: dt.datetime | None = None
    deletions: int = -1
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)


class SurveyIndex:
    """Per process: the sessions of the surveys shown, kept current; ``report_numbers`` as
    ``store.surveys.report_numbers`` computes it."""

    def __init__(self) -> None:
        self._surveys: dict[str, _Sessions] = {}

    async def sessions(self, db: Db, survey_id: str) -> list[dict[str, Any]]:
        """The survey's sessions as they are now (the report's fields)."""
        entry = self._surveys.pop(survey_id, None) or _Sessions()
        self._surveys[survey_id] = entry  # most recently shown last
        while len(self._surveys) > MAX_SURVEYS:
            del self._surveys[next(iter(self._surveys))]
        async with entry.lock:
            deletions = await store.deletions(db)
            if deletions != entry.deletions:
                entry.docs, entry.newest = {}, None  # read the survey again
            since = entry.newest - OVERLAP if entry.newest is not None else None
            async for doc in store.changed_sessions(db, survey_id, since, FIELDS):
                entry.docs[doc["_id"]] = doc
                stamp = doc.get("changed_at")
                if isinstance(stamp, dt.datetime) and (
                    entry.newest is None or stamp > entry.newest
                ):
                    entry.newest = stamp
            entry.deletions = deletions
            return list(entry.docs.values())

    async def report_numbers(
        self,
        db: Db,
        survey: Survey,
        *,
        include_test_users: bool = False,
        versions: Versions = None,
        filters: Filters | None = None,
        timezone: str = "Asia/Shanghai",
    ) -> dict[str, Any]:
        docs = [
            doc
            for doc in await self.sessions(db, survey.id)
            if store.in_scope(doc, include_test_users, versions, filters)
        ]
        return store.numbers_from_rows(survey, _cube(docs, timezone), _answers(docs))

    async def crosstab_counts(
        self,
        db: Db,
        survey: Survey,
        row_question: str,
        column_question: str,
        *,
        include_test_users: bool = False,
        versions: Versions = None,
        filters: Filters | None = None,
    ) -> dict[str, Any]:
        """``store.surveys.crosstab_counts``, counted here: the sessions that answered both
        questions, and per pair of codes (the option numbers of a choice or rating question, the
        value otherwise; a multiple-choice answer once per option) how many answers."""
        kinds = store.question_kinds(survey, row_question, column_question)
        respondents = 0
        cells: dict[tuple[Any, Any], int] = {}
        for doc in await self.sessions(db, survey.id):
            if not store.in_scope(doc, include_test_users, versions, filters):
                continue
            answers = [a for a in doc.get("answers") or [] if isinstance(a, Mapping)]
            xs = [a for a in answers if a.get("q") == row_question]
            ys = [a for a in answers if a.get("q") == column_question]
            if not xs or not ys:
                continue
            respondents += 1
            for x in xs:
                for y in ys:
                    for a in _codes(x, kinds[row_question]):
                        for b in _codes(y, kinds[column_question]):
                            cells[(a, b)] = cells.get((a, b), 0) + 1
        return {
            "respondents": respondents,
            "cells": [{"a": a, "b": b, "n": n} for (a, b), n in cells.items()],
        }


def _codes(answer: Mapping[str, Any], kind: str) -> list[Any]:
    """An answer's codes as the aggregation's ``$unwind`` yields them: the elements of
    ``choices`` (nothing when missing, null or empty) for choice and rating questions, else
    the value."""
    if kind not in ("single", "multiple", "rating"):
        return [answer.get("value")]
    choices = answer.get("choices")
    if choices is None:
        return []
    return list(choices) if isinstance(choices, list) else [choices]


def _cube(docs: list[dict[str, Any]], timezone: str) -> list[dict[str, Any]]:
    """The aggregation's first grouping: sessions per state, question waited on, paused, score,
    band, channel and local day finished."""
    tz = zoneinfo.ZoneInfo(timezone)
    counts: dict[tuple[Any, ...], int] = {}
    for doc in docs:
        finished = doc.get("finished_at")
        day = None
        if isinstance(finished, dt.datetime):
            aware = finished if finished.tzinfo else finished.replace(tzinfo=dt.UTC)
            day = aware.astimezone(tz).strftime("%Y-%m-%d")
        key = (
            doc.get("state"),
            doc.get("current"),
            doc.get("paused"),
            doc.get("score"),
            (doc.get("result") or {}).get("band"),
            doc.get("channel"),
            day,
            (doc.get("reminder") or {}).get("status"),
        )
        counts[key] = counts.get(key, 0) + 1
    names = ("state", "current", "paused", "score", "band", "channel", "day", "reminder")
    return [{"_id": dict(zip(names, key, strict=True)), "n": n} for key, n in counts.items()]


def _answers(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The aggregation's second grouping: answers per question and set of options chosen, with
    ``$sum`` / ``$min`` / ``$max`` of their values as MongoDB computes them (numbers summed,
    others ignored by the sum; in BSON order numbers < strings < arrays)."""
    groups: dict[tuple[Any, Any], list[Any]] = {}
    for doc in docs:
        for answer in doc.get("answers") or []:
            if not isinstance(answer, Mapping):
                continue
            choices = answer.get("choices")
            key = (answer.get("q"), tuple(choices) if isinstance(choices, list) else choices)
            groups.setdefault(key, []).append(answer.get("value"))
    rows = []
    for (q, choices), values in groups.items():
        numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        texts = [v for v in values if isinstance(v, str)]
        lists = [v for v in values if isinstance(v, list)]
        low: Any = min(numbers) if numbers else min(texts) if texts else lists[0] if lists else None
        high: Any = (
            lists[0] if lists else max(texts) if texts else max(numbers) if numbers else None
        )
        rows.append(
            {
                "_id": {"q": q, "c": list(choices) if isinstance(choices, tuple) else choices},
                "n": len(values),
                "sum": sum(numbers),
                "min": low,
                "max": high,
            }
        )
    return rows
