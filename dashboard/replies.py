"""The auto-reply editor: the ordered rules and the special replies. Handlers parse, call
``service.replies.ReplyRules``, write.

``GET /api/replies`` the replies in force (and their version); ``POST /api/replies/check``
every mistake of a definition, nothing saved; ``POST /api/replies`` saves it (422 with every
mistake; 409 when someone saved since the version it was based on); ``POST /api/replies/import``
the same from a YAML text; ``/dashboard/replies/export.yaml`` the YAML as a download.
"""

from __future__ import annotations

from typing import Any

import tornado.web

from service.replies import (
    MATCH_KINDS,
    MAX_DEFINITION_BYTES,
    MAX_RULES,
    REPLY_FIELDS,
    ReplyBook,
    ReplyRules,
    dump_yaml,
)
from service.surveys import SurveyEngine
from service.surveys.loader import Issue
from service.wechat import NEWS_MAX_ARTICLES, TEXT_LIMIT_BYTES

from .base import ApiHandler, DashboardHandler

__all__ = ["routes"]


def _issue(issue: Issue) -> dict[str, Any]:
    return {"line": issue.line, "path": issue.path, "message": issue.message, "text": str(issue)}


class RepliesApiBase(ApiHandler):
    async def rules(self) -> ReplyRules:
        rules: ReplyRules = self.settings["replies"]
        await rules.ready()
        return rules

    def body_limit(self) -> None:
        if len(self.request.body) > MAX_DEFINITION_BYTES + 4096:
            raise tornado.web.HTTPError(413, "the replies may be at most 512 KiB")

    @property
    def owner_name(self) -> str:
        return str((self.owner or {}).get("_id", "owner"))

    def surveys(self) -> list[dict[str, Any]]:
        engine = self.settings.get("surveys")
        if not isinstance(engine, SurveyEngine):
            return []
        return [{"id": s.id, "title": s.title} for s in engine.all_surveys() if not s.archived]

    def state(self, book: ReplyBook) -> dict[str, Any]:
        return {
            "version": book.version,
            "updated_at": book.updated_at,
            "updated_by": book.updated_by,
            "data": book.document(),
            "surveys": self.surveys(),
            "limits": {
                "rules": MAX_RULES,
                "text_bytes": TEXT_LIMIT_BYTES,
                "news_articles": NEWS_MAX_ARTICLES,
                "match": list(MATCH_KINDS),
                "kinds": {k: list(v) for k, v in REPLY_FIELDS.items()},
            },
        }

    async def save(self, rules: ReplyRules, book: ReplyBook | None, issues: list[Issue]) -> None:
        if book is None:
            self.set_status(422)
            self.write_json({"error": "invalid", "issues": [_issue(i) for i in issues]})
            return
        raw_version = self.json_body().get("version")
        expected = raw_version if isinstance(raw_version, int) and raw_version >= 0 else None
        result = await rules.publish(
            book, by=self.owner_name, source="dashboard", expected_version=expected
        )
        if result.conflict:
            self.set_status(409)
            self.write_json(
                {
                    "error": "saved elsewhere since you loaded it; reload to see the new version",
                    **self.state(rules.snapshot),
                }
            )
            return
        self.write_json(self.state(rules.snapshot))


class RepliesApi(RepliesApiBase):
    @tornado.web.authenticated
    async def get(self) -> None:
        self.write_json(self.state((await self.rules()).snapshot))

    @tornado.web.authenticated
    async def post(self) -> None:
        self.body_limit()
        rules = await self.rules()
        book, issues = rules.check(self.json_body().get("data"), "replies")
        await self.save(rules, book, issues)


class CheckApi(RepliesApiBase):
    @tornado.web.authenticated
    async def post(self) -> None:
        self.body_limit()
        rules = await self.rules()
        _book, issues = rules.check(self.json_body().get("data"), "replies")
        self.write_json({"issues": [_issue(i) for i in issues]})


class ImportApi(RepliesApiBase):
    """``POST {text}``: a YAML file (``replies export``'s format) checked and saved whole."""

    @tornado.web.authenticated
    async def post(self) -> None:
        self.body_limit()
        text = self.json_body().get("text")
        if not isinstance(text, str):
            raise tornado.web.HTTPError(400, "text must be the replies' YAML")
        rules = await self.rules()
        book, issues = rules.check_yaml(text, "replies.yaml")
        await self.save(rules, book, issues)


class ExportYamlHandler(DashboardHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        rules: ReplyRules = self.settings["replies"]
        await rules.ready()
        self.set_header("Content-Type", "application/yaml; charset=UTF-8")
        self.set_header("Content-Disposition", 'attachment; filename="replies.yaml"')
        self.finish(dump_yaml(rules.snapshot).encode("utf-8"))


class RepliesPage(DashboardHandler):
    @tornado.web.authenticated
    def get(self) -> None:
        self.render_page("replies.html", page="replies")


routes = [
    (r"/api/replies", RepliesApi),
    (r"/api/replies/check", CheckApi),
    (r"/api/replies/import", ImportApi),
    (r"/dashboard/replies/export\.yaml", ExportYamlHandler),
    (r"/dashboard/replies", RepliesPage),
]
