from __future__ import annotations

import pytest

from service.bot import GREETINGS
from tests.conftest import TOKEN


@pytest.mark.gen_test
async def test_handshake_echoes(http_client, base_url, wechat):
    from urllib.parse import urlencode

    q = wechat.handshake("echo-123")
    r = await http_client.fetch(f"{base_url}/wechat?{urlencode(q)}")
    assert r.code == 200
    assert r.body == b"echo-123"


@pytest.mark.gen_test
@pytest.mark.parametrize("mode", ["plain", "aes", "compat"])
async def test_text_gets_greeting(send, wechat, db, app, mode):
    r, reply = await send(wechat.text("user-a", "hi there"), mode)
    assert r.code == 200
    assert reply["MsgType"] == "text"
    assert reply["Content"] in GREETINGS
    assert reply["ToUserName"] == "user-a"
    stored = await db.messages.find_one({"openid": "user-a"})
    assert stored["mode"] == mode
    assert stored["reply_text"] == reply["Content"]
    assert TOKEN not in str(stored)
