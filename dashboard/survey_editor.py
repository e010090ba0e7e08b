"""Writing surveys in the dashboard: drafts, validation, try in the simulator, publish, versions,
close/reopen/schedule/archive, YAML export. Handlers parse, call ``SurveyCatalog``, write.

Every write is an authenticated POST with the XSRF token; a definition over 256 KiB is a 413.
A publish or a try refuses an invalid draft with every mistake (422); a draft is saved whatever
it holds, so nothing typed is lost.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
import secrets
import urllib.parse
from typing import Any

import tornado.web

from service.store import survey_defs
from service.store import surveys as sessions_store
from service.surveys import SurveyCatalog, SurveyEngine
from service.surveys.catalog import MAX_DEFINITION_BYTES
from service.surveys.loader import SLUG, Issue

from .base import ApiHandler, DashboardHandler, content_security_policy

__all__ = ["NEW_SURVEY_TEXT", "routes"]

NEW_SURVEY_TEXT = """\
# 新问卷 / A new survey. 格式见 / format: service/surveys/README.md
id: {id}
title: 新问卷
keywords: [{id}]
intro: 你好！回答几个问题就好。
questions:
  - id: q1
    text: 第一个问题？
    options: [是, 否]
  - id: q2
    kind: text
    text: 还有什么想说的？
"""


def catalog_of(handler: tornado.web.RequestHandler) -> SurveyCatalog:
    engine = handler.settings.get("surveys")
    catalog = engine.catalog if isinstance(engine, SurveyEngine) else None
    if catalog is None:
        raise tornado.web.HTTPError(404, "surveys are not editable in this process")
    return catalog


def survey_id_of(raw: str) -> str:
    survey_id = urllib.parse.unquote(raw)
    if not SLUG.match(survey_id):
        raise tornado.web.HTTPError(400, "survey id must be lowercase letters, digits, - or _")
    return survey_id


def issue_json(issue: Issue) -> dict[str, Any]:
    return {
        "line": issue.line,
        "column": issue.column,
        "path": issue.path,
        "message": issue.message,
        "text": str(issue),
    }


class EditorApi(ApiHandler):
    """Shared parsing of the editor's requests."""

    def definition_text(self) -> str:
        if len(self.request.body) > MAX_DEFINITION_BYTES + 4096:
            raise tornado.web.HTTPError(413, "a survey definition may be at most 256 KiB")
        text = self.json_body().get("text")
        if not isinstance(text, str):
            raise tornado.web.HTTPError(400, "text must be the survey's YAML")
        if len(text.encode("utf-8")) > MAX_DEFINITION_BYTES:
            raise tornado.web.HTTPError(413, "a survey definition may be at most 256 KiB")
        return text

    @property
    def owner_name(self) -> str:
        return str((self.owner or {}).get("_id", "owner"))

    async def catalog(self) -> SurveyCatalog:
        catalog = catalog_of(self)
        await catalog.ready()
        return catalog


class EditorListApi(EditorApi):
    """Every survey in the database: published, drafts, archived."""

    @tornado.web.authenticated
    async def get(self) -> None:
        catalog = await self.catalog()
        snap = catalog.snapshot
        counts = await sessions_store.in_progress_by_version(self.db)
        items = []
        for sid, info in snap.info.items():
            survey = snap.current.get(sid)
            items.append(
                {
                    "id": sid,
                    "title": survey.title if survey else "",
                    "version": survey.version if survey else 0,
                    "availability": survey.availability() if survey else "draft",
                    "archived": bool(info.get("archived")),
                    "draft_saved_at": info.get("draft_saved_at"),
                    "in_progress": sum(n for (s, _v), n in counts.items() if s == sid),
                }
            )
        self.write_json({"items": items})


class CheckApi(EditorApi):
    """``POST {text}`` → every mistake, as ``surveys check`` finds them (nothing is saved)."""

    @tornado.web.authenticated
    async def post(self, raw_id: str) -> None:
        survey_id = survey_id_of(raw_id)
        catalog = await self.catalog()
        survey, issues = catalog.validate_for(survey_id, self.definition_text())
        self.write_json({"ok": survey is not None, "issues": [issue_json(i) for i in issues]})


class SurveyDefinitionApi(EditorApi):
    """``GET``: the draft (or a starting text), the versions, the controls, sessions in
    progress per version."""

    @tornado.web.authenticated
    async def get(self, raw_id: str) -> None:
        survey_id = survey_id_of(raw_id)
        catalog = await self.catalog()
        doc = await survey_defs.get_survey(self.db, survey_id)
        versions = await survey_defs.survey_versions(self.db, survey_id)
        draft = (doc or {}).get("draft") or {}
        latest_text = versions[-1]["text"] if versions else None
        text = draft.get("text") or latest_text or NEW_SURVEY_TEXT.format(id=survey_id)
        survey = catalog.snapshot.current.get(survey_id)
        counts = await sessions_store.in_progress_by_version(self.db, survey_id)
        latest = versions[-1]["n"] if versions else 0
        self.write_json(
            {
                "id": survey_id,
                "exists": doc is not None,
                "text": text,
                "draft_saved_at": draft.get("saved_at"),
                "draft_saved_by": draft.get("saved_by"),
                "draft_differs": bool(draft.get("text")) and draft.get("text") != latest_text,
                "versions": [
                    {
                        "version": v["n"],
                        "published_at": v.get("published_at"),
                        "published_by": v.get("published_by"),
                        "source": v.get("source"),
                    }
                    for v in versions
                ],
                "survey": survey.describe() if survey else None,
                "open": (doc or {}).get("open"),
                "opens_at": (doc or {}).get("opens_at"),
                "closes_at": (doc or {}).get("closes_at"),
                "archived": bool((doc or {}).get("archived")),
                "in_progress": {str(v): n for (_s, v), n in counts.items()},
                "in_progress_on_latest": counts.get((survey_id, latest), 0),
                "trying": bool((doc or {}).get("trial")),
            }
        )


class DraftApi(EditorApi):
    """``POST {text}``: save the draft (whatever it holds) and return its mistakes."""

    @tornado.web.authenticated
    async def post(self, raw_id: str) -> None:
        survey_id = survey_id_of(raw_id)
        text = self.definition_text()
        catalog = await self.catalog()
        await survey_defs.save_draft(self.db, survey_id, text, self.owner_name)
        survey, issues = catalog.validate_for(survey_id, text)
        self.write_json(
            {"saved": True, "ok": survey is not None, "issues": [issue_json(i) for i in issues]}
        )


class PublishApi(EditorApi):
    """``POST {text}``: save it as the draft, then publish it as the next version (422 with
    every mistake when it is invalid: nothing published, the draft kept)."""

    @tornado.web.authenticated
    async def post(self, raw_id: str) -> None:
        survey_id = survey_id_of(raw_id)
        text = self.definition_text()
        catalog = await self.catalog()
        await survey_defs.save_draft(self.db, survey_id, text, self.owner_name)
        survey, issues = catalog.validate_for(survey_id, text)
        if survey is None:
            self.set_status(422)
            self.write_json({"ok": False, "issues": [issue_json(i) for i in issues]})
            return
        result = await catalog.publish(
            text, by=self.owner_name, source="dashboard", name=f"{survey_id}.yaml"
        )
        if not result.ok:
            self.set_status(422)
            self.write_json({"ok": False, "issues": [issue_json(i) for i in result.issues]})
            return
        self.write_json({"ok": True, "version": result.version, "created": result.created})


class TryApi(EditorApi):
    """``POST {text}``: save the draft and let the simulator's test users take it (valid only);
    their earlier sessions of this survey are wiped so the try starts from question 1."""

    @tornado.web.authenticated
    async def post(self, raw_id: str) -> None:
        survey_id = survey_id_of(raw_id)
        text = self.definition_text()
        catalog = await self.catalog()
        await survey_defs.save_draft(self.db, survey_id, text, self.owner_name)
        survey, issues = await catalog.try_draft(survey_id, text)
        if survey is None:
            self.set_status(422)
            self.write_json({"ok": False, "issues": [issue_json(i) for i in issues]})
            return
        wiped = await sessions_store.delete_test_data(self.db, survey_id)
        self.write_json({"ok": True, "keyword": survey.keywords[0], "wiped": wiped})


_ACTIONS = ("close", "reopen", "archive", "unarchive", "schedule")


class StateApi(EditorApi):
    """``POST {action: close|reopen|archive|unarchive|schedule, opens_at?, closes_at?}``."""

    @tornado.web.authenticated
    async def post(self, raw_id: str) -> None:
        survey_id = survey_id_of(raw_id)
        body = self.json_body()
        action = body.get("action")
        if action not in _ACTIONS:
            raise tornado.web.HTTPError(400, "action must be one of %s", ", ".join(_ACTIONS))
        catalog = await self.catalog()
        if survey_id not in catalog.snapshot.current:
            raise tornado.web.HTTPError(404, "survey %s has no published version", survey_id)
        issues: list[Issue] = []
        if action in ("close", "reopen"):
            await catalog.set_open(survey_id, action == "reopen")
        elif action in ("archive", "unarchive"):
            issues = await catalog.set_archived(survey_id, action == "archive")
        else:
            opens_at, closes_at = self._time(body, "opens_at"), self._time(body, "closes_at")
            if opens_at and closes_at and opens_at >= closes_at:
                raise tornado.web.HTTPError(400, "closes_at must be after opens_at")
            await catalog.schedule(survey_id, opens_at, closes_at)
        if issues:
            self.set_status(409)
            self.write_json({"ok": False, "issues": [issue_json(i) for i in issues]})
            return
        survey = catalog.snapshot.current[survey_id]
        self.write_json({"ok": True, "survey": survey.describe()})

    def _time(self, body: dict[str, Any], key: str) -> dt.datetime | None:
        raw = body.get(key)
        if raw in (None, ""):
            return None
        if not isinstance(raw, str):
            raise tornado.web.HTTPError(400, "%s must be an ISO date and time", key)
        try:
            value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError as e:
            raise tornado.web.HTTPError(400, "%s must be an ISO date and time", key) from e
        if value.tzinfo is None:  # a wall-clock time in the owner's time zone
            value = value.replace(tzinfo=self.config.tzinfo)
        return value.astimezone(dt.UTC)


class DiffApi(EditorApi):
    """``GET ?a=1&b=2`` (``b`` may be ``draft``): a unified diff between two versions, as text."""

    @tornado.web.authenticated
    async def get(self, raw_id: str) -> None:
        survey_id = survey_id_of(raw_id)
        a, b = self.get_query_argument("a", ""), self.get_query_argument("b", "")
        texts = [await self._text(survey_id, which) for which in (a, b)]
        diff = difflib.unified_diff(
            texts[0].splitlines(keepends=True),
            texts[1].splitlines(keepends=True),
            fromfile=f"{survey_id} {self._label(a)}",
            tofile=f"{survey_id} {self._label(b)}",
        )
        self.write_json({"diff": "".join(diff)})

    @staticmethod
    def _label(which: str) -> str:
        return "draft" if which == "draft" else f"v{which}"

    async def _text(self, survey_id: str, which: str) -> str:
        if which == "draft":
            draft = await survey_defs.get_draft(self.db, survey_id)
            if not draft:
                raise tornado.web.HTTPError(404, "survey %s has no draft", survey_id)
            return str(draft.get("text", ""))
        if not re.fullmatch(r"[0-9]{1,6}", which):
            raise tornado.web.HTTPError(400, "a and b must be version numbers or draft")
        found = await survey_defs.get_version(self.db, survey_id, int(which))
        if found is None:
            raise tornado.web.HTTPError(404, "no version %s of %s", which, survey_id)
        return str(found["text"])


class ExportYamlHandler(DashboardHandler):
    """``export.yaml?version=N``: a published version's YAML as a download (default newest)."""

    @tornado.web.authenticated
    async def get(self, raw_id: str) -> None:
        survey_id = survey_id_of(raw_id)
        raw = self.get_query_argument("version", "")
        if raw and not re.fullmatch(r"[0-9]{1,6}", raw):
            raise tornado.web.HTTPError(400, "version must be a number")
        text = await catalog_of(self).export(survey_id, int(raw) if raw else None)
        if text is None:
            raise tornado.web.HTTPError(404, "no published version of %s", survey_id)
        suffix = f"-v{raw}" if raw else ""
        self.set_header("Content-Type", "application/yaml; charset=UTF-8")
        self.set_header("Content-Disposition", f'attachment; filename="{survey_id}{suffix}.yaml"')
        self.finish(text.encode("utf-8"))


class EditorPage(DashboardHandler):
    @tornado.web.authenticated
    def get(self, raw_id: str) -> None:
        survey_id = survey_id_of(raw_id)
        # CodeMirror mounts its styles as <style> elements: allowed by a per-page nonce only.
        nonce = secrets.token_urlsafe(16)
        self.set_header("Content-Security-Policy", content_security_policy(nonce))
        self.render_page("survey_edit.html", page="surveys", survey_id=survey_id, nonce=nonce)


routes = [
    (r"/api/survey-editor", EditorListApi),
    (r"/api/survey-editor/([^/]+)", SurveyDefinitionApi),
    (r"/api/survey-editor/([^/]+)/check", CheckApi),
    (r"/api/survey-editor/([^/]+)/draft", DraftApi),
    (r"/api/survey-editor/([^/]+)/publish", PublishApi),
    (r"/api/survey-editor/([^/]+)/try", TryApi),
    (r"/api/survey-editor/([^/]+)/state", StateApi),
    (r"/api/survey-editor/([^/]+)/diff", DiffApi),
    (r"/dashboard/survey-editor/([^/]+)/export\.yaml", ExportYamlHandler),
    (r"/dashboard/survey-editor/([^/]+)", EditorPage),
]
