"""The first-run checklist (``/api/setup``) reads real state, and ``serve --dev``'s login banner.

Each step is completed the way an owner completes it: WeChat's signed GET handshake on the real
endpoint, a message from a real user, a token fetched from the (fake) WeChat API through the
dashboard's button, ``menu push`` (``tests/test_api_cli.py`` checks that it records the push).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest

from service import onboarding
from service.app import make_app
from service.config import Settings
from service.owners_cli import (
    FIRST_PASSWORD_FILE,
    framed,
    owner_banner,
    unused_first_password,
)
from service.store import owners
from tests.ops_helpers import until


@pytest.fixture
def app(io_loop: Any, wechat_settings: Settings, db: Any) -> Iterator[Any]:
    """The application with API credentials pointed at the fake WeChat API."""
    application = make_app(wechat_settings, db=db)
    yield application
    io_loop.run_sync(application.settings["process"].close)


def steps(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["id"]: step for step in data["steps"]}


@pytest.mark.gen_test(timeout=60)
async def test_a_new_owner_completes_the_checklist_step_by_step(
    logged_in, http_client, base_url, wechat, send, db, wechat_settings, fake_wechat_api
):
    data = await logged_in.get_json("/api/setup")
    assert [s["id"] for s in data["steps"]] == list(onboarding.STEPS)
    first = steps(data)
    assert not data["complete"]
    # What to paste into 基本配置: the URL this server is reached on, the token, the key.
    assert first["handshake"] == {
        "id": "handshake",
        "done": False,
        "at": None,
        "url": f"{base_url}/wechat",
        "token": wechat_settings.wechat_token,
        "encoding_aes_key": wechat_settings.encoding_aes_key,
        "message_mode": "compat",
    }
    assert not first["first_message"]["done"]
    assert first["api"]["credentials"] is True and not first["api"]["done"]
    assert first["survey"]["done"] and first["survey"]["surveys"][0]["id"] == "baogan"
    assert not first["menu"]["done"]
    assert "menu push" in first["menu"]["command"]

    # A forged handshake completes nothing; WeChat's signed one does.
    forged = await http_client.fetch(
        f"{base_url}/wechat?"
        + urlencode({"signature": "0" * 40, "timestamp": "1", "nonce": "n", "echostr": "e"}),
        raise_error=False,
    )
    assert forged.code == 403
    query = wechat.handshake("echo-1")
    response = await http_client.fetch(f"{base_url}/wechat?{urlencode(query)}")
    assert response.body == b"echo-1"

    async def handshake_done() -> bool:
        return bool(steps(await logged_in.get_json("/api/setup"))["handshake"]["done"])

    await until(handshake_done)

    # A simulator user's message does not count; a real user's does.
    await send(wechat.text("sim-tester", "你好"))
    assert not steps(await logged_in.get_json("/api/setup"))["first_message"]["done"]
    await send(wechat.text("o-real-user", "你好"))
    after = steps(await logged_in.get_json("/api/setup"))
    assert after["first_message"]["done"] and after["first_message"]["at"]

    # The "test the connection" button fetches a token from WeChat.
    check = await logged_in.post_json("/api/setup/check-api")
    assert json.loads(check.body) == {"ok": True}
    assert fake_wechat_api.token_fetches == 1
    assert steps(await logged_in.get_json("/api/setup"))["api"]["done"]

    await onboarding.record_menu_push(db, buttons=3)
    final = await logged_in.get_json("/api/setup")
    assert final["complete"] and all(s["done"] for s in final["steps"])


@pytest.mark.gen_test(timeout=60)
async def test_check_api_reports_what_wechat_said(logged_in, fake_wechat_api):
    fake_wechat_api.fail_next("/cgi-bin/token", 40125)
    check = await logged_in.post_json("/api/setup/check-api")
    answer = json.loads(check.body)
    assert answer["ok"] is False and "40125" in answer["error"]
    assert not steps(await logged_in.get_json("/api/setup"))["api"]["done"]


@pytest.mark.gen_test
async def test_setup_api_needs_login(session):
    response = await session.get("/api/setup")
    assert response.code == 403
    post = await session.post_json("/api/setup/check-api")
    assert post.code == 403


@pytest.mark.gen_test
async def test_the_one_time_password_is_shown_again_until_it_is_replaced(db, tmp_path):
    data_dir = tmp_path / "data"
    lines = await owner_banner(db, data_dir)
    password = lines[0].rsplit(" / ", 1)[1]
    assert await owners.authenticate(db, "admin", password) is not None
    assert (data_dir / FIRST_PASSWORD_FILE).stat().st_mode & 0o777 == 0o600
    # A restart (serve --dev again) while it is unused: the same password.
    assert await owner_banner(db, data_dir) == lines
    # Once the owner has chosen their own, it is gone for good.
    await owners.set_password(db, "admin", "my very own password")
    assert await unused_first_password(db, data_dir) is None
    assert not (data_dir / FIRST_PASSWORD_FILE).exists()
    assert await owner_banner(db, data_dir) == ["More owners: python -m service create-owner NAME"]


def test_the_banner_is_framed_evenly_with_chinese_text():
    box = framed(["URL: http://x/wechat", "令牌 token"]).splitlines()
    assert box[0] == box[-1] and box[0].startswith("+-")
    # Every line ends in the same terminal column (a CJK character takes two).
    widths = {len(line) + sum(1 for ch in line if ord(ch) > 0x2E80) for line in box}
    assert len(widths) == 1
