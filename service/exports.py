"""Survey results as a spreadsheet for a statistics tool: XLSX with codes and a codebook.

One row per session (the current attempt), in start order, read from the database in batches and
written row by row with XlsxWriter's ``constant_memory`` mode (each row goes to a temporary file
as soon as the next one starts), so an export of 100,000 sessions holds one batch in memory,
not the survey (``bench/export.py`` measures the peak). XlsxWriter rather than openpyxl: it is
pure Python with no dependencies, and its constant-memory mode is made for exactly this; openpyxl
(its write-only mode streams too) is what the tests read the files back with.

Columns: the metadata (``openid``, or its pseudonym when the caller passes ``pseudonym``;
``channel``, ``version``, ``state``, ``started``, ``finished`` in ``timezone``, ``score``,
``band``), then per question:

- single choice, rating: ``Q1`` the option number (the rating itself) and ``Q1_text`` its text;
- multiple choice: one ``Q3_2`` column per option, 1 when chosen and 0 when not (empty when the
  question was not answered);
- number: ``Q4`` the value; text: ``Q5`` the text.

Text cells that a spreadsheet would read as a formula (``= + - @``) get a leading quote, as the
CSV does. The second sheet, ``codebook``, lists every column with its question and the meaning of
every code.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import zoneinfo
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import xlsxwriter

from service.reports import csv_cell
from service.store import surveys as store
from service.store.surveys import Filters
from service.surveys import Survey
from service.surveys.model import KIND_NAMES
from service.surveys.model import Question as _Question

__all__ = ["Column", "columns", "row", "write_xlsx"]

Db = Any


@dataclasses.dataclass(frozen=True)
class Column:
    name: str  # the header
    label: str  # what it holds, for the codebook
    question: str = ""  # the question id ("" for metadata)
    kind: str = ""
    codes: tuple[tuple[Any, str], ...] = ()  # (code, meaning) for the codebook


META = (
    Column("openid", "respondent (openid, or its pseudonym)"),
    Column("channel", "channel (QR code) the respondent came from"),
    Column("version", "survey version the session started on"),
    Column("state", "finished / in_progress / paused / expired / screened_out / quota_full"),
    Column("started", "started (local time)"),
    Column("finished", "finished (local time)"),
    Column("score", "total score"),
    Column("band", "result band"),
)


def columns(survey: Survey) -> list[Column]:
    """Every column of the response sheet, in order."""
    out = list(META)
    for position, q in enumerate(survey.questions, 1):
        name = f"Q{position}"
        kind = f"{q.kind} ({KIND_NAMES[q.kind]})"
        if q.kind == "single":
            codes = tuple((i, o.label) for i, o in enumerate(q.options, 1))
            out.append(Column(name, q.text, q.id, kind, codes))
            out.append(Column(f"{name}_text", f"{q.text} (option text)", q.id, kind))
        elif q.kind == "rating":
            codes = tuple((v, _rating_label(q, v)) for v in range(q.scale_min, q.scale_max + 1))
            out.append(Column(name, q.text, q.id, kind, codes))
            out.append(Column(f"{name}_text", f"{q.text} (as text)", q.id, kind))
        elif q.kind == "multiple":
            for i, o in enumerate(q.options, 1):
                out.append(
                    Column(
                        f"{name}_{i}",
                        f"{q.text}: {o.label}",
                        q.id,
                        kind,
                        ((1, "chosen"), (0, "not")),
                    )
                )
        else:
            unit = f" ({q.unit})" if q.unit else ""
            out.append(Column(name, q.text + unit, q.id, kind))
    return out


def _rating_label(question: _Question, value: int) -> str:
    if value == question.scale_min and question.min_label:
        return question.min_label
    if value == question.scale_max and question.max_label:
        return question.max_label
    return str(value)


def _local(value: Any, tz: dt.tzinfo) -> dt.datetime | None:
    if not isinstance(value, dt.datetime):
        return None
    aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return aware.astimezone(tz).replace(tzinfo=None)


def row(
    survey: Survey,
    doc: Mapping[str, Any],
    *,
    tz: dt.tzinfo,
    pseudonym: Callable[[str], str] | None = None,
) -> list[Any]:
    """One session's cells in ``columns(survey)`` order: numbers, datetimes, text, None."""
    state = str(doc.get("state", ""))
    if state == "in_progress" and doc.get("paused"):
        state = "paused"
    openid = str(doc.get("openid", ""))
    result = doc.get("result") or {}
    cells: list[Any] = [
        pseudonym(openid) if pseudonym is not None else openid,
        doc.get("channel"),
        int(doc.get("sv") or 1),
        state,
        _local(doc.get("started_at"), tz),
        _local(doc.get("finished_at"), tz),
        doc.get("score"),
        result.get("band"),
    ]
    answers = {a.get("q"): a for a in doc.get("answers") or [] if isinstance(a, Mapping)}
    for q in survey.questions:
        answer = answers.get(q.id)
        if q.kind in ("single", "rating"):
            chosen = (answer or {}).get("choices") or []
            code = chosen[0] if chosen else (answer or {}).get("value")
            cells.append(code if answer is not None else None)
            cells.append((answer or {}).get("label") if answer is not None else None)
        elif q.kind == "multiple":
            chosen = set((answer or {}).get("choices") or [])
            for i in range(1, len(q.options) + 1):
                cells.append(None if answer is None else int(i in chosen))
        else:
            cells.append(None if answer is None else answer.get("value"))
    return cells


async def write_xlsx(
    db: Db,
    survey: Survey,
    path: Path,
    *,
    include_test: bool = False,
    versions: list[int] | None = None,
    filters: Filters | None = None,
    timezone: str = "Asia/Shanghai",
    pseudonym: Callable[[str], str] | None = None,
) -> int:
    """Write the export to ``path`` (a new file); returns the number of sessions written."""
    tz = zoneinfo.ZoneInfo(timezone)
    cols = columns(survey)
    book = xlsxwriter.Workbook(
        str(path), {"constant_memory": True, "strings_to_formulas": False, "strings_to_urls": False}
    )
    try:
        bold = book.add_format({"bold": True})
        when = book.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"})
        sheet = book.add_worksheet("responses")
        codebook = book.add_worksheet("codebook")
        sheet.freeze_panes(1, 1)
        for c, column in enumerate(cols):
            name = "pseudonym" if column.name == "openid" and pseudonym is not None else column.name
            sheet.write_string(0, c, name, bold)
        count = 0
        async for doc in store.iter_sessions(
            db, survey, include_test_users=include_test, versions=versions, filters=filters
        ):
            count += 1
            for c, value in enumerate(row(survey, doc, tz=tz, pseudonym=pseudonym)):
                if value is None:
                    continue
                if isinstance(value, dt.datetime):
                    sheet.write_datetime(count, c, value, when)
                elif isinstance(value, bool | int | float):
                    sheet.write_number(count, c, value)
                else:
                    sheet.write_string(count, c, csv_cell(value))
        _write_codebook(codebook, survey, cols, bold)
    finally:
        book.close()
    return count


def _write_codebook(sheet: Any, survey: Survey, cols: list[Column], bold: Any) -> None:
    head = ["column", "question id", "question", "kind", "code", "meaning"]
    for c, text in enumerate(head):
        sheet.write_string(0, c, text, bold)
    r = 1
    for column in cols:
        base = [column.name, column.question, column.label, column.kind]
        for c, text in enumerate(base):
            sheet.write_string(r, c, csv_cell(text))
        if not column.codes:
            r += 1
            continue
        for code, meaning in column.codes:
            sheet.write_number(r, 4, code)
            sheet.write_string(r, 5, csv_cell(meaning))
            r += 1
    r += 1
    sheet.write_string(r, 0, f"{survey.title} ({survey.id}), version {survey.version}")
