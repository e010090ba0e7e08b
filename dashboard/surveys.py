"""Survey pages' data: the aggregates of ``service.store.surveys`` as JSON, per-user progress, and
the CSV export of all responses (UTF-8 with a BOM, so Excel shows Chinese correctly)."""

from __future__ import annotations

import csv
import io
import urllib.parse
from typing import Any

import tornado.web

from service.store import dashboard as store
from service.store import surveys as surveys_store
from service.surveys import Survey

from .base import ApiHandler, DashboardHandler

__all__ = ["find_survey", "progress_for", "routes", "titles", "totals", "wipe_test"]


def _surveys(handler: tornado.web.RequestHandler) -> list[Survey]:
    engine = handler.settings.get("surveys")
    if engine is None:
        return []
    return list(engine.all_surveys())


def find_survey(handler: tornado.web.RequestHandler, survey_id: str) -> Survey:
    for survey in _surveys(handler):
        if survey.id == survey_id:
            return survey
    raise tornado.web.HTTPError(404, "no survey %s", survey_id)


def titles(handler: tornado.web.RequestHandler) -> list[dict[str, str]]:
    return [{"id": s.id, "title": s.title} for s in _surveys(handler)]


async def totals(handler: DashboardHandler, *, include_test: bool) -> dict[str, int]:
    """Starts and completions over every survey (the overview cards)."""
    started = finished = 0
    for survey in _surveys(handler):
        funnel = await surveys_store.funnel(handler.db, survey, include_test_users=include_test)
        started += funnel["started"]
        finished += funnel["finished"]
    return {"started": started, "finished": finished}


def _progress_view(survey: Survey, doc: dict[str, Any] | None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "survey_id": survey.id,
        "title": survey.title,
        "total": survey.total,
        "state": "not_started",
    }
    if doc is None:
        return view
    view["answered"] = len(doc.get("answers") or [])
    view["attempt"] = doc.get("attempt", 1)
    if doc.get("state") == "finished":
        result = doc.get("result") or {}
        view.update(state="finished", score=doc.get("score"), result_title=result.get("title"))
        return view
    current = doc.get("current")
    position = survey.position(current) if current and survey.question(current) else None
    view.update(state="in_progress", position=position, paused=bool(doc.get("paused")))
    return view


async def progress_for(handler: DashboardHandler, openids: list[str]) -> dict[str, list[Any]]:
    """Each user's progress in every survey: not started / question k of n / finished."""
    surveys = _surveys(handler)
    if not surveys or not openids:
        return {}
    by_key = {
        (doc["openid"], doc["survey"]): doc
        for doc in await store.survey_sessions_of(handler.db, openids)
    }
    return {
        openid: [_progress_view(s, by_key.get((openid, s.id))) for s in surveys]
        for openid in openids
    }


async def wipe_test(handler: DashboardHandler) -> dict[str, int]:
    return {"survey_sessions": await surveys_store.delete_test_data(handler.db)}


class SurveysApi(ApiHandler):
    """Every loaded survey with its starts and completions."""

    @tornado.web.authenticated
    async def get(self) -> None:
        include_test = self.bool_argument("test", False)
        items = []
        for survey in _surveys(self):
            funnel = await surveys_store.funnel(self.db, survey, include_test_users=include_test)
            items.append(
                {
                    **survey.describe(),
                    "started": funnel["started"],
                    "finished": funnel["finished"],
                    "completion_rate": funnel["completion_rate"],
                }
            )
        self.write_json({"items": items})


class SurveyApi(ApiHandler):
    """All the charts of one survey: per-question counts, scores, bands, funnel, completions."""

    @tornado.web.authenticated
    async def get(self, survey_id: str) -> None:
        survey = find_survey(self, survey_id)
        include_test = self.bool_argument("test", False)
        db = self.db
        test = include_test
        scores = await surveys_store.score_distribution(db, survey, include_test_users=include_test)
        scored = sum(row["count"] for row in scores)
        points = sum(row["score"] * row["count"] for row in scores)
        average = round(points / scored, 2) if scored else None
        low, high = survey.score_range() if survey.scored else (0, 0)
        self.write_json(
            {
                "survey": survey.describe(),
                "questions": await surveys_store.option_counts(
                    db, survey, include_test_users=include_test
                ),
                "scores": scores,
                "score_range": [low, high],
                "average_score": average,
                "bands": await surveys_store.band_counts(db, survey, include_test_users=test),
                "funnel": await surveys_store.funnel(db, survey, include_test_users=include_test),
                "completions": await surveys_store.completions_over_time(
                    db, survey, include_test_users=include_test, timezone=self.config.timezone
                ),
            }
        )


class ExportHandler(DashboardHandler):
    """``export.csv``: one row per user, one column per question; streamed in batches."""

    @tornado.web.authenticated
    async def get(self, survey_id: str) -> None:
        survey = find_survey(self, survey_id)
        include_test = self.get_query_argument("test", "0") in {"1", "true"}
        finished_only = self.get_query_argument("finished", "0") in {"1", "true"}
        columns = surveys_store.response_columns(survey)
        filename = f"{survey.id}-responses.csv"
        quoted = urllib.parse.quote(f"{survey.title}-responses.csv")
        self.set_header("Content-Type", "text/csv; charset=UTF-8")
        self.set_header(
            "Content-Disposition",
            f"attachment; filename=\"{filename}\"; filename*=UTF-8''{quoted}",
        )
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        buffer.write("\ufeff")  # the BOM: Excel then reads the file as UTF-8
        writer.writerow([header for _, header in columns])
        rows = 0
        async for row in surveys_store.iter_responses(
            self.db, survey, include_test_users=include_test, finished_only=finished_only
        ):
            writer.writerow([_cell(row.get(key, "")) for key, _ in columns])
            rows += 1
            if rows % 500 == 0:
                self.write(buffer.getvalue().encode("utf-8"))
                buffer.seek(0)
                buffer.truncate()
                await self.flush()
        self.write(buffer.getvalue().encode("utf-8"))
        self.finish()


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    # A cell starting with = + - @ is a formula to Excel: keep answers from running as one.
    if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not _is_number(text):
        return "'" + text
    return text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


routes = [
    (r"/api/surveys", SurveysApi),
    (r"/api/surveys/([^/]+)", SurveyApi),
    (r"/dashboard/surveys/([^/]+)/export\.csv", ExportHandler),
]
