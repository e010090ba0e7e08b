"""The dashboard's JSON API under ``/api/``: every method needs a logged-in owner (else 403)."""

from __future__ import annotations

import tornado.web

from service import privacy, reports
from service.store import dashboard as store
from service.store import owners

from .base import ApiHandler, DashboardHandler
from .surveys import definitions

# Search texts become (escaped) regular expressions; the server caps a pattern at 1,000 characters.
MAX_SEARCH = 200


def search_text(handler: DashboardHandler, name: str) -> str:
    """A search box's value, stripped; a 400 when it is longer than anyone types."""
    value = handler.get_query_argument(name, "").strip()
    if len(value) > MAX_SEARCH:
        raise tornado.web.HTTPError(400, "%s must be at most %d characters", name, MAX_SEARCH)
    return value


class OverviewApi(ApiHandler):
    """Counts for the overview cards (test users left out unless ``test=1``)."""

    @tornado.web.authenticated
    async def get(self) -> None:
        include_test = self.bool_argument("test", False)
        data = await store.overview(self.db, tz=self.config.timezone, include_test=include_test)
        data["surveys"] = await reports.totals(
            self.db, definitions(self), include_test=include_test, numbers=self.survey_numbers
        )
        self.write_json(data)


class TrafficApi(ApiHandler):
    """Messages per minute, the last ``minutes`` (default 60) minutes."""

    @tornado.web.authenticated
    async def get(self) -> None:
        minutes = self.int_argument("minutes", 60, 1, 24 * 60)
        include_test = self.bool_argument("test", False)
        buckets = await store.messages_per_minute(
            self.db, minutes=minutes, include_test=include_test
        )
        self.write_json({"minutes": minutes, "buckets": buckets})


class TrendsApi(ApiHandler):
    """Messages, new followers and completions per day, the last ``days`` (7 or 30) days."""

    @tornado.web.authenticated
    async def get(self) -> None:
        days = self.int_argument("days", 7, 1, 90)
        items = await reports.trends(
            self.db,
            definitions(self),
            days=days,
            timezone=self.config.timezone,
            include_test=self.bool_argument("test", False),
        )
        self.write_json({"days": days, "items": items})


class MessagesApi(ApiHandler):
    """The message log: ``q`` (text), ``user``, ``type``, ``since``, ``until``, ``page``.

    ``since`` and ``until`` are dates (in ``TIMEZONE``, both inclusive) or ISO times (``until``
    exclusive).
    """

    @tornado.web.authenticated
    async def get(self) -> None:
        msg_type = self.get_query_argument("type", "")
        if msg_type and msg_type not in store.MESSAGE_TYPES:
            raise tornado.web.HTTPError(400, "unknown type %s", msg_type)
        data = await store.search_messages(
            self.db,
            text=search_text(self, "q"),
            openid=search_text(self, "user"),
            msg_type=msg_type,
            since=self.date_argument("since"),
            until=self.date_argument("until", end_of_day=True),
            include_test=self.bool_argument("test", True),
            page=self.int_argument("page", 1, 1, 1_000_000),
            per_page=self.int_argument("per_page", 50, 1, 200),
        )
        self.write_json(data)


class UsersApi(ApiHandler):
    """Users with their progress in every survey: ``q``, ``subscribed``, ``test``, ``page``."""

    @tornado.web.authenticated
    async def get(self) -> None:
        raw_subscribed = self.get_query_argument("subscribed", "")
        subscribed = None if not raw_subscribed else raw_subscribed in {"1", "true", "yes"}
        data = await store.search_users(
            self.db,
            query=search_text(self, "q"),
            subscribed=subscribed,
            include_test=self.bool_argument("test", True),
            page=self.int_argument("page", 1, 1, 1_000_000),
            per_page=self.int_argument("per_page", 50, 1, 200),
        )
        surveys = definitions(self)
        openids = [u["openid"] for u in data["items"]]
        progress = await reports.progress(self.db, surveys, openids)
        for user in data["items"]:
            user["surveys"] = progress.get(user["openid"], [])
        data["survey_titles"] = reports.titles(surveys)
        self.write_json(data)


class UserApi(ApiHandler):
    @tornado.web.authenticated
    async def get(self, openid: str) -> None:
        user = await store.get_user(self.db, openid)
        if user is None:
            raise tornado.web.HTTPError(404, "no such user")
        user["surveys"] = await reports.answers(self.db, definitions(self), openid)
        self.write_json(user)


class ConversationApi(ApiHandler):
    """One user's conversation, oldest first; ``before`` (ISO time) pages back."""

    @tornado.web.authenticated
    async def get(self, openid: str) -> None:
        data = await store.conversation(
            self.db,
            openid,
            before=self.date_argument("before"),
            limit=self.int_argument("limit", 100, 1, 500),
        )
        self.write_json(data)


class PreferencesApi(ApiHandler):
    """``POST {"include_test": true}``: the owner's choices, the same on every page."""

    @tornado.web.authenticated
    async def post(self) -> None:
        body = self.json_body()
        unknown = sorted(set(body) - set(owners.PREFERENCES))
        if unknown:
            raise tornado.web.HTTPError(400, "unknown preference %s", ", ".join(unknown))
        for key, value in body.items():
            if not isinstance(value, bool):
                raise tornado.web.HTTPError(400, "%s must be true or false", key)
            await owners.set_preference(self.db, self.current_user, key, value)
        self.write_json({"ok": True})


class UserExportApi(ApiHandler):
    """A copy of everything kept about one person (their right to a copy), as a JSON file."""

    @tornado.web.authenticated
    async def get(self, openid: str) -> None:
        data = await privacy.export_for_owner(self.db, openid, str(self.current_user))
        if data is None:
            raise tornado.web.HTTPError(404, "nothing is kept about this user")
        name = "user-data-" + "".join(c for c in openid if c.isalnum() or c in "-_")[:40]
        self.set_header("Content-Disposition", f'attachment; filename="{name}.json"')
        self.write_json(data)


class UserDeleteApi(ApiHandler):
    """Delete everything kept about one person. The body must repeat the openid
    (``{"confirm": "<openid>"}``): the page asks the owner to confirm first."""

    @tornado.web.authenticated
    async def post(self, openid: str) -> None:
        if self.json_body().get("confirm") != openid:
            raise tornado.web.HTTPError(400, "confirm must repeat the user's openid")
        counts = await privacy.delete_for_owner(self.db, openid, str(self.current_user))
        self.write_json({"deleted": counts})


routes = [
    (r"/api/overview", OverviewApi),
    (r"/api/preferences", PreferencesApi),
    (r"/api/traffic", TrafficApi),
    (r"/api/trends", TrendsApi),
    (r"/api/messages", MessagesApi),
    (r"/api/users", UsersApi),
    (r"/api/users/([^/]+)", UserApi),
    (r"/api/users/([^/]+)/messages", ConversationApi),
    (r"/api/users/([^/]+)/export", UserExportApi),
    (r"/api/users/([^/]+)/delete", UserDeleteApi),
]
