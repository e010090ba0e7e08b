"""The custom-menu editor: WeChat's limits as you type, push to WeChat (``menu/create``), read
the menu WeChat has (``menu/get``), the last pushed menu with who and when. Handlers parse, call
``service.menu``, write. Without AppID/AppSecret the page says so and pushes nothing.
"""

from __future__ import annotations

from typing import Any

import tornado.web

from service.menu import (
    MENU_KEY_BYTES,
    MENU_MAX_BUTTONS,
    MENU_MAX_SUB_BUTTONS,
    MENU_NAME_BYTES,
    MENU_SUB_NAME_BYTES,
    MENU_TYPES,
    MENU_URL_BYTES,
    MenuError,
    menu_issues,
    push_menu,
    pushed_menu,
    unclaimed_keys,
)
from service.replies import ReplyRules
from service.surveys import SurveyEngine
from service.surveys.loader import normalize_keyword
from service.surveys.model import COMMAND_WORDS
from service.wechat_api import WeChatAPIError

from .base import DashboardHandler, WeChatApiHandler

__all__ = ["routes"]

MAX_MENU_BODY = 64 * 1024


class MenuApiBase(WeChatApiHandler):
    def menu_body(self) -> Any:
        if len(self.request.body) > MAX_MENU_BODY:
            raise tornado.web.HTTPError(413, "a menu is at most 64 KiB")
        return self.json_body().get("menu")

    def unclaimed(self, menu: Any) -> list[str]:
        engine = self.settings.get("surveys")
        rules = self.settings.get("replies")
        commands = {normalize_keyword(w) for w in COMMAND_WORDS}

        def claims(key: str) -> bool:
            if normalize_keyword(key) in commands:
                return True
            if isinstance(engine, SurveyEngine) and engine.keyword_survey(key) is not None:
                return True
            if isinstance(rules, ReplyRules):
                return rules.snapshot.claims(key)
            return False

        return unclaimed_keys(menu, claims=claims) if not menu_issues(menu) else []


class MenuApi(MenuApiBase):
    @tornado.web.authenticated
    async def get(self) -> None:
        self.write_json(
            {
                "configured": self.api is not None,
                "pushed": await pushed_menu(self.db),
                "limits": {
                    "buttons": MENU_MAX_BUTTONS,
                    "sub_buttons": MENU_MAX_SUB_BUTTONS,
                    "name_bytes": MENU_NAME_BYTES,
                    "sub_name_bytes": MENU_SUB_NAME_BYTES,
                    "key_bytes": MENU_KEY_BYTES,
                    "url_bytes": MENU_URL_BYTES,
                    "types": {k: list(v) for k, v in MENU_TYPES.items()},
                },
            }
        )


class CheckApi(MenuApiBase):
    @tornado.web.authenticated
    def post(self) -> None:
        menu = self.menu_body()
        self.write_json({"issues": menu_issues(menu), "unclaimed": self.unclaimed(menu)})


class PushApi(MenuApiBase):
    @tornado.web.authenticated
    async def post(self) -> None:
        menu = self.menu_body()
        issues = menu_issues(menu)
        if issues:
            self.set_status(422)
            self.write_json({"error": "invalid", "issues": issues})
            return
        api = self.require_api()
        by = str((self.owner or {}).get("_id", "owner"))
        try:
            await push_menu(self.db, api, menu, by=by)
        except MenuError as e:  # pragma: no cover - checked above
            self.set_status(422)
            self.write_json({"error": "invalid", "issues": e.errors})
            return
        except WeChatAPIError as e:
            self.wechat_failed(e)
            return
        self.write_json({"pushed": await pushed_menu(self.db), "unclaimed": self.unclaimed(menu)})


class PullApi(MenuApiBase):
    """``POST``: the menu WeChat has now (``menu/get``), to start editing from."""

    @tornado.web.authenticated
    async def post(self) -> None:
        api = self.require_api()
        try:
            menu = await api.get_menu()
        except WeChatAPIError as e:
            self.wechat_failed(e)
            return
        self.write_json({"menu": menu, "issues": menu_issues(menu) if menu else []})


class MenuPage(DashboardHandler):
    @tornado.web.authenticated
    def get(self) -> None:
        self.render_page("menu.html", page="menu")


routes = [
    (r"/api/menu", MenuApi),
    (r"/api/menu/check", CheckApi),
    (r"/api/menu/push", PushApi),
    (r"/api/menu/pull", PullApi),
    (r"/dashboard/menu", MenuPage),
]
