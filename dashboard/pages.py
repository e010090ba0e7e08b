"""The dashboard's HTML pages. Each is a shell; its numbers come from the JSON API and the feed."""

from __future__ import annotations

import tornado.web

from service.store import TEST_OPENID_PREFIX
from service.store import dashboard as store

from .base import DashboardHandler
from .simulator import SIMULATOR_MODES
from .surveys import find_survey


class RootHandler(DashboardHandler):
    """``/`` sends the owner to the dashboard (and an anonymous visitor to the login)."""

    @tornado.web.authenticated
    def get(self) -> None:
        self.redirect("/dashboard/")


class NotFoundHandler(DashboardHandler):
    """Any path no route matches: a 404 page (JSON under ``/api/``) with the usual headers."""

    async def prepare(self) -> None:
        await super().prepare()
        if self.request.path.startswith("/api/"):
            self.set_header("Content-Type", "application/json; charset=UTF-8")
            self.set_status(404)
            self.finish({"error": "not found", "status": 404})
            return
        raise tornado.web.HTTPError(404, "no route for %s", self.request.path)


class OverviewPage(DashboardHandler):
    @tornado.web.authenticated
    def get(self) -> None:
        self.render_page("overview.html", page="overview")


class LivePage(DashboardHandler):
    @tornado.web.authenticated
    def get(self) -> None:
        self.render_page("live.html", page="live", types=store.MESSAGE_TYPES)


class UsersPage(DashboardHandler):
    @tornado.web.authenticated
    def get(self) -> None:
        self.render_page("users.html", page="users")


class UserPage(DashboardHandler):
    @tornado.web.authenticated
    async def get(self, openid: str) -> None:
        user = await store.get_user(self.db, openid)
        if user is None:
            raise tornado.web.HTTPError(404, "no such user")
        self.render_page("user.html", page="users", user=user)


class SurveysPage(DashboardHandler):
    @tornado.web.authenticated
    def get(self) -> None:
        self.render_page("surveys.html", page="surveys")


class SurveyPage(DashboardHandler):
    @tornado.web.authenticated
    def get(self, survey_id: str) -> None:
        survey = find_survey(self, survey_id)
        self.render_page("survey.html", page="surveys", survey=survey.describe())


class MessagesPage(DashboardHandler):
    @tornado.web.authenticated
    def get(self) -> None:
        self.render_page("messages.html", page="messages", types=store.MESSAGE_TYPES)


class SimulatorPage(DashboardHandler):
    @tornado.web.authenticated
    def get(self) -> None:
        self.render_page(
            "simulator.html",
            page="simulator",
            prefix=TEST_OPENID_PREFIX,
            mode=SIMULATOR_MODES[self.config.effective_message_mode][0],
            modes=" ".join(SIMULATOR_MODES[self.config.effective_message_mode]),
        )


routes = [
    (r"/", RootHandler),
    (r"/dashboard/?", OverviewPage),
    (r"/dashboard/live", LivePage),
    (r"/dashboard/users", UsersPage),
    (r"/dashboard/users/([^/]+)", UserPage),
    (r"/dashboard/surveys", SurveysPage),
    (r"/dashboard/surveys/([^/]+)", SurveyPage),
    (r"/dashboard/messages", MessagesPage),
    (r"/dashboard/simulator", SimulatorPage),
]
