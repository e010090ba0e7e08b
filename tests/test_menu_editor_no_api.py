"""Without AppID/AppSecret the menu editor says so (409 on push and read), and checks still work."""

from __future__ import annotations

import pytest

from tests.test_menu_editor import MENU
from tests.test_survey_editor import post


@pytest.mark.gen_test(timeout=60)
async def test_without_credentials(logged_in, app):
    state = await logged_in.get_json("/api/menu")
    assert state["configured"] is False
    code, checked = await post(logged_in, "/api/menu/check", {"menu": MENU})
    assert code == 200 and checked["issues"] == []
    for path in ("/api/menu/push", "/api/menu/pull"):
        code, answer = await post(logged_in, path, {"menu": MENU})
        assert code == 409 and "AppID/AppSecret are not configured" in answer["error"]
    page = await logged_in.get("/dashboard/menu")
    assert page.code == 200 and "未配置 AppID" in page.body.decode()
