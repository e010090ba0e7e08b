"""The survey reports the dashboard shows: plain data from plain arguments, no HTTP in here.

Every function takes the database and the loaded survey definitions (``definitions(engine)``),
and returns what the JSON API sends (datetimes stay ``datetime``; the API's encoder writes them as
ISO 8601). The arithmetic lives in ``service.store.surveys``'s aggregates; this module puts them
together per page:

- ``survey_list``: every survey with its starts, completions and completion rate;
- ``totals``: starts and completions over every survey (the overview cards);
- ``survey_report``: all the charts of one survey;
- ``progress``: where each user of a page is in every survey (the one progress shape);
- ``wipe_test``: delete the simulator's survey sessions;
- ``csv_header`` / ``csv_rows``: the export, one row per user, cells safe for Excel.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, Protocol

from pymongo.asynchronous.database import AsyncDatabase

from service.store import dashboard as dashboard_store
from service.store import surveys as store
from service.surveys import Survey

__all__ = [
    "csv_cell",
    "csv_header",
    "csv_rows",
    "definitions",
    "find",
    "progress",
    "progress_entry",
    "survey_list",
    "survey_report",
    "titles",
    "totals",
    "wipe_test",
]

Db = AsyncDatabase[dict[str, Any]]


class _Engine(Protocol):
    def all_surveys(self) -> Iterable[Survey]: ...


def definitions(engine: _Engine | None) -> list[Survey]:
    """The surveys the engine has loaded, in its order; none without an engine."""
    return [] if engine is None else list(engine.all_surveys())


def find(surveys: Sequence[Survey], survey_id: str) -> Survey | None:
    return next((s for s in surveys if s.id == survey_id), None)


def titles(surveys: Sequence[Survey]) -> list[dict[str, str]]:
    return [{"id": s.id, "title": s.title} for s in surveys]


async def survey_list(
    db: Db, surveys: Sequence[Survey], *, include_test: bool = False
) -> list[dict[str, Any]]:
    """Every survey's description with ``started``, ``finished`` and ``completion_rate``."""
    items = []
    for survey in surveys:
        funnel = await store.funnel(db, survey, include_test_users=include_test)
        items.append(
            {
                **survey.describe(),
                "started": funnel["started"],
                "finished": funnel["finished"],
                "screened_out": funnel["screened_out"],
                "quota_full": funnel["quota_full"],
                "completion_rate": funnel["completion_rate"],
            }
        )
    return items


async def totals(
    db: Db, surveys: Sequence[Survey], *, include_test: bool = False
) -> dict[str, int]:
    """Starts and completions over every survey: ``{"started": n, "finished": m}``."""
    items = await survey_list(db, surveys, include_test=include_test)
    return {
        "started": sum(item["started"] for item in items),
        "finished": sum(item["finished"] for item in items),
    }


def question_signature(question: Any) -> tuple[Any, ...]:
    """What must not change for a question's answers to be counted together across versions:
    its kind, its options (labels, in order) and its scale."""
    labels = tuple(o.label for o in question.options)
    return (question.kind, labels, question.scale_min, question.scale_max)


async def survey_report(
    db: Db,
    survey: Survey,
    *,
    include_test: bool = False,
    timezone: str = "Asia/Shanghai",
    version: int | None = None,
    history: Sequence[Survey] = (),
) -> dict[str, Any]:
    """Per-question counts, scores (with their range and average), bands, funnel, completions
    per day in ``timezone``.

    ``history``: every published version of the survey (``survey`` is the newest). With
    ``version`` the report counts the sessions started on that version only, with its own
    questions (``LookupError`` if there is no such version). Without, it counts all versions
    together by question id, with the newest questions; a question whose options changed
    between versions is counted over the versions where it is as in the newest only, and says
    so (``"versions": [1, 3]``) — the per-version reports show the others.
    """
    definition = survey
    versions: list[int] | None = None
    if version is not None:
        found = next((v for v in history if v.version == version), None)
        if found is None:
            if version != survey.version:
                raise LookupError(version)
            found = survey
        definition, versions = found, [version]
    kw: dict[str, Any] = {"include_test_users": include_test, "versions": versions}
    scores = await store.score_distribution(db, definition, **kw)
    scored = sum(row["count"] for row in scores)
    points = sum(row["score"] * row["count"] for row in scores)
    low, high = definition.score_range() if definition.scored else (0, 0)
    questions = await store.option_counts(db, definition, **kw)
    if version is None and len(history) > 1:
        questions = await _questions_across_versions(db, definition, history, questions, kw)
    return {
        "survey": definition.describe(),
        "version": version,
        "versions": [
            {"version": v.version, "title": v.title, "questions": v.total} for v in history
        ],
        "questions": questions,
        "scores": scores,
        "score_range": [low, high],
        "average_score": round(points / scored, 2) if scored else None,
        "bands": await store.band_counts(db, definition, **kw),
        "funnel": await store.funnel(db, definition, **kw),
        "completions": await store.completions_over_time(db, definition, timezone=timezone, **kw),
        "quotas": await _quotas(db, definition),
    }


async def _quotas(db: Db, survey: Survey) -> list[dict[str, Any]]:
    """Each quota of the definition with the users admitted so far (all versions, real users):
    ``[{"id": "night-owls", "when": "bedtime == 4", "max": 100, "count": 37}]``."""
    if not survey.quotas:
        return []
    counts = await store.quota_counts(db, survey.id)
    return [
        {"id": q.id, "when": q.when.source, "max": q.limit, "count": counts.get(q.id, 0)}
        for q in survey.quotas
    ]


async def _questions_across_versions(
    db: Db,
    newest: Survey,
    history: Sequence[Survey],
    questions: list[dict[str, Any]],
    kw: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """Recount the questions that changed between versions over the matching versions only."""
    groups: dict[tuple[int, ...], list[str]] = {}
    for question in newest.questions:
        mine = question_signature(question)
        same: list[int] = []
        differs = False
        for v in history:
            other = v.question(question.id)
            if other is None:
                continue
            if question_signature(other) == mine:
                same.append(v.version)
            else:
                differs = True
        if differs:
            groups.setdefault(tuple(same), []).append(question.id)
    by_id = {entry["id"]: entry for entry in questions}
    for group, ids in groups.items():
        recount = await store.option_counts(db, newest, **{**kw, "versions": list(group)})
        for entry in recount:
            if entry["id"] in ids:
                by_id[entry["id"]] = {**entry, "versions": list(group)}
    return [by_id[entry["id"]] for entry in questions]


def progress_entry(survey: Survey, doc: Mapping[str, Any] | None) -> dict[str, Any]:
    """Where one user is in one survey, from the survey session document (``None``: none)::

        {"survey_id": "baogan", "title": "爆肝度调查", "total": 10, "state": "not_started"}
        {..., "state": "in_progress", "paused": False, "position": 4, "question_id": "alarm",
         "answered": 3, "attempt": 1, "started_at": ...}
        {..., "state": "finished", "score": 17, "band": "moderate", "result_title": "中度爆肝",
         "answered": 10, "attempt": 1, "started_at": ..., "finished_at": ...}
        {..., "state": "screened_out" | "quota_full", "reason": "age < 18" | "night-owls",
         "answered": 3, "attempt": 1, "started_at": ..., "finished_at": ...}

    ``title`` is the survey's; ``position`` is 1-based (``第 4/10 题``), ``None`` when the
    question being asked is no longer in the definition.
    """
    entry: dict[str, Any] = {
        "survey_id": survey.id,
        "title": survey.title,
        "total": survey.total,
        "state": "not_started",
    }
    if doc is None:
        return entry
    entry.update(
        answered=len(doc.get("answers") or []),
        attempt=doc.get("attempt", 1),
        started_at=doc.get("started_at"),
    )
    if doc.get("state") == "finished":
        result = doc.get("result") or {}
        entry.update(
            state="finished",
            finished_at=doc.get("finished_at"),
            score=doc.get("score"),
            band=result.get("band"),
            result_title=result.get("title"),
        )
        return entry
    if doc.get("state") in ("screened_out", "quota_full"):
        ended = doc.get("ended") or {}
        entry.update(
            state=doc["state"],
            finished_at=doc.get("finished_at"),
            reason=ended.get("quota") or ended.get("if"),
        )
        return entry
    current = doc.get("current")
    question = survey.question(current) if isinstance(current, str) and current else None
    entry.update(
        state="in_progress",
        paused=bool(doc.get("paused")),
        question_id=current,
        position=survey.position(question.id) if question is not None else None,
    )
    return entry


async def progress(
    db: Db, surveys: Sequence[Survey], openids: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """Each user's ``progress_entry`` in every survey, for a page of users: one query."""
    if not surveys or not openids:
        return {}
    by_key = {
        (doc["openid"], doc["survey"]): doc
        for doc in await dashboard_store.survey_sessions_of(db, list(openids))
    }
    return {
        openid: [progress_entry(s, by_key.get((openid, s.id))) for s in surveys]
        for openid in openids
    }


async def wipe_test(db: Db) -> dict[str, int]:
    """Delete every test user's survey sessions: ``{"survey_sessions": n}``."""
    return {"survey_sessions": await store.delete_test_data(db)}


def csv_header(survey: Survey) -> list[str]:
    return [header for _, header in store.response_columns(survey)]


async def csv_rows(
    db: Db, survey: Survey, *, include_test: bool = False, finished_only: bool = False
) -> AsyncIterator[list[str]]:
    """The export's rows after ``csv_header``, one per user, streamed; every cell a string."""
    keys = [key for key, _ in store.response_columns(survey)]
    async for row in store.iter_responses(
        db, survey, include_test_users=include_test, finished_only=finished_only
    ):
        yield [csv_cell(row.get(key, "")) for key in keys]


def csv_cell(value: Any) -> str:
    """A cell as text; one starting with = + - @ (a formula to Excel) gets a leading quote."""
    text = "" if value is None else str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not _is_number(text):
        return "'" + text
    return text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
