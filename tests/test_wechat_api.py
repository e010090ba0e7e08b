"""The WeChat API client against the fake WeChat API server (never the real one)."""

from __future__ import annotations

from typing import Any

import pytest

from service.wechat import Reply
from service.wechat_api import WeChatAPI

from .fake_wechat_api import FAKE_APP_ID, FAKE_APP_SECRET

OPENID = "oABCD1234567890abcdefghijklm"  # 28 characters, like WeChat's


@pytest.fixture
def make(db, fake_wechat_api, io_loop):
    """``make(**options)`` → a WeChatAPI on the fake server (one per simulated process)."""
    made: list[WeChatAPI] = []

    def _make(**options: Any) -> WeChatAPI:
        options.setdefault("retry_delays", (0.01, 0.02, 0.04))
        api = WeChatAPI(
            db, app_id=FAKE_APP_ID, app_secret=FAKE_APP_SECRET,
            base_url=fake_wechat_api.base_url, **options,
        )
        made.append(api)
        return api

    yield _make

    async def close() -> None:
        for api in made:
            await api.close()

    io_loop.run_sync(close)


@pytest.mark.gen_test
async def test_send_text_is_delivered_with_one_token_fetch(make, fake_wechat_api):
    api = make()
    await api.send_text(OPENID, "你好")
    await api.send_reply(OPENID, Reply.image("MEDIA"))
    await api.send_reply(OPENID, Reply.nothing())
    assert fake_wechat_api.sent == [
        {"touser": OPENID, "msgtype": "text", "text": {"content": "你好"}},
        {"touser": OPENID, "msgtype": "image", "image": {"media_id": "MEDIA"}},
    ]
    assert fake_wechat_api.token_fetches == 1
