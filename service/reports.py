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
- ``parse_filters``: the survey page's filters from its query arguments (every mistake listed);
- ``crosstab``: two questions crossed, counts with row/column percentages and totals;
- ``text_answers``: a page of one text question's answers, searchable;
- ``csv_header`` / ``csv_rows``: the export, one row per user, cells safe for Excel.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import zoneinfo
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from pymongo.asynchronous.database import AsyncDatabase

from service.store import dashboard as dashboard_store
from service.store import surveys as store
from service.store.surveys import Filters
from service.surveys import Survey

__all__ = [
    "FilterError",
    "Filters",
    "answers",
    "crosstab",
    "csv_cell",
    "csv_header",
    "csv_rows",
    "definitions",
    "find",
    "parse_filters",
    "progress",
    "progress_entry",
    "survey_list",
    "survey_report",
    "text_answers",
    "titles",
    "totals",
    "trends",
    "wipe_test",
]

Db = AsyncDatabase[dict[str, Any]]


class _Engine(Protocol):
    def all_surveys(self) -> Iterable[Survey]: ...


class Numbers(Protocol):
    """Who counts a survey's numbers: ``store.surveys.report_numbers`` (aggregations in the
    database) or ``SurveyIndex.report_numbers`` (in memory, ``service.survey_index``)."""

    async def __call__(
        self,
        db: Db,
        survey: Survey,
        *,
        include_test_users: bool = ...,
        versions: Sequence[int] | None = ...,
        filters: Filters | None = ...,
        timezone: str = ...,
    ) -> dict[str, Any]: ...


class Cells(Protocol):
    """Who counts a cross-tab's cells: ``store.surveys.crosstab_counts`` or
    ``SurveyIndex.crosstab_counts``."""

    async def __call__(
        self,
        db: Db,
        survey: Survey,
        row_question: str,
        column_question: str,
        *,
        include_test_users: bool = ...,
        versions: Sequence[int] | None = ...,
        filters: Filters | None = ...,
    ) -> dict[str, Any]: ...


def definitions(engine: _Engine | None) -> list[Survey]:
    """The surveys the engine has loaded, in its order; none without an engine."""
    return [] if engine is None else list(engine.all_surveys())


def find(surveys: Sequence[Survey], survey_id: str) -> Survey | None:
    return next((s for s in surveys if s.id == survey_id), None)


def titles(surveys: Sequence[Survey]) -> list[dict[str, str]]:
    return [{"id": s.id, "title": s.title} for s in surveys]


async def survey_list(
    db: Db,
    surveys: Sequence[Survey],
    *,
    include_test: bool = False,
    numbers: Numbers | None = None,
) -> list[dict[str, Any]]:
    """Every survey's description with ``started``, ``finished`` and ``completion_rate``."""
    items = []
    for survey in surveys:
        if numbers is not None:
            funnel = (await numbers(db, survey, include_test_users=include_test))["funnel"]
        else:
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
    db: Db,
    surveys: Sequence[Survey],
    *,
    include_test: bool = False,
    numbers: Numbers | None = None,
) -> dict[str, int]:
    """Starts and completions over every survey: ``{"started": n, "finished": m}``."""
    items = await survey_list(db, surveys, include_test=include_test, numbers=numbers)
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
    filters: Filters | None = None,
    numbers: Numbers | None = None,
) -> dict[str, Any]:
    """Per-question counts, scores (with their range and average), bands, funnel, completions
    per day in ``timezone``, counted by ``numbers`` (default: aggregations in the database).

    ``history``: every published version of the survey (``survey`` is the newest). With
    ``version`` the report counts the sessions started on that version only, with its own
    questions (``LookupError`` if there is no such version). Without, it counts all versions
    together by question id, with the newest questions; a question whose options changed
    between versions is counted over the versions where it is as in the newest only, and says
    so (``"versions": [1, 3]``) — the per-version reports show the others. ``filters`` (the
    page's, ``parse_filters``) narrow every number of the report alike.
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
    kw: dict[str, Any] = {
        "include_test_users": include_test,
        "versions": versions,
        "filters": filters,
    }
    count = numbers or store.report_numbers
    kw["timezone"] = timezone
    counted = await count(db, definition, **kw)
    scores = counted["scores"]
    scored = sum(row["count"] for row in scores)
    points = sum(row["score"] * row["count"] for row in scores)
    low, high = definition.score_range() if definition.scored else (0, 0)
    questions = counted["questions"]
    if version is None and len(history) > 1:
        questions = await _questions_across_versions(db, definition, history, questions, kw, count)
    return {
        "survey": definition.describe(),
        "version": version,
        "versions": [
            {"version": v.version, "title": v.title, "questions": v.total} for v in history
        ],
        "filters": describe_filters(filters),
        "questions": questions,
        "scores": scores,
        "score_range": [low, high],
        "average_score": round(points / scored, 2) if scored else None,
        "bands": counted["bands"],
        "channels": counted["channels"],
        "funnel": counted["funnel"],
        "completions": counted["completions"],
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
    count: Numbers,
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
        recount = (await count(db, newest, **{**kw, "versions": list(group)}))["questions"]
        for entry in recount:
            if entry["id"] in ids:
                by_id[entry["id"]] = {**entry, "versions": list(group)}
    return [by_id[entry["id"]] for entry in questions]


class FilterError(ValueError):
    """The survey page's filters had mistakes; ``errors`` lists every one."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def _local_midnight(day: dt.date, tz: zoneinfo.ZoneInfo) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tz).astimezone(dt.UTC)


def parse_filters(
    survey: Survey, get: Callable[[str], str], *, timezone: str = "Asia/Shanghai"
) -> Filters:
    """The filters of the survey page, its exports and the CLI from their arguments.

    ``get(name)`` returns an argument's text ("" when absent): ``channel``, ``state`` (one of
    ``store.STATES``), ``from`` and ``to`` (dates ``YYYY-MM-DD``, both included, in
    ``timezone``, on the session's start), ``band`` (a band id of the survey), ``answered``
    (``QID:N``, several joined by ``,``: chose option N of question QID). Raises
    ``FilterError`` with every mistake.
    """
    errors: list[str] = []
    tz = zoneinfo.ZoneInfo(timezone)
    channel = get("channel").strip() or None
    if channel is not None and len(channel.encode()) > 64:
        errors.append("channel: at most 64 bytes")
    state = get("state").strip() or None
    if state is not None and state not in store.STATES:
        errors.append(f"state: one of {', '.join(store.STATES)}")
    bounds: dict[str, dt.datetime | None] = {"from": None, "to": None}
    days: dict[str, dt.date] = {}
    for name in bounds:
        raw = get(name).strip()
        if not raw:
            continue
        try:
            days[name] = dt.date.fromisoformat(raw)
        except ValueError:
            errors.append(f"{name}: a date YYYY-MM-DD")
    if "from" in days:
        bounds["from"] = _local_midnight(days["from"], tz)
    if "to" in days:
        bounds["to"] = _local_midnight(days["to"] + dt.timedelta(days=1), tz)
    if "from" in days and "to" in days and days["from"] > days["to"]:
        errors.append("from: after to")
    band = get("band").strip() or None
    if band is not None and band not in {b.id for b in survey.bands}:
        errors.append(f"band: no band {band!r} in this survey")
    answered: list[tuple[str, int]] = []
    for part in filter(None, (p.strip() for p in get("answered").split(","))):
        qid, _, number = part.rpartition(":")
        question = survey.question(qid) if qid else None
        if question is None or question.kind not in ("single", "multiple", "rating"):
            errors.append(f"answered: {part!r} is not QUESTION:OPTION of a choice or rating")
            continue
        if not number.isdigit() or len(number) > 6:
            errors.append(f"answered: {part!r} needs an option number")
            continue
        value = int(number)
        low, high = (
            (1, len(question.options))
            if question.kind != "rating"
            else (question.scale_min, question.scale_max)
        )
        if not low <= value <= high:
            errors.append(f"answered: {qid} has no option {value}")
            continue
        answered.append((qid, value))
    if errors:
        raise FilterError(errors)
    return Filters(
        channel=channel,
        state=state,
        started_from=bounds["from"],
        started_before=bounds["to"],
        band=band,
        answered=tuple(answered),
    )


def describe_filters(filters: Filters | None) -> dict[str, Any]:
    """The filters as JSON-ready data (what the page shows it counted)."""
    if filters is None:
        return {}
    out = {k: v for k, v in dataclasses.asdict(filters).items() if v not in (None, (), [])}
    if "answered" in out:
        out["answered"] = [f"{q}:{n}" for q, n in filters.answered]
    return out


def _axis(question: Any, values: Iterable[Any]) -> tuple[list[dict[str, Any]], Callable[..., Any]]:
    """The categories of one side of a cross-tab and a function from a stored code to one.

    Choice questions: every option (``value`` its number); ratings: every value of the scale;
    numbers: up to 6 equal bins over the answers' range (the question's bounds when set)."""
    if question.kind in ("single", "multiple"):
        cats = [{"value": i, "label": o.label} for i, o in enumerate(question.options, 1)]
        return cats, lambda code: code
    if question.kind == "rating":
        cats = [
            {"value": v, "label": str(v)} for v in range(question.scale_min, question.scale_max + 1)
        ]
        return cats, lambda code: code
    numbers = [float(v) for v in values if isinstance(v, int | float)]
    if not numbers:
        return [], lambda code: None
    low = question.min_value if question.min_value is not None else min(numbers)
    high = question.max_value if question.max_value is not None else max(numbers)
    low, high = min(low, min(numbers)), max(high, max(numbers))
    count = 6 if high > low else 1
    width = (high - low) / count if high > low else 1.0
    if question.integer or all(n.is_integer() for n in numbers):
        width = max(1.0, math.ceil(width))
        count = max(1, math.ceil((high - low + 1) / width))
    edges = [low + i * width for i in range(count + 1)]

    def fmt(x: float) -> str:
        return f"{x:g}"

    def label(i: int) -> str:
        a, b = edges[i], edges[i + 1]
        if question.integer or all(n.is_integer() for n in numbers):
            return f"{fmt(a)}–{fmt(b - 1)}" if b - 1 > a else fmt(a)
        return f"{fmt(a)}–{fmt(b)}"

    cats = [{"value": i + 1, "label": label(i)} for i in range(count)]

    def bin_of(code: Any) -> int | None:
        if not isinstance(code, int | float):
            return None
        i = int((float(code) - low) // width) if width else 0
        return min(max(i, 0), count - 1) + 1

    return cats, bin_of


async def crosstab(
    db: Db,
    survey: Survey,
    row_question: str,
    column_question: str,
    *,
    include_test: bool = False,
    versions: Sequence[int] | None = None,
    filters: Filters | None = None,
    cells: Cells | None = None,
) -> dict[str, Any]:
    """Two questions crossed, counted by ``cells`` (default: an aggregation in the database;
    ``LookupError`` for an unknown or text question)::

        {"rows": {"id", "title", "categories": [{"value", "label"}]}, "columns": {...},
         "counts": [[n, ...], ...],          # counts[i][j]: row category i, column category j
         "row_totals": [...], "column_totals": [...], "total": n,
         "row_percent": [[...]], "column_percent": [[...]],   # 0-100, one decimal
         "respondents": n}                   # sessions that answered both

    Multiple choice counts once per option chosen (totals are of answers, not people).
    """
    questions = []
    for qid in (row_question, column_question):
        question = survey.question(qid)
        if question is None or question.kind == "text":
            raise LookupError(qid)
        questions.append(question)
    raw = await (cells or store.crosstab_counts)(
        db,
        survey,
        row_question,
        column_question,
        include_test_users=include_test,
        versions=versions,
        filters=filters,
    )
    row_cats, row_of = _axis(questions[0], [c["a"] for c in raw["cells"]])
    col_cats, col_of = _axis(questions[1], [c["b"] for c in raw["cells"]])
    row_index = {c["value"]: i for i, c in enumerate(row_cats)}
    col_index = {c["value"]: i for i, c in enumerate(col_cats)}
    counts = [[0] * len(col_cats) for _ in row_cats]
    for cell in raw["cells"]:
        i = row_index.get(row_of(cell["a"]))
        j = col_index.get(col_of(cell["b"]))
        if i is not None and j is not None:
            counts[i][j] += cell["n"]
    row_totals = [sum(r) for r in counts]
    column_totals = [sum(counts[i][j] for i in range(len(row_cats))) for j in range(len(col_cats))]

    def pct(n: int, d: int) -> float:
        return round(100 * n / d, 1) if d else 0.0

    return {
        "rows": {"id": questions[0].id, "title": questions[0].text, "categories": row_cats},
        "columns": {"id": questions[1].id, "title": questions[1].text, "categories": col_cats},
        "counts": counts,
        "row_totals": row_totals,
        "column_totals": column_totals,
        "total": sum(row_totals),
        "row_percent": [[pct(n, row_totals[i]) for n in r] for i, r in enumerate(counts)],
        "column_percent": [[pct(n, column_totals[j]) for j, n in enumerate(r)] for r in counts],
        "respondents": raw["respondents"],
    }


def crosstab_table(table: Mapping[str, Any]) -> list[list[str]]:
    """A cross-tab as rows of cells for CSV: the counts with totals, then the row and column
    percentages, each block headed by the column categories."""
    cols = [c["label"] for c in table["columns"]["categories"]]
    rows = [c["label"] for c in table["rows"]["categories"]]
    head = f"{table['rows']['title']} \\ {table['columns']['title']}"
    out: list[list[str]] = [[head, *cols, "合计 total"]]
    for label, counts, total in zip(rows, table["counts"], table["row_totals"], strict=True):
        out.append([label, *map(str, counts), str(total)])
    out.append(["合计 total", *map(str, table["column_totals"]), str(table["total"])])
    for name, key in (("行 % row %", "row_percent"), ("列 % column %", "column_percent")):
        out.append([])
        out.append([name, *cols])
        for label, values in zip(rows, table[key], strict=True):
            out.append([label, *(f"{v:.1f}" for v in values)])
    return [[csv_cell(cell) for cell in row] for row in out]


async def text_answers(
    db: Db,
    survey: Survey,
    question_id: str,
    *,
    search: str = "",
    page: int = 1,
    per_page: int = 20,
    include_test: bool = False,
    versions: Sequence[int] | None = None,
    filters: Filters | None = None,
) -> dict[str, Any]:
    """One page (1-based) of a text question's answers: ``{"question", "total", "page",
    "pages", "per_page", "items"}`` (``LookupError`` for an unknown or non-text question)."""
    question = survey.question(question_id)
    if question is None or question.kind != "text":
        raise LookupError(question_id)
    page = max(1, page)
    found = await store.text_answers(
        db,
        survey,
        question_id,
        search=search,
        skip=(page - 1) * per_page,
        limit=per_page,
        include_test_users=include_test,
        versions=versions,
        filters=filters,
    )
    return {
        "question": {"id": question.id, "title": question.text},
        "search": search,
        "total": found["total"],
        "page": page,
        "per_page": per_page,
        "pages": max(1, math.ceil(found["total"] / per_page)),
        "items": found["items"],
    }


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


async def answers(db: Db, surveys: Sequence[Survey], openid: str) -> list[dict[str, Any]]:
    """One user in every survey: their ``progress_entry`` plus what they answered, in the
    survey's question order::

        {..., "state": "finished", "score": 17, "result_title": "中度爆肝",
         "answers": [{"position": 1, "question_id": "bedtime", "question": "最近一个月…",
                      "answer": "晚上 11 点以前", "score": 0}, ...]}

    A question no longer in the definition is listed last, by its id.
    """
    by_survey = {
        doc.get("survey"): doc for doc in await dashboard_store.survey_answers_of(db, openid)
    }
    out = []
    for survey in surveys:
        doc = by_survey.get(survey.id)
        entry = progress_entry(survey, doc)
        given = {a.get("q"): a for a in (doc or {}).get("answers") or [] if a.get("q")}
        listed: list[dict[str, Any]] = []
        for position, question in enumerate(survey.questions, 1):
            answer = given.pop(question.id, None)
            if answer is not None:
                listed.append(_answer_row(position, question.id, question.text, answer))
        for question_id, answer in given.items():
            listed.append(_answer_row(None, str(question_id), "", answer))
        entry["answers"] = listed
        out.append(entry)
    return out


def _answer_row(
    position: int | None, question_id: str, text: str, answer: Mapping[str, Any]
) -> dict[str, Any]:
    value = answer.get("label", answer.get("value", ""))
    return {
        "position": position,
        "question_id": question_id,
        "question": text,
        "answer": "" if value is None else str(value),
        "score": answer.get("score"),
    }


async def trends(
    db: Db,
    surveys: Sequence[Survey],
    *,
    days: int,
    timezone: str,
    include_test: bool = False,
    now: dt.datetime | None = None,
) -> list[dict[str, Any]]:
    """The overview's trend: per calendar day in ``timezone``, the last ``days`` days, oldest
    first: messages, new followers, unfollows and survey completions (every survey)."""
    now = now or dt.datetime.now(dt.UTC)
    rows = await dashboard_store.messages_per_day(
        db, days=days, tz=timezone, include_test=include_test, now=now
    )
    since = dashboard_store.day_start(now, timezone) - dt.timedelta(days=days - 1)
    completions: dict[str, int] = {}
    for survey in surveys:
        for row in await store.completions_over_time(
            db,
            survey,
            include_test_users=include_test,
            since=since,
            timezone=timezone,
            fill=False,
        ):
            completions[row["date"]] = completions.get(row["date"], 0) + int(row["count"])
    return [{**row, "completions": completions.get(row["date"], 0)} for row in rows]


async def wipe_test(db: Db) -> dict[str, int]:
    """Delete every test user's survey sessions: ``{"survey_sessions": n}``."""
    return {"survey_sessions": await store.delete_test_data(db)}


def csv_header(survey: Survey) -> list[str]:
    return [header for _, header in store.response_columns(survey)]


async def csv_rows(
    db: Db,
    survey: Survey,
    *,
    include_test: bool = False,
    finished_only: bool = False,
    filters: Filters | None = None,
    versions: Sequence[int] | None = None,
    pseudonym: Callable[[str], str] | None = None,
) -> AsyncIterator[list[str]]:
    """The export's rows after ``csv_header``, one per user, streamed; every cell a string;
    openids replaced by ``pseudonym(openid)`` when given."""
    keys = [key for key, _ in store.response_columns(survey)]
    async for row in store.iter_responses(
        db,
        survey,
        include_test_users=include_test,
        finished_only=finished_only,
        filters=filters,
        versions=versions,
    ):
        if pseudonym is not None and row.get("openid"):
            row["openid"] = pseudonym(str(row["openid"]))
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
