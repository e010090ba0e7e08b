"""Survey pages' data: the reports of ``service.reports`` as JSON, the cross-tab and the free-text
answers, and the CSV exports (UTF-8 with a BOM, so Excel shows Chinese correctly). Every one of
them takes the page's filters (``reports.parse_filters``). Handlers parse, call, write."""

from __future__ import annotations

import csv
import io
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

import tornado.web

from service import exports, privacy, reports
from service.surveys import Survey

from .base import ApiHandler, DashboardHandler

__all__ = ["definitions", "find_survey", "history", "routes", "wipe_test"]


def definitions(handler: tornado.web.RequestHandler) -> list[Survey]:
    """The loaded survey definitions, from the application settings."""
    return reports.definitions(handler.settings.get("surveys"))


def history(handler: tornado.web.RequestHandler, survey_id: str) -> list[Survey]:
    """Every published version of a survey (none without a versioned engine)."""
    engine = handler.settings.get("surveys")
    snapshot = getattr(engine, "snapshot", None)
    return snapshot.history(survey_id) if snapshot is not None else []


def find_survey(handler: tornado.web.RequestHandler, survey_id: str) -> Survey:
    """The survey a URL names, or a 404."""
    survey = reports.find(definitions(handler), survey_id)
    if survey is None:
        raise tornado.web.HTTPError(404, "no survey %s", survey_id)
    return survey


async def wipe_test(handler: DashboardHandler) -> dict[str, int]:
    """Kept for ``dashboard.simulator``'s wipe; the rule is ``reports.wipe_test``."""
    return await reports.wipe_test(handler.db)


def filters_of(handler: tornado.web.RequestHandler, survey: Survey) -> reports.Filters:
    """The page's filters from the query (400 with every mistake)."""
    try:
        return reports.parse_filters(
            survey,
            lambda name: handler.get_query_argument(name, ""),
            timezone=handler.settings["config"].timezone,
        )
    except reports.FilterError as e:
        raise tornado.web.HTTPError(400, "%s", str(e)) from e


def version_of(handler: tornado.web.RequestHandler) -> int | None:
    raw = handler.get_query_argument("version", "")
    version = int(raw) if raw.isdigit() and len(raw) < 9 else None
    if raw and version is None:
        raise tornado.web.HTTPError(400, "version must be a number")
    return version


def attachment(handler: tornado.web.RequestHandler, filename: str, title: str) -> None:
    quoted = urllib.parse.quote(title)
    handler.set_header(
        "Content-Disposition",
        f"attachment; filename=\"{filename}\"; filename*=UTF-8''{quoted}",
    )


class SurveysApi(ApiHandler):
    """Every loaded survey with its starts and completions."""

    @tornado.web.authenticated
    async def get(self) -> None:
        include_test = self.bool_argument("test", False)
        items = await reports.survey_list(
            self.db, definitions(self), include_test=include_test, numbers=self.survey_numbers
        )
        self.write_json({"items": items})


class SurveyApi(ApiHandler):
    """All the charts of one survey: per-question counts, scores, bands, funnel, completions."""

    @tornado.web.authenticated
    async def get(self, survey_id: str) -> None:
        survey = find_survey(self, survey_id)
        version = version_of(self)
        filters = filters_of(self, survey)
        try:
            report = await reports.survey_report(
                self.db,
                survey,
                include_test=self.bool_argument("test", False),
                timezone=self.config.timezone,
                version=version,
                history=history(self, survey.id),
                filters=filters,
                numbers=self.survey_numbers,
            )
        except LookupError as e:
            raise tornado.web.HTTPError(404, "no version %s of %s", version, survey_id) from e
        self.write_json(report)


async def _crosstab(handler: DashboardHandler, survey_id: str) -> tuple[Survey, dict[str, Any]]:
    survey = find_survey(handler, survey_id)
    version = version_of(handler)
    filters = filters_of(handler, survey)
    rows = handler.get_query_argument("rows", "")
    columns = handler.get_query_argument("columns", "")
    definition = survey
    if version is not None:
        found = next((v for v in history(handler, survey.id) if v.version == version), None)
        if found is None and version != survey.version:
            raise tornado.web.HTTPError(404, "no version %s of %s", version, survey_id)
        definition = found or survey
    try:
        table = await reports.crosstab(
            handler.db,
            definition,
            rows,
            columns,
            include_test=handler.get_query_argument("test", "0") in {"1", "true"},
            versions=None if version is None else [version],
            filters=filters,
            cells=handler.survey_index.crosstab_counts,
        )
    except LookupError as e:
        raise tornado.web.HTTPError(
            400, "rows and columns: two choice, rating or number questions"
        ) from e
    return definition, table


class CrosstabApi(ApiHandler):
    """Two questions crossed: ``?rows=QID&columns=QID`` and the page's filters."""

    @tornado.web.authenticated
    async def get(self, survey_id: str) -> None:
        _, table = await _crosstab(self, survey_id)
        self.write_json(table)


class CrosstabExport(DashboardHandler):
    """The cross-tab as CSV: counts with totals, row and column percentages."""

    @tornado.web.authenticated
    async def get(self, survey_id: str) -> None:
        survey, table = await _crosstab(self, survey_id)
        name = f"{survey.id}-crosstab-{table['rows']['id']}-{table['columns']['id']}.csv"
        self.set_header("Content-Type", "text/csv; charset=UTF-8")
        attachment(self, name, f"{survey.title}-crosstab.csv")
        buffer = io.StringIO()
        buffer.write("\ufeff")
        csv.writer(buffer, lineterminator="\r\n").writerows(reports.crosstab_table(table))
        self.finish(buffer.getvalue().encode("utf-8"))


class TextAnswersApi(ApiHandler):
    """One text question's answers, a page at a time: ``?q=words&page=N`` and the filters."""

    @tornado.web.authenticated
    async def get(self, survey_id: str, question_id: str) -> None:
        survey = find_survey(self, survey_id)
        version = version_of(self)
        filters = filters_of(self, survey)
        search = self.get_query_argument("q", "").strip()
        if len(search) > 200:
            raise tornado.web.HTTPError(400, "q: at most 200 characters")
        try:
            data = await reports.text_answers(
                self.db,
                survey,
                question_id,
                search=search,
                page=self.int_argument("page", 1, 1, 100_000),
                per_page=self.int_argument("per_page", 20, 1, 100),
                include_test=self.bool_argument("test", False),
                versions=None if version is None else [version],
                filters=filters,
            )
        except LookupError as e:
            raise tornado.web.HTTPError(404, "no text question %s", question_id) from e
        self.write_json(data)


class XlsxExportHandler(DashboardHandler):
    """``export.xlsx``: codes, option texts and a codebook (``service.exports``), built in a
    temporary file with constant memory, then sent in chunks."""

    CHUNK = 64 * 1024

    @tornado.web.authenticated
    async def get(self, survey_id: str) -> None:
        survey = find_survey(self, survey_id)
        filters = filters_of(self, survey)
        version = version_of(self)
        pseudonymous = self.get_query_argument("pseudonymous", "0") in {"1", "true"}
        pseudonym = await privacy.pseudonymizer(self.db) if pseudonymous else None
        with tempfile.TemporaryDirectory(prefix="export-") as folder:
            path = Path(folder) / "export.xlsx"
            await exports.write_xlsx(
                self.db,
                survey,
                path,
                include_test=self.get_query_argument("test", "0") in {"1", "true"},
                versions=None if version is None else [version],
                filters=filters,
                timezone=self.config.timezone,
                pseudonym=pseudonym,
            )
            self.set_header(
                "Content-Type",
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            )
            attachment(self, f"{survey.id}-responses.xlsx", f"{survey.title}-responses.xlsx")
            self.set_header("Content-Length", str(path.stat().st_size))
            with path.open("rb") as data:
                while chunk := data.read(self.CHUNK):
                    self.write(chunk)
                    await self.flush()
        self.finish()


routes = [
    (r"/api/surveys", SurveysApi),
    (r"/api/surveys/([^/]+)", SurveyApi),
    (r"/api/surveys/([^/]+)/crosstab", CrosstabApi),
    (r"/api/surveys/([^/]+)/text/([^/]+)", TextAnswersApi),
    (r"/dashboard/surveys/([^/]+)/export\.xlsx", XlsxExportHandler),
    (r"/dashboard/surveys/([^/]+)/crosstab\.csv", CrosstabExport),
]
