"""The first-run checklist on the overview: ``GET /api/setup`` and ``POST /api/setup/check-api``.

The steps and what they read are ``service.onboarding``'s; this module only passes the request's
host (the URL WeChat must call is the one the owner reaches us on) and the loaded surveys.
"""

from __future__ import annotations

from typing import cast

import tornado.web

from service import onboarding
from service.wechat_api import WeChatAPI

from .base import ApiHandler
from .surveys import definitions

__all__ = ["routes"]


class SetupApi(ApiHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        endpoint = f"{self.request.protocol}://{self.request.host}/wechat"
        data = await onboarding.checklist(
            self.db, self.config, definitions(self), endpoint_url=endpoint
        )
        self.write_json(data)


class CheckApiApi(ApiHandler):
    """Fetch an access_token now with the configured AppID/AppSecret (the "api" step)."""

    @tornado.web.authenticated
    async def post(self) -> None:
        api = cast("WeChatAPI | None", self.settings.get("wechat_api"))
        self.write_json(await onboarding.check_api(api))


routes = [
    (r"/api/setup", SetupApi),
    (r"/api/setup/check-api", CheckApiApi),
]
