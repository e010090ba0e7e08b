"""Shared handler plumbing: typed access to what ``make_app`` puts in the application settings."""

from __future__ import annotations

from typing import Any, cast

import tornado.web
from pymongo.asynchronous.database import AsyncDatabase

from service.config import Settings
from service.dbstate import DatabaseState


class BaseHandler(tornado.web.RequestHandler):
    @property
    def config(self) -> Settings:
        return cast(Settings, self.settings["config"])

    @property
    def db(self) -> AsyncDatabase[dict[str, Any]]:
        return cast(AsyncDatabase[dict[str, Any]], self.settings["db"])

    @property
    def database(self) -> DatabaseState:
        """Whether the database is up (shared with the inbox and the spool replayer)."""
        return cast(DatabaseState, self.settings["database"])
