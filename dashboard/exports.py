"""CSV exports people can open in a spreadsheet: the survey responses, the users, the messages.

Every export is UTF-8 with a BOM (Excel then reads Chinese correctly), streamed in batches, and
takes the filters of the page it is exported from. By default its header row and states are in
the page's language and its times are local (``TIMEZONE``) ``YYYY-MM-DD HH:MM:SS``, which Excel,
WPS and Numbers read as dates. ``?header=keys`` is for tools: stable English column keys, raw
states, ISO 8601 times with the ``TIMEZONE`` offset.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import urllib.parse
import zoneinfo
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import tornado.web

from service import privacy, reports
from service.store import dashboard as store

from .api import search_text
from .base import DashboardHandler
from .surveys import definitions, find_survey

__all__ = ["EXPORT_STRINGS", "Columns", "routes"]

# What the exports call their columns and states (English; the catalogue translates them).
STATE_LABELS = {
    "not_started": "Not started",
    "in_progress": "In progress",
    "paused": "Paused",
    "finished": "Finished",
    "screened_out": "Screened out",
    "quota_full": "Quota full",
    "expired": "Expired",
}
SURVEY_COLUMNS = {
    "openid": "openid",
    "state": "State",
    "attempt": "Attempt",
    "started_at": "Started at",
    "finished_at": "Finished at",
    "score": "Score",
    "result": "Result",
    "ended": "Ended because",
}
USER_COLUMNS = {
    "openid": "openid",
    "nickname": "Nickname",
    "first_seen": "First seen",
    "last_seen": "Last seen",
    "messages": "Messages",
    "subscribed": "Subscribed",
    "test_user": "Test user",
}
MESSAGE_COLUMNS = {
    "received_at": "Time",
    "type": "Type",
    "openid": "openid",
    "message": "Message",
    "reply": "Reply",
    "latency_ms": "Latency (ms)",
    "test_user": "Test user",
}
TIME_COLUMNS = {"started_at", "finished_at", "first_seen", "last_seen", "received_at"}
EXPORT_STRINGS = sorted(
    {
        *STATE_LABELS.values(),
        *SURVEY_COLUMNS.values(),
        *USER_COLUMNS.values(),
        *MESSAGE_COLUMNS.values(),
        "yes",
        "no",
        "Pseudonym",
    }
    - {"openid"}
)


async def pseudonyms(handler: DashboardHandler) -> Callable[[str], str] | None:
    """``?pseudonymous=1``: the export's openids become pseudonyms (``service.privacy``)."""
    if not _flag(handler, "pseudonymous", False):
        return None
    return await privacy.pseudonymizer(handler.db)


class Columns:
    """How one export writes its header and cells: for people (translated, local spreadsheet
    dates) or for tools (``keys``); openids as they are or, with ``pseudonym``, as pseudonyms."""

    def __init__(
        self, handler: DashboardHandler, pseudonym: Callable[[str], str] | None = None
    ) -> None:
        self.keys = handler.get_query_argument("header", "") == "keys"
        self.translate = handler.locale.translate
        self.zone = zoneinfo.ZoneInfo(handler.config.timezone)
        self.labels = handler.translations.labels(handler.locale)
        self.pseudonym = pseudonym

    def header(self, columns: dict[str, str], extra: Iterable[str] = ()) -> list[str]:
        names = []
        for key, label in columns.items():
            if key == "openid" and self.pseudonym is not None:
                names.append("pseudonym" if self.keys else self.translate("Pseudonym"))
            elif self.keys:
                names.append(key)
            elif key in TIME_COLUMNS:
                names.append(f"{self.translate(label)} ({self.zone.key})")
            else:
                names.append(self.translate(label))
        return [*names, *extra]

    def person(self, openid: Any) -> str:
        text = str(openid or "")
        return self.pseudonym(text) if self.pseudonym is not None and text else text

    def time(self, value: Any) -> str:
        if isinstance(value, str) and value:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        if not isinstance(value, dt.datetime):
            return ""
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        local = value.astimezone(self.zone)
        if self.keys:
            return local.isoformat(timespec="seconds")
        return local.strftime("%Y-%m-%d %H:%M:%S")

    def state(self, value: str) -> str:
        if self.keys or value not in STATE_LABELS:
            return value
        return self.translate(STATE_LABELS[value])

    def yes_no(self, value: Any) -> str:
        if self.keys:
            return "true" if value else "false"
        return self.translate("yes") if value else self.translate("no")

    def message_type(self, message: dict[str, Any]) -> str:
        if self.keys:
            return f"event:{message['event']}" if message["type"] == "event" else message["type"]
        if message["type"] == "event":
            return self.labels["events"].get(message["event"]) or self.translate(
                "Event: %(name)s"
            ) % {"name": message["event"]}
        return self.labels["types"].get(message["type"], message["type"])


async def write_csv(
    handler: DashboardHandler, filename: str, title: str, rows: AsyncIterator[list[Any]]
) -> None:
    """Stream ``rows`` (the header first) as a CSV attachment, 500 rows per write."""
    quoted = urllib.parse.quote(title)
    handler.set_header("Content-Type", "text/csv; charset=UTF-8")
    handler.set_header(
        "Content-Disposition", f"attachment; filename=\"{filename}\"; filename*=UTF-8''{quoted}"
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    buffer.write("\ufeff")  # the BOM: Excel then reads the file as UTF-8
    count = 0
    async for row in rows:
        writer.writerow([reports.csv_cell(cell) for cell in row])
        count += 1
        if count % 500 == 0:
            handler.write(buffer.getvalue().encode("utf-8"))
            buffer.seek(0)
            buffer.truncate()
            await handler.flush()
    handler.write(buffer.getvalue().encode("utf-8"))
    handler.finish()


def _flag(handler: DashboardHandler, name: str, default: bool) -> bool:
    raw = handler.get_query_argument(name, "").lower()
    return default if not raw else raw in {"1", "true", "yes", "on"}


class SurveyExport(DashboardHandler):
    """``/dashboard/surveys/<id>/export.csv``: one row per user, one column per question."""

    @tornado.web.authenticated
    async def get(self, survey_id: str) -> None:
        from .surveys import filters_of

        survey = find_survey(self, survey_id)
        include_test = _flag(self, "test", False)
        finished_only = _flag(self, "finished", False)
        filters = filters_of(self, survey)  # the survey page's filters (400 with every mistake)
        columns = Columns(self, await pseudonyms(self))
        questions = [f"Q{i} {q.text}" for i, q in enumerate(survey.questions, 1)]
        keys = [*SURVEY_COLUMNS, *(q.id for q in survey.questions)]

        async def rows() -> AsyncIterator[list[Any]]:
            yield columns.header(SURVEY_COLUMNS, questions)
            async for row in store_responses(self, survey, include_test, finished_only, filters):
                out = []
                for key in keys:
                    value = row.get(key, "")
                    if key in TIME_COLUMNS:
                        value = columns.time(value)
                    elif key == "openid":
                        value = columns.person(value)
                    elif key == "state":
                        value = columns.state(value)
                    out.append(value)
                yield out

        await write_csv(self, f"{survey.id}-responses.csv", f"{survey.title}-responses.csv", rows())


def store_responses(
    handler: DashboardHandler,
    survey: Any,
    include_test: bool,
    finished_only: bool,
    filters: Any = None,
) -> AsyncIterator[dict[str, Any]]:
    from service.store import surveys as surveys_store

    return surveys_store.iter_responses(
        handler.db,
        survey,
        include_test_users=include_test,
        finished_only=finished_only,
        filters=filters,
    )


class UsersExport(DashboardHandler):
    """``/dashboard/users/export.csv`` with the users page's filters (``q``, ``subscribed``,
    ``test``): one row per user, one column per survey with their progress."""

    @tornado.web.authenticated
    async def get(self) -> None:
        raw_subscribed = self.get_query_argument("subscribed", "")
        subscribed = None if not raw_subscribed else raw_subscribed in {"1", "true", "yes"}
        filters: dict[str, Any] = {
            "query": search_text(self, "q"),
            "subscribed": subscribed,
            "include_test": _flag(self, "test", True),
        }
        surveys = definitions(self)
        columns = Columns(self, await pseudonyms(self))

        async def rows() -> AsyncIterator[list[Any]]:
            yield columns.header(USER_COLUMNS, [s.id if columns.keys else s.title for s in surveys])
            async for batch in store.iter_users(self.db, **filters):
                progress = await reports.progress(self.db, surveys, [u["openid"] for u in batch])
                for user in batch:
                    cells: list[Any] = [
                        columns.person(user["openid"]),
                        user["nickname"],
                        columns.time(user["first_seen"]),
                        columns.time(user["last_seen"]),
                        user["messages"],
                        columns.yes_no(user["subscribed"]),
                        columns.yes_no(user["test_user"]),
                    ]
                    for entry in progress.get(user["openid"], []):
                        text = columns.state(entry["state"])
                        if entry["state"] == "finished" and entry.get("result_title"):
                            text += f": {entry['result_title']}"
                        cells.append(text)
                    yield cells

        await write_csv(self, "users.csv", "users.csv", rows())


class MessagesExport(DashboardHandler):
    """``/dashboard/messages/export.csv`` with the message log's filters (``q``, ``user``,
    ``type``, ``since``, ``until``, ``test``), newest first."""

    @tornado.web.authenticated
    async def get(self) -> None:
        msg_type = self.get_query_argument("type", "")
        if msg_type and msg_type not in store.MESSAGE_TYPES:
            raise tornado.web.HTTPError(400, "unknown type %s", msg_type)
        filters: dict[str, Any] = {
            "text": search_text(self, "q"),
            "openid": search_text(self, "user"),
            "msg_type": msg_type,
            "since": self.date_argument("since"),
            "until": self.date_argument("until", end_of_day=True),
            "include_test": _flag(self, "test", True),
        }
        columns = Columns(self, await pseudonyms(self))

        async def rows() -> AsyncIterator[list[Any]]:
            yield columns.header(MESSAGE_COLUMNS)
            async for m in store.iter_messages(self.db, **filters):
                yield [
                    columns.time(m["received_at"]),
                    columns.message_type(m),
                    columns.person(m["openid"]),
                    m["text"] if m["type"] == "text" or columns.keys else m["detail"],
                    "" if m["reply_kind"] == "success" else m["reply"],
                    "" if m["latency_ms"] is None else round(float(m["latency_ms"]), 1),
                    columns.yes_no(m["test_user"]),
                ]

        await write_csv(self, "messages.csv", "messages.csv", rows())


routes = [
    (r"/dashboard/surveys/([^/]+)/export\.csv", SurveyExport),
    (r"/dashboard/users/export\.csv", UsersExport),
    (r"/dashboard/messages/export\.csv", MessagesExport),
]
