"""pytest plugin: the ``fake_wechat_api`` fixture, a fake WeChat API server on loopback.

The server runs on the test's IOLoop (pytest-tornado's ``io_loop``), so it answers while a
``@pytest.mark.gen_test`` test awaits; a blocking call in the test body would starve it. Point the
service at it with ``settings.replace(wechat_api_base=fake_wechat_api.base_url)`` (the
``wechat_settings`` fixture does that, with the fake's AppID and AppSecret).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import tornado.httpserver
import tornado.netutil

from service.config import Settings

from .fake_wechat_api import FAKE_APP_ID, FAKE_APP_SECRET, FakeWeChatAPI


@pytest.fixture
def fake_wechat_api(io_loop: Any) -> Iterator[FakeWeChatAPI]:
    """A fresh fake WeChat API server per test: ``.base_url``, ``.calls``, ``.sent``,
    ``.fail_next(path, errcode, times=1)``, ``.delay(path, seconds)`` (see ``FakeWeChatAPI``)."""
    fake = FakeWeChatAPI()
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server = tornado.httpserver.HTTPServer(fake.make_app())
    server.add_sockets(sockets)
    fake.base_url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    yield fake
    server.stop()
    io_loop.run_sync(server.close_all_connections, timeout=10)


@pytest.fixture
def wechat_settings(settings: Settings, fake_wechat_api: FakeWeChatAPI) -> Settings:
    """``settings`` with API credentials, pointed at the fake WeChat API server."""
    return settings.replace(
        app_id=FAKE_APP_ID,
        app_secret=FAKE_APP_SECRET,
        wechat_api_base=fake_wechat_api.base_url,
    )
