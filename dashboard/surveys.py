"""Survey pages' data: the reports of ``service.reports`` as JSON (the CSV export of all
responses is in ``dashboard.exports``). Handlers parse, call, write."""

from __future__ import annotations

import tornado.web

from service import reports
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


class SurveysApi(ApiHandler):
    """Every loaded survey with its starts and completions."""

    @tornado.web.authenticated
    async def get(self) -> None:
        include_test = self.bool_argument("test", False)
        items = await reports.survey_list(self.db, definitions(self), include_test=include_test)
        self.write_json({"items": items})


class SurveyApi(ApiHandler):
    """All the charts of one survey: per-question counts, scores, bands, funnel, completions."""

    @tornado.web.authenticated
    async def get(self, survey_id: str) -> None:
        survey = find_survey(self, survey_id)
        raw = self.get_query_argument("version", "")
        version = int(raw) if raw.isdigit() and len(raw) < 9 else None
        if raw and version is None:
            raise tornado.web.HTTPError(400, "version must be a number")
        try:
            report = await reports.survey_report(
                self.db,
                survey,
                include_test=self.bool_argument("test", False),
                timezone=self.config.timezone,
                version=version,
                history=history(self, survey.id),
            )
        except LookupError as e:
            raise tornado.web.HTTPError(404, "no version %s of %s", raw, survey_id) from e
        self.write_json(report)


routes = [
    (r"/api/surveys", SurveysApi),
    (r"/api/surveys/([^/]+)", SurveyApi),
]
