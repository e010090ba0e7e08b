"""The reply budget (WeChat waits 5 s): a reply that is not ready in time becomes ``success`` now
and a customer-service message later, exactly once, whatever WeChat's retries do meanwhile.

The slow step is a survey step that waits until the test releases it (``SlowSurvey``), so no test
depends on how fast this machine is. Customer-service messages go to the fake WeChat API server.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from service.app import make_app
from service.bot import GREETINGS
from service.config import Settings
from service.inbox import BUSY_TEXT
from tests.ops_helpers import SlowSurvey, close_app, serve_app, until

BUDGET = 0.5  # seconds; small so the tests are quick (the default is 4)


@pytest.fixture
def slow() -> SlowSurvey:
    return SlowSurvey()


@pytest.fixture
def guard_settings(wechat_settings: Settings) -> Settings:
    return wechat_settings.replace(reply_budget=BUDGET)


@pytest.fixture
def app(io_loop: Any, guard_settings: Settings, db: Any, slow: SlowSurvey) -> Any:
    application = make_app(guard_settings, db=db, surveys=slow)
    yield application
    slow.release.set()
    io_loop.run_sync(lambda: close_app(application))


def custom_texts(fake: Any) -> list[tuple[str, str]]:
    return [(m["touser"], m["text"]["content"]) for m in fake.sent if m.get("msgtype") == "text"]


async def stored(db: Any, key: str, **expected: Any) -> dict[str, Any]:
    """The stored message once it has the ``expected`` fields."""

    async def check() -> dict[str, Any] | None:
        doc = await db.messages.find_one({"_id": key})
        if doc is not None and all(doc.get(k) == v for k, v in expected.items()):
            return doc
        return None

    return await until(check)


@pytest.mark.gen_test
async def test_slow_reply_is_success_now_and_one_custom_message_later(
    app, send, wechat, db, slow, fake_wechat_api
):
    xml = wechat.text("user-slow", SlowSurvey.TRIGGER, msg_id=7001)
    response, _reply = await send(xml)
    assert response.body == b"success"  # the budget ran out while the survey step was busy
    assert slow.calls == 1

    # WeChat's retries arrive while the reply is still being produced: they get "success" and
    # run nothing (no second bot run, no second message).
    for _ in range(2):
        retry, _ = await send(xml)
        assert retry.body == b"success"
    assert slow.calls == 1
    assert custom_texts(fake_wechat_api) == []

    slow.release.set()
    doc = await stored(db, "msg:7001", delivery_status="sent")
    assert custom_texts(fake_wechat_api) == [("user-slow", "让你久等了：这是第 1 次计算的回复")]
    assert doc["delivery"] == "custom"
    assert doc["reply_text"] == "让你久等了：这是第 1 次计算的回复"

    # A retry after the delivery: still "success", still one message, one stored document.
    late_retry, _ = await send(xml)
    assert late_retry.body == b"success"
    assert slow.calls == 1
    assert len(fake_wechat_api.sent) == 1
    assert await db.messages.count_documents({}) == 1

    metrics = app.settings["metrics"]
    assert metrics.value("wechat_survey_late_replies_total", result="sent") == 1
    assert metrics.value("wechat_survey_requests_total", outcome="late") == 1
    assert metrics.value("wechat_survey_requests_total", outcome="duplicate") == 3
    assert metrics.value("wechat_survey_messages_total", type="text") == 1


@pytest.mark.gen_test
async def test_concurrent_tries_of_a_slow_message_run_the_bot_once(
    app, send, wechat, db, slow, fake_wechat_api
):
    xml = wechat.text("user-burst", SlowSurvey.TRIGGER, msg_id=7002)
    responses = await asyncio.gather(*(send(xml) for _ in range(3)))
    assert [r.body for r, _ in responses] == [b"success"] * 3
    slow.release.set()
    await stored(db, "msg:7002", delivery_status="sent")
    assert slow.calls == 1
    assert custom_texts(fake_wechat_api) == [("user-burst", "让你久等了：这是第 1 次计算的回复")]


@pytest.mark.gen_test
async def test_reply_in_time_is_passive_and_nothing_is_sent(
    app, send, wechat, db, slow, fake_wechat_api
):
    slow.release.set()  # the survey step is quick this time
    _response, reply = await send(wechat.text("user-quick", SlowSurvey.TRIGGER, msg_id=7003))
    assert reply["Content"] == "让你久等了：这是第 1 次计算的回复"
    _, greeting = await send(wechat.text("user-quick", "hello", msg_id=7004))
    assert greeting["Content"] in GREETINGS
    doc = await db.messages.find_one({"_id": "msg:7003"})
    assert doc["delivery"] == "passive"
    assert "delivery_status" not in doc
    assert fake_wechat_api.sent == []


@pytest.mark.gen_test
async def test_retry_at_another_process_after_the_late_reply_gets_success(
    app, send, wechat, db, slow, fake_wechat_api, guard_settings, http_client
):
    xml = wechat.text("user-two", SlowSurvey.TRIGGER, msg_id=7005)
    first, _ = await send(xml)
    assert first.body == b"success"
    slow.release.set()
    await stored(db, "msg:7005", delivery_status="sent")

    # Another process (its own app, same database) gets WeChat's retry. It has not seen the
    # message, so it runs its bot, but the stored document says the reply went out as a
    # customer-service message: it answers "success" and sends nothing.
    quick = SlowSurvey(answer="另一个进程的回复")
    quick.release.set()
    other = make_app(guard_settings, db=db, surveys=quick)
    server, other_url = serve_app(other)
    try:
        response = await http_client.fetch(
            wechat.sign(xml).url(other_url), method="POST", body=wechat.sign(xml).body
        )
    finally:
        server.stop()
        await close_app(other)
    assert response.body == b"success"
    assert custom_texts(fake_wechat_api) == [("user-two", "让你久等了：这是第 1 次计算的回复")]
    assert await db.messages.count_documents({}) == 1


@pytest.mark.gen_test
async def test_late_reply_is_not_sent_when_another_process_answered_in_time(
    app, send, wechat, db, slow, fake_wechat_api, guard_settings, http_client
):
    xml = wechat.text("user-race", SlowSurvey.TRIGGER, msg_id=7006)
    first, _ = await send(xml)
    assert first.body == b"success"  # this process is stuck on the slow step

    quick = SlowSurvey(answer="另一个进程的回复")
    quick.release.set()
    other = make_app(guard_settings, db=db, surveys=quick)
    server, other_url = serve_app(other)
    try:
        signed = wechat.sign(xml)
        response = await http_client.fetch(signed.url(other_url), method="POST", body=signed.body)
        assert wechat.open_reply(response.body)["Content"] == "另一个进程的回复"

        slow.release.set()  # the first process finishes late and loses the insert
        await until(lambda: app.settings["guard"].in_flight == 0)
    finally:
        server.stop()
        await close_app(other)
    doc = await db.messages.find_one({"_id": "msg:7006"})
    assert doc["delivery"] == "passive"
    assert doc["reply_text"] == "另一个进程的回复"
    assert fake_wechat_api.sent == []
    assert app.settings["metrics"].value("wechat_survey_late_replies_total", result="sent") == 0


@pytest.mark.gen_test
async def test_bot_stuck_past_the_compute_limit_is_given_up_with_an_apology(
    app, send, wechat, db, slow, fake_wechat_api
):
    # The compute limit is armed when the budget runs out; the stuck step is never released.
    app.settings["guard"].compute_limit = 1.0
    response, _ = await send(wechat.text("user-stuck", SlowSurvey.TRIGGER, msg_id=7008))
    assert response.body == b"success"
    doc = await stored(db, "msg:7008", delivery_status="sent")
    assert doc["delivery"] == "custom"
    assert doc["reply_text"] == BUSY_TEXT
    assert custom_texts(fake_wechat_api) == [("user-stuck", BUSY_TEXT)]
    assert slow.calls == 1


@pytest.fixture
def no_api_app(io_loop: Any, settings: Settings, db: Any, slow: SlowSurvey) -> Any:
    """No AppSecret: the service cannot send customer-service messages."""
    application = make_app(settings.replace(reply_budget=BUDGET), db=db, surveys=slow)
    yield application
    slow.release.set()
    io_loop.run_sync(lambda: close_app(application))


@pytest.mark.gen_test
async def test_late_reply_without_api_credentials_is_logged_and_recorded(
    no_api_app, http_client, wechat, db, slow, caplog
):
    assert no_api_app.settings["wechat_api"] is None
    server, url = serve_app(no_api_app)
    signed = wechat.sign(wechat.text("user-noapi", SlowSurvey.TRIGGER, msg_id=7007))
    try:
        with caplog.at_level(logging.WARNING, logger="service.guard"):
            response = await http_client.fetch(signed.url(url), method="POST", body=signed.body)
            assert response.body == b"success"
            slow.release.set()
            doc = await stored(db, "msg:7007", delivery_status="undeliverable")
    finally:
        server.stop()
    assert doc["delivery"] == "custom"
    assert any("cannot be delivered" in r.getMessage() for r in caplog.records)
    metrics = no_api_app.settings["metrics"]
    assert metrics.value("wechat_survey_late_replies_total", result="undeliverable") == 1
