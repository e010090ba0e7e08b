"""The /wechat endpoint against a real server on loopback and a real database."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import time
from urllib.parse import urlencode

import pytest
from tornado.httpclient import HTTPClientError

from service.app import make_app
from service.bot import GREETINGS, UNKNOWN_TEXT, WELCOME_TEXT
from service.inbox import user_hash
from service.wechat import TEXT_LIMIT_BYTES, sign
from tests.conftest import TOKEN
from tests.ops_helpers import close_app, serve_app

MODES = ["plain", "aes", "compat"]


async def fetch_code(http_client, url, **kw):
    response = await http_client.fetch(url, raise_error=False, **kw)
    return response.code, response


# -- handshake -------------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_handshake_echoes_echostr(http_client, base_url, wechat):
    q = wechat.handshake("echo-123")
    r = await http_client.fetch(f"{base_url}/wechat?{urlencode(q)}")
    assert r.code == 200
    assert r.body == b"echo-123"


@pytest.mark.gen_test
@pytest.mark.parametrize("drop", ["signature", "timestamp", "nonce", "echostr"])
async def test_handshake_missing_parameter_is_400(http_client, base_url, wechat, drop):
    q = wechat.handshake("echo")
    del q[drop]
    code, _ = await fetch_code(http_client, f"{base_url}/wechat?{urlencode(q)}")
    assert code == 400


@pytest.mark.gen_test
async def test_handshake_wrong_signature_is_403(http_client, base_url, wechat):
    q = wechat.handshake("echo")
    q["signature"] = sign("not-the-token", q["timestamp"], q["nonce"])
    code, r = await fetch_code(http_client, f"{base_url}/wechat?{urlencode(q)}")
    assert code == 403
    assert b"echo" not in r.body


# -- forged requests touch nothing -----------------------------------------------------------


@pytest.mark.gen_test
@pytest.mark.parametrize("mode", MODES)
async def test_forged_post_is_403_and_stores_nothing(http_client, base_url, wechat, db, app, mode):
    signed = wechat.sign(wechat.text("user-f", "你好"), mode)
    query = dict(signed.query, signature="0" * 40)
    url = f"{base_url}/wechat?{urlencode(query)}"
    code, _ = await fetch_code(http_client, url, method="POST", body=signed.body)
    assert code == 403
    await app.settings["users"].flush()
    assert await db.messages.count_documents({}) == 0
    assert await db.users.count_documents({}) == 0


@pytest.mark.gen_test
async def test_forged_msg_signature_in_safe_mode_is_403(http_client, base_url, wechat, db):
    signed = wechat.sign(wechat.text("user-f", "hi"), "aes")
    query = dict(signed.query, msg_signature="1" * 40)
    code, _ = await fetch_code(
        http_client, f"{base_url}/wechat?{urlencode(query)}", method="POST", body=signed.body
    )
    assert code == 403
    assert await db.messages.count_documents({}) == 0


# -- every message type, every mode ----------------------------------------------------------

MESSAGES = {
    "voice": dict(MediaId="media-v", Format="amr"),  # no Recognition: 语音识别 off
    "video": dict(MediaId="media-vid", ThumbMediaId="thumb"),
    "shortvideo": dict(MediaId="media-sv", ThumbMediaId="thumb"),
    "location": dict(Location_X="38.9", Location_Y="121.6", Scale="15", Label="金石滩"),
    "link": dict(Title="标题", Description="描述", Url="https://example.com/a"),
}


@pytest.mark.gen_test
@pytest.mark.parametrize("mode", MODES)
async def test_text_gets_a_greeting_and_is_stored(send, wechat, db, app, mode):
    xml = wechat.text("user-a", "随便说点什么", msg_id=1001)
    r, reply = await send(xml, mode)
    assert r.code == 200
    assert reply["MsgType"] == "text"
    assert reply["Content"] in GREETINGS
    assert reply["ToUserName"] == "user-a"
    assert reply["FromUserName"] == wechat.account
    stored = await db.messages.find_one({"_id": "msg:1001"})
    assert stored["openid"] == "user-a"
    assert stored["type"] == "text"
    assert stored["text"] == "随便说点什么"
    assert stored["mode"] == mode
    assert stored["reply_text"] == reply["Content"]
    assert stored["raw"].startswith("<xml>") and "随便说点什么" in stored["raw"]
    assert TOKEN not in str(stored)
    await app.settings["users"].flush()
    user = await db.users.find_one({"_id": "user-a"})
    assert user["messages"] == 1
    assert user["first_seen"] == user["last_seen"]


@pytest.mark.gen_test
async def test_one_log_line_per_request_with_type_user_hash_latency_outcome(
    send, wechat, http_client, base_url, caplog
):
    xml = wechat.text("user-logged", "你好", msg_id=1002)
    with caplog.at_level(logging.INFO, logger="handlers.wechat"):
        await send(xml)
        await send(xml)  # WeChat's retry
        code, _ = await post_raw(http_client, base_url, wechat, b"<xml><MsgType>text</xml>")
    assert code == 400
    lines = [r.getMessage() for r in caplog.records if r.name == "handlers.wechat"]
    assert len(lines) == 3, lines
    user = user_hash("user-logged")
    assert re.fullmatch(
        rf"wechat POST type=text user={user} status=200 outcome=ok latency=\d+\.\dms", lines[0]
    )
    assert re.fullmatch(
        rf"wechat POST type=text user={user} status=200 outcome=duplicate latency=\d+\.\dms",
        lines[1],
    )
    assert re.fullmatch(r"wechat POST type=- user=- status=400 outcome=bad-request .*", lines[2])
    assert not any("user-logged" in line for line in lines)


@pytest.mark.gen_test
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("msg_type", sorted(MESSAGES))
async def test_other_types_get_the_polite_text(send, wechat, db, mode, msg_type):
    xml = wechat.message_xml("user-b", msg_type, msg_id=2002, **MESSAGES[msg_type])
    r, reply = await send(xml, mode)
    assert r.code == 200
    assert reply["MsgType"] == "text"
    assert reply["Content"] == UNKNOWN_TEXT
    stored = await db.messages.find_one({"_id": "msg:2002"})
    assert stored["type"] == msg_type
    for name, value in MESSAGES[msg_type].items():
        assert stored["fields"][name] == value


@pytest.mark.gen_test
@pytest.mark.parametrize("mode", MODES)
async def test_image_without_media_id_gets_a_text(send, wechat, mode):
    xml = wechat.message_xml("user-i", "image", PicUrl="http://mmbiz/x.jpg", MediaId="m1")
    _, reply = await send(xml, mode)
    assert reply["MsgType"] == "text"
    assert "图片" in reply["Content"]


def test_image_media_id_setting_reaches_the_bot(settings, db):
    from service.app import make_app

    app = make_app(settings.replace(image_media_id="from-settings"), db=db)
    assert app.settings["image_reply"].media_id == "from-settings"
    assert app.settings["bot"].image is app.settings["image_reply"]


@pytest.mark.gen_test
@pytest.mark.parametrize("mode", MODES)
async def test_image_gets_the_configured_image(send, wechat, db, app, mode):
    app.settings["image_reply"].media_id = "configured-media-id"
    xml = wechat.message_xml(
        "user-i", "image", msg_id=3003, PicUrl="http://mmbiz/x.jpg", MediaId="m1"
    )
    _, reply = await send(xml, mode)
    assert reply["MsgType"] == "image"
    assert reply["Image"]["MediaId"] == "configured-media-id"
    stored = await db.messages.find_one({"_id": "msg:3003"})
    assert stored["reply"]["media_id"] == "configured-media-id"


# -- events -----------------------------------------------------------------------------------


@pytest.mark.gen_test
@pytest.mark.parametrize("mode", MODES)
async def test_subscribe_gets_the_welcome_and_marks_the_user(send, wechat, db, app, mode):
    _, reply = await send(wechat.event("user-s", "subscribe", create_time=1700000000), mode)
    assert reply["MsgType"] == "text"
    assert reply["Content"].startswith(WELCOME_TEXT)
    stored = await db.messages.find_one({"_id": "ev:user-s:1700000000:subscribe"})
    assert stored["kind"] == "event:subscribe"
    await app.settings["users"].flush()
    assert (await db.users.find_one({"_id": "user-s"}))["subscribed"] is True

    _, reply = await send(wechat.event("user-s", "unsubscribe", create_time=1700000100), mode)
    assert reply == {}  # body "success"
    await app.settings["users"].flush()
    user = await db.users.find_one({"_id": "user-s"})
    assert user["subscribed"] is False
    assert user["messages"] == 2


@pytest.mark.gen_test
async def test_subscribe_from_a_qr_scene(send, wechat, db):
    xml = wechat.event("user-q", "subscribe", EventKey="qrscene_123", Ticket="TICKET")
    _, reply = await send(xml)
    assert reply["Content"].startswith(WELCOME_TEXT)
    stored = await db.messages.find_one({"openid": "user-q"})
    assert stored["fields"]["EventKey"] == "qrscene_123"


@pytest.mark.gen_test
@pytest.mark.parametrize(
    ("event", "fields"),
    [
        ("SCAN", dict(EventKey="123", Ticket="T")),
        ("LOCATION", dict(Latitude="23.1", Longitude="113.3", Precision="119.3")),
        ("VIEW", dict(EventKey="https://example.com/")),
    ],
)
async def test_silent_events_answer_success(http_client, base_url, wechat, db, event, fields):
    signed = wechat.sign(wechat.event("user-e", event, **fields))
    r = await http_client.fetch(signed.url(base_url), method="POST", body=signed.body)
    assert r.body == b"success"
    stored = await db.messages.find_one({"openid": "user-e"})
    assert stored["event"] == event.lower()
    assert stored["reply"]["kind"] == "success"


@pytest.mark.gen_test
async def test_click_with_an_unknown_key_and_unknown_events_do_not_crash(send, wechat, db):
    _, reply = await send(wechat.event("user-c", "CLICK", EventKey="NO_SUCH_KEY", create_time=1))
    assert reply["Content"] == UNKNOWN_TEXT
    _, reply = await send(wechat.event("user-c", "brand_new_event", create_time=2))
    assert reply["Content"] == UNKNOWN_TEXT
    _, reply = await send(wechat.message_xml("user-c", "miniprogrampage", msg_id=77, Title="t"))
    assert reply["Content"] == UNKNOWN_TEXT
    assert await db.messages.count_documents({"openid": "user-c"}) == 3


# -- exactly once -----------------------------------------------------------------------------


@pytest.mark.gen_test
@pytest.mark.parametrize("mode", ["plain", "aes"])
async def test_concurrent_retries_are_stored_once_with_identical_replies(
    send, wechat, db, app, mode
):
    xml = wechat.text("user-r", "在吗", msg_id=4004)
    results = await asyncio.gather(*(send(xml, mode) for _ in range(3)))
    replies = [reply for _, reply in results]
    assert all(r.code == 200 for r, _ in results)
    assert replies[0] == replies[1] == replies[2]
    assert await db.messages.count_documents({"_id": "msg:4004"}) == 1
    # a late retry, after the first answer, gets the same reply too
    _, late = await send(xml, mode)
    assert late == replies[0]
    await app.settings["users"].flush()
    assert (await db.users.find_one({"_id": "user-r"}))["messages"] == 1


@pytest.mark.gen_test
async def test_event_retries_count_once(send, wechat, db, app):
    xml = wechat.event("user-r2", "subscribe", create_time=1700000500)
    await asyncio.gather(*(send(xml) for _ in range(3)))
    assert await db.messages.count_documents({"openid": "user-r2"}) == 1
    await app.settings["users"].flush()
    assert (await db.users.find_one({"_id": "user-r2"}))["messages"] == 1


@pytest.mark.gen_test
async def test_ordinary_text_costs_two_round_trips(send, wechat, db, db_counter):
    await send(wechat.text("user-warm", "warm up"))  # connection pool and server handshake
    before = db_counter.snapshot()["by_command"]
    await send(wechat.text("user-rt", "hello"))
    after = db_counter.snapshot()["by_command"]
    spent = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    # The definitions' watchers wait on their change streams in the background (getMore, about
    # once a second each): not a round trip of the message.
    spent = {k: v for k, v in spent.items() if v and k != "getMore"}
    assert sum(spent.values()) <= 2, spent


# -- long replies -----------------------------------------------------------------------------


def test_long_text_is_cut_on_a_character_boundary():
    from service.wechat import Reply

    reply = Reply.text("爆肝" * 2000)
    encoded = reply.content.encode("utf-8")
    assert len(encoded) <= TEXT_LIMIT_BYTES
    assert reply.content.endswith("…")
    encoded.decode("utf-8")  # strict: no broken character
    assert Reply.text("短").content == "短"


# -- bad input --------------------------------------------------------------------------------


async def post_raw(http_client, base_url, wechat, body, **query_overrides):
    signed = wechat.sign("<xml></xml>")
    query = dict(signed.query, **query_overrides)
    return await fetch_code(
        http_client, f"{base_url}/wechat?{urlencode(query)}", method="POST", body=body
    )


BAD_BODIES = {
    "malformed": b"<xml><ToUserName>a</ToUserName",
    "not-xml": b"hello",
    "wrong-root": b"<html><body/></html>",
    "missing-fields": b"<xml><Content>x</Content></xml>",
    "bad-create-time": (
        b"<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName>"
        b"<CreateTime>soon</CreateTime><MsgType>text</MsgType></xml>"
    ),
    "doctype-entity": (
        b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY x "boom">]>'
        b"<xml><ToUserName>a</ToUserName><FromUserName>&x;</FromUserName>"
        b"<CreateTime>1</CreateTime><MsgType>text</MsgType></xml>"
    ),
    "billion-laughs": (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]><xml>&lol2;</xml>'
    ),
    "external-entity": (
        b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        b"<xml><Content>&e;</Content></xml>"
    ),
    "not-utf8": "<xml><ToUserName>a</ToUserName><Content>你好</Content></xml>".encode("gbk"),
    "empty": b"",
}


@pytest.mark.gen_test
@pytest.mark.parametrize("case", sorted(BAD_BODIES))
async def test_bad_bodies_are_400_and_store_nothing(http_client, base_url, wechat, db, case):
    code, r = await post_raw(http_client, base_url, wechat, BAD_BODIES[case])
    assert code == 400, r.body
    assert await db.messages.count_documents({}) == 0


@pytest.mark.gen_test
# Tornado's simple_httpclient, answered 413 while still sending the body, may drop its socket
# without closing it.
@pytest.mark.leaks_sockets
async def test_oversized_body_is_413(http_client, base_url, wechat, db):
    body = b"<xml><Content>" + b"a" * (1024 * 1024) + b"</Content></xml>"
    code, _ = await post_raw(http_client, base_url, wechat, body)
    assert code == 413
    assert await db.messages.count_documents({}) == 0


@pytest.mark.gen_test
async def test_wrong_app_id_inside_the_payload_is_400(http_client, base_url, db):
    from service.wechat_client import WeChatSide
    from tests.conftest import AES_KEY

    other = WeChatSide(TOKEN, encoding_aes_key=AES_KEY, app_id="wx_other_account")
    signed = other.sign(other.text("user-x", "hi"), "aes")
    code, _ = await fetch_code(http_client, signed.url(base_url), method="POST", body=signed.body)
    assert code == 400
    assert await db.messages.count_documents({}) == 0


@pytest.mark.gen_test
@pytest.mark.parametrize("encrypt", ["%%%not-base64%%%", "QUJD", "A" * 64])
async def test_corrupt_encrypt_is_400(http_client, base_url, wechat, db, encrypt):
    signed = wechat.sign(wechat.text("user-x", "hi"), "plain")
    ts, nonce = signed.query["timestamp"], signed.query["nonce"]
    query = dict(signed.query, encrypt_type="aes", msg_signature=sign(TOKEN, ts, nonce, encrypt))
    body = f"<xml><ToUserName>gh</ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    code, _ = await fetch_code(
        http_client, f"{base_url}/wechat?{urlencode(query)}", method="POST", body=body.encode()
    )
    assert code == 400
    assert await db.messages.count_documents({}) == 0


@pytest.mark.gen_test
async def test_safe_mode_without_encrypt_is_400(http_client, base_url, wechat, db):
    signed = wechat.sign(wechat.text("user-x", "hi"), "plain")
    query = dict(signed.query, encrypt_type="aes", msg_signature="0" * 40)
    code, _ = await fetch_code(
        http_client, f"{base_url}/wechat?{urlencode(query)}", method="POST", body=signed.body
    )
    assert code == 400


def test_http_client_error_type_is_what_raise_error_gives():
    # Guards the helper above: fetch(raise_error=False) must not raise for 4xx.
    assert issubclass(HTTPClientError, Exception)


# -- hostile shapes and numbers: refused before the bot runs (issue 14) ------------------------


def _with(xml: str, extra: str) -> str:
    return xml.replace("</xml>", extra + "</xml>")


@pytest.mark.gen_test
@pytest.mark.parametrize("mode", MODES)
async def test_deep_nesting_is_400_and_stores_nothing(send, wechat, db, mode):
    xml = _with(wechat.text("user-deep", "hi", msg_id=9001), "<a>" * 600 + "</a>" * 600)
    r, _ = await send(xml, mode, raise_error=False)
    assert r.code == 400, r.body
    assert await db.messages.count_documents({}) == 0
    assert await db.survey_sessions.count_documents({}) == 0


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "create_time",
    ["1000000000000", "100000000000000000000", "-1000000000000", "１２３", "1_000", "+5", "1e9"],
)
async def test_create_time_out_of_range_is_400_and_the_bot_does_not_run(
    send, wechat, db, create_time
):
    # The survey keyword: today the bot starts the survey, then storing the message fails.
    xml = re.sub(
        r"<CreateTime>\d+</CreateTime>",
        f"<CreateTime>{create_time}</CreateTime>",
        wechat.text("user-time", "爆肝度调查", msg_id=9002),
    )
    r, _ = await send(xml, raise_error=False)
    assert r.code == 400, r.body
    assert await db.messages.count_documents({}) == 0
    assert await db.survey_sessions.count_documents({}) == 0


# -- the replay window: a signed URL is valid for SIGNATURE_MAX_AGE seconds (issue 14) --------


def _refused(app, reason):
    return app.settings["metrics"].value("wechat_survey_refused_total", reason=reason)


@pytest.mark.gen_test
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("shift", "reason"),
    [(-360, "stale-timestamp"), (360, "stale-timestamp"), (-(10**6), "stale-timestamp")],
)
async def test_a_stale_signed_post_is_403_counted_and_logged_without_the_query(
    http_client, base_url, wechat, db, app, caplog, mode, shift, reason
):
    timestamp = str(int(time.time()) + shift)
    signed = wechat.sign(wechat.text("user-old", "旧消息", msg_id=9100), mode, timestamp=timestamp)
    with caplog.at_level(logging.INFO):
        code, _ = await fetch_code(
            http_client, signed.url(base_url), method="POST", body=signed.body
        )
    assert code == 403
    assert await db.messages.count_documents({}) == 0
    assert _refused(app, reason) == 1
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "refused=stale-timestamp" in logged
    for secret in (signed.query["signature"], signed.query["nonce"], "user-old"):
        assert secret not in logged


@pytest.mark.gen_test
@pytest.mark.parametrize("timestamp", ["soon", "1e9", "-5", "1.5", "１７００"])
async def test_a_timestamp_that_is_not_a_number_is_403(
    http_client, base_url, wechat, app, db, timestamp
):
    signed = wechat.sign(wechat.text("user-ts", "hi", msg_id=9101), timestamp=timestamp)
    code, _ = await fetch_code(http_client, signed.url(base_url), method="POST", body=signed.body)
    assert code == 403
    assert _refused(app, "bad-timestamp") == 1
    assert await db.messages.count_documents({}) == 0


@pytest.mark.gen_test
async def test_a_timestamp_inside_the_window_is_accepted(send, http_client, base_url, wechat, db):
    signed = wechat.sign(
        wechat.text("user-skew", "hi", msg_id=9102), timestamp=str(int(time.time()) - 250)
    )
    r = await http_client.fetch(signed.url(base_url), method="POST", body=signed.body)
    assert r.code == 200
    assert await db.messages.count_documents({"_id": "msg:9102"}) == 1


@pytest.mark.gen_test
async def test_a_stale_handshake_is_403(http_client, base_url, wechat, app):
    q = wechat.handshake("echo-old", timestamp=str(int(time.time()) - 3600))
    code, r = await fetch_code(http_client, f"{base_url}/wechat?{urlencode(q)}")
    assert code == 403
    assert b"echo-old" not in r.body
    assert _refused(app, "stale-timestamp") == 1


@pytest.mark.gen_test
async def test_the_window_is_signature_max_age(http_client, settings, db, wechat):
    app = make_app(settings.replace(signature_max_age=5), db=db)
    server, url = serve_app(app)
    try:
        signed = wechat.sign(wechat.text("user-w", "hi"), timestamp=str(int(time.time()) - 60))
        code, _ = await fetch_code(http_client, signed.url(url), method="POST", body=signed.body)
        assert code == 403
    finally:
        server.stop()
        await close_app(app)


# -- a signed URL is bound to the first message it came with (issue 14) ------------------------


async def _reuse_refused(http_client, first_xml, forged_xml, first_url, forged_url, wechat, app):
    """Send ``first_xml`` to ``first_url``, then its signed URL (timestamp, nonce, signature) with
    ``forged_xml`` as the body to ``forged_url``: refused and counted by ``app``."""
    first = wechat.sign(first_xml)
    r = await http_client.fetch(first.url(first_url), method="POST", body=first.body)
    assert r.code == 200
    forged = dataclasses.replace(first, body=forged_xml.encode("utf-8"))
    code, _ = await fetch_code(http_client, forged.url(forged_url), method="POST", body=forged.body)
    assert code == 403
    assert _refused(app, "reused-signature") == 1
    return first, r


@pytest.mark.gen_test
async def test_a_signed_url_reused_with_another_body_is_403_and_runs_nothing(
    http_client, base_url, wechat, db, app
):
    # The URL, seen in a log, with a survey answer of someone else's.
    first, r = await _reuse_refused(
        http_client,
        wechat.text("user-seen", "你好", msg_id=9200),
        wechat.text("user-victim", "爆肝度调查", msg_id=9201),
        base_url,
        base_url,
        wechat,
        app,
    )
    assert await db.messages.count_documents({"openid": "user-victim"}) == 0
    assert await db.survey_sessions.count_documents({"openid": "user-victim"}) == 0
    # A retry of the first message with its own URL still gets the stored reply.
    again = await http_client.fetch(first.url(base_url), method="POST", body=first.body)
    assert (again.code, again.body) == (200, r.body)
    # And the forged message itself, sent properly signed later, is an ordinary message.
    fresh = wechat.sign(wechat.text("user-victim", "你好", msg_id=9201))
    ok = await http_client.fetch(fresh.url(base_url), method="POST", body=fresh.body)
    assert ok.code == 200
    assert await db.messages.count_documents({"_id": "msg:9201"}) == 1


@pytest.mark.gen_test(timeout=60)
async def test_the_binding_holds_across_processes(http_client, settings, db, wechat):
    """Two processes on one database: the stored document's unique ``signed`` decides."""
    async with served(settings, db) as (_, url_a), served(settings, db) as (app_b, url_b):
        first, r = await _reuse_refused(
            http_client,
            wechat.text("user-two", "你好", msg_id=9210),
            wechat.text("user-other", "你好", msg_id=9211),
            url_a,
            url_b,
            wechat,
            app_b,
        )
        assert await db.messages.count_documents({"_id": "msg:9211"}) == 0
        # WeChat's retry of the first message with the same URL, answered by the other process.
        again = await http_client.fetch(first.url(url_b), method="POST", body=first.body)
        assert (again.code, again.body) == (200, r.body)
        assert await db.messages.count_documents({"_id": "msg:9210"}) == 1


# -- WECHAT_MESSAGE_MODE: safe means encrypted only (issue 14) ----------------------------------


@contextlib.asynccontextmanager
async def served(settings, db, **changes):
    app = make_app(settings.replace(**changes), db=db)
    server, url = serve_app(app)
    try:
        yield app, url
    finally:
        server.stop()
        await close_app(app)


@pytest.mark.gen_test
@pytest.mark.parametrize("message_mode", ["safe", ""])  # "": the default with an AES key
async def test_safe_mode_refuses_plaintext_and_accepts_encrypted(
    http_client, settings, db, wechat, message_mode
):
    async with served(settings, db, message_mode=message_mode) as (app, url):
        assert app.settings["config"].effective_message_mode == "safe"
        signed = wechat.sign(wechat.text("user-p", "明文", msg_id=9200))
        code, _ = await fetch_code(http_client, signed.url(url), method="POST", body=signed.body)
        assert code == 403
        assert await db.messages.count_documents({}) == 0
        assert _refused(app, "plaintext-refused") == 1
        for n, shape in enumerate(["aes", "compat"]):
            signed = wechat.sign(wechat.text("user-p", "密文", msg_id=9201 + n), shape)
            r = await http_client.fetch(signed.url(url), method="POST", body=signed.body)
            assert r.code == 200
            assert wechat.open_reply(r.body)["ToUserName"] == "user-p"
        assert await db.messages.count_documents({"mode": {"$in": ["aes", "compat"]}}) == 2
        # URL verification stays a plain signature in every mode.
        q = wechat.handshake("echo-safe")
        assert (await http_client.fetch(f"{url}/wechat?{urlencode(q)}")).body == b"echo-safe"


@pytest.mark.gen_test
async def test_plain_mode_refuses_encrypted_requests(http_client, settings, db, wechat):
    async with served(settings, db, message_mode="plain") as (app, url):
        signed = wechat.sign(wechat.text("user-q", "hi", msg_id=9300), "aes")
        code, _ = await fetch_code(http_client, signed.url(url), method="POST", body=signed.body)
        assert code == 400
        assert _refused(app, "encrypted-refused") == 1
        signed = wechat.sign(wechat.text("user-q", "hi", msg_id=9301))
        assert (
            await http_client.fetch(signed.url(url), method="POST", body=signed.body)
        ).code == 200
        assert await db.messages.count_documents({}) == 1


@pytest.mark.gen_test
async def test_compat_mode_accepts_both(http_client, settings, db, wechat):
    async with served(settings, db, message_mode="compat") as (_, url):
        for n, shape in enumerate(MODES):
            signed = wechat.sign(wechat.text("user-c", "hi", msg_id=9400 + n), shape)
            r = await http_client.fetch(signed.url(url), method="POST", body=signed.body)
            assert r.code == 200
    assert await db.messages.count_documents({}) == 3


@pytest.mark.gen_test
async def test_refusals_are_counted_by_reason_and_scraped(http_client, base_url, wechat, app):
    signed = wechat.sign(wechat.text("user-m", "hi"))
    forged = dict(signed.query, signature="0" * 40)
    await fetch_code(http_client, f"{base_url}/wechat?{urlencode(forged)}", method="POST", body=b"")
    await post_raw(http_client, base_url, wechat, b"<xml><a>")
    await post_raw(http_client, base_url, wechat, b"<xml>" + b"<a>" * 50 + b"</xml>")
    await fetch_code(http_client, f"{base_url}/wechat?nonce=1", method="POST", body=b"")
    counts = {
        reason: _refused(app, reason)
        for reason in ("signature", "malformed-xml", "xml-limits", "missing-parameter")
    }
    assert counts == {"signature": 1, "malformed-xml": 1, "xml-limits": 1, "missing-parameter": 1}
    scraped = (await http_client.fetch(f"{base_url}/metrics")).body.decode()
    assert 'wechat_survey_refused_total{reason="signature"} 1.0' in scraped
    assert 'wechat_survey_refused_total{reason="stale-timestamp"} 0.0' in scraped
