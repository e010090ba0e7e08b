"""The custom-menu editor's API against the fake WeChat API: limits checked (the validation
`menu check` runs), push (menu/create) with who and when kept, read back (menu/get), WeChat's
errors (45009) shown, and without AppID/AppSecret a clear 503 while the rest works."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from service.app import make_app
from tests.test_survey_editor import post

MENU = {
    "button": [
        {"name": "爆肝度调查", "type": "click", "key": "爆肝度调查"},
        {
            "name": "更多",
            "sub_button": [
                {"name": "官网", "type": "view", "url": "https://example.com/"},
                {"name": "联系我们", "type": "click", "key": "CONTACT"},
                {"name": "扫一扫", "type": "scancode_push", "key": "SCAN"},
            ],
        },
    ]
}


@pytest.fixture
def app(io_loop: Any, wechat_settings: Any, db: Any) -> Iterator[Any]:
    application = make_app(wechat_settings, db=db)
    yield application
    io_loop.run_sync(application.settings["process"].close)


@pytest.mark.gen_test(timeout=60)
async def test_check_push_and_read_back(logged_in, app, db, fake_wechat_api):
    state = await logged_in.get_json("/api/menu")
    assert state["configured"] is True and state["pushed"] is None
    assert state["limits"]["name_bytes"] == 16 and "miniprogram" in state["limits"]["types"]
    assert "secret" not in json.dumps(state).lower() and "token" not in json.dumps(state).lower()

    code, checked = await post(logged_in, "/api/menu/check", {"menu": MENU})
    assert code == 200 and checked["issues"] == []
    assert checked["unclaimed"] == ["CONTACT"]  # 爆肝度调查 is a survey keyword

    too_long = {"button": [{"name": "一个太长的按钮名字", "type": "click", "key": "k"}] * 4}
    code, refused = await post(logged_in, "/api/menu/push", {"menu": too_long})
    assert code == 422 and refused["issues"] == ["button: 1 to 3 top-level buttons"]
    assert fake_wechat_api.menus == []

    code, pushed = await post(logged_in, "/api/menu/push", {"menu": MENU})
    assert code == 200, pushed
    assert fake_wechat_api.menus == [MENU]
    assert pushed["pushed"]["pushed_by"] == "boss" and pushed["pushed"]["menu"] == MENU
    stored = await db.menus.find_one({"_id": "pushed"})
    assert stored["menu"] == MENU and stored["pushed_by"] == "boss"

    code, read = await post(logged_in, "/api/menu/pull", {})
    assert code == 200 and read["menu"] == MENU and read["issues"] == []
    assert fake_wechat_api.calls_to("menu/get")

    fake_wechat_api.fail_next("menu/create", 45009)
    code, failed = await post(logged_in, "/api/menu/push", {"menu": MENU})
    assert code == 502 and failed["errcode"] == 45009
    assert "access_token=" not in failed["error"] or "access_token=***" in failed["error"]


@pytest.mark.gen_test(timeout=60)
async def test_read_when_wechat_has_no_menu(logged_in, app, fake_wechat_api):
    code, read = await post(logged_in, "/api/menu/pull", {})
    assert code == 200 and read["menu"] is None


@pytest.mark.gen_test(timeout=60)
async def test_a_click_key_a_rule_answers_is_claimed(logged_in, app):
    rules = app.settings["replies"]
    await rules.ready()
    book, _ = rules.check(
        {"rules": [{"keyword": "CONTACT", "reply": "电话 123", "hours": "09:00-10:00"}]}
    )
    await rules.publish(book, by="boss", source="test")
    _, checked = await post(logged_in, "/api/menu/check", {"menu": MENU})
    assert checked["unclaimed"] == []
