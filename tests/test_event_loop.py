"""``EVENT_LOOP``: ``serve`` runs on uvloop or asyncio's own loop, and says which.

The subprocess tests start ``python -m service serve`` with each setting and exchange real signed,
encrypted /wechat messages with it (a reply, the same reply to a retry, the row in the database),
then stop it with SIGTERM. The rest of the suite runs its in-process apps on pytest-tornado's
``io_loop``, asyncio's loop unless ``pytest --event-loop uvloop`` (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from typing import Any

import pytest
import uvloop  # a dependency on Linux (setup.cfg)
from pymongo import MongoClient

from service import eventloop
from service.bot import GREETINGS
from service.config import ConfigError, Settings
from service.wechat_client import WeChatSide
from tests.conftest import AES_KEY, APP_ID, TOKEN
from tests.test_shutdown import Service, post, services  # noqa: F401 - fixture


@pytest.mark.slow
@pytest.mark.parametrize(
    ("choice", "runs"),
    [("auto", "uvloop"), ("uvloop", "uvloop"), ("asyncio", "asyncio")],
)
def test_serve_answers_on_each_event_loop(tmp_path, services, mongo_uri, choice, runs):  # noqa: F811
    name = f"test_{uuid.uuid4().hex[:12]}"
    service = Service(
        tmp_path,
        DATA_DIR=str(tmp_path / "data"),
        MONGODB_URI=mongo_uri,
        MONGODB_DB=name,
        WECHAT_APP_ID=APP_ID,
        WECHAT_ENCODING_AES_KEY=AES_KEY,
        WECHAT_MESSAGE_MODE="safe",
        EVENT_LOOP=choice,
    )
    services.append(service)
    service.wait_ready()
    wanted = f"uvloop {uvloop.__version__}" if runs == "uvloop" else "asyncio"
    service.wait_log(f"event loop: {wanted} (EVENT_LOOP={choice})")

    wechat = WeChatSide(TOKEN, encoding_aes_key=AES_KEY, app_id=APP_ID)
    xml = wechat.text("user-loop", "hello")
    first = post(service.url, wechat.sign(xml, "aes"))
    reply = wechat.open_reply(first)
    assert reply["ToUserName"] == "user-loop"
    assert reply["Content"] in GREETINGS
    # WeChat's retry of the same message: the stored reply, not a second answer.
    again = wechat.open_reply(post(service.url, wechat.sign(xml, "aes")))
    assert again["Content"] == reply["Content"]

    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(60) == 0
    log = service.log
    assert "stopped" in log
    assert "Traceback" not in log

    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
    try:
        assert client[name].messages.count_documents({"openid": "user-loop"}) == 1
    finally:
        client.drop_database(name)
        client.close()


def test_event_loop_setting_is_read_and_checked():
    assert Settings.from_env({"WECHAT_TOKEN": "t"}).event_loop == "auto"
    assert Settings.from_env({"WECHAT_TOKEN": "t", "EVENT_LOOP": "asyncio"}).event_loop == "asyncio"
    with pytest.raises(ConfigError, match="EVENT_LOOP must be auto, uvloop or asyncio"):
        Settings.from_env({"WECHAT_TOKEN": "t", "EVENT_LOOP": "trio"})


def test_each_choice_makes_its_loop():
    for choice, kind in (("auto", uvloop.Loop), ("uvloop", uvloop.Loop)):
        loop = eventloop.loop_factory(choice)()
        try:
            assert isinstance(loop, kind)
            assert eventloop.describe(loop, choice).startswith("uvloop ")
        finally:
            loop.close()
    loop = eventloop.loop_factory("asyncio")()
    try:
        assert not isinstance(loop, uvloop.Loop)
        assert eventloop.describe(loop, "asyncio") == "asyncio (EVENT_LOOP=asyncio)"
    finally:
        loop.close()


def test_without_uvloop_auto_falls_back_and_uvloop_is_an_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "uvloop", None)  # what an install without it sees
    assert eventloop.loop_factory("auto") is eventloop.ASYNCIO_LOOP
    with pytest.raises(ConfigError, match="uvloop is not installed"):
        eventloop.loop_factory("uvloop")


def test_run_returns_the_result_on_the_chosen_loop():
    async def kind() -> str:
        return type(asyncio.get_running_loop()).__module__.split(".")[0]

    assert eventloop.run(kind(), "uvloop") == "uvloop"
    assert eventloop.run(kind(), "asyncio") == "asyncio"


def test_serve_leaves_the_process_wide_loop_choice_alone(io_loop, request):
    """Importing and running ``serve`` installs no event loop policy: the suite's in-process
    apps run on the loop ``--event-loop`` asks for (asyncio's unless told otherwise)."""
    import service.server  # noqa: F401 - its import must not change the policy

    wanted = request.config.getoption("--event-loop")
    assert isinstance(io_loop.asyncio_loop, uvloop.Loop) == (wanted == "uvloop")
