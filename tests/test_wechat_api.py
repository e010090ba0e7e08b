"""The WeChat API client against the fake WeChat API server (never the real one).

Two ``WeChatAPI`` objects on one database stand for two service processes: each has its own
in-process token copy, worker threads and lease holder id; only MongoDB is shared.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from service.menu import MenuError, load_menu, menu_keys, validate_menu
from service.store import tokens
from service.wechat import Message, Reply
from service.wechat_api import WeChatAPI, WeChatAPIError, make_api

from .fake_wechat_api import FAKE_APP_ID, FAKE_APP_SECRET

OPENID = "oABCD1234567890abcdefghijklm"  # 28 characters, like WeChat's
SEND = "message/custom/send"
ROOT = Path(__file__).resolve().parent.parent
# The smallest valid PNG (1×1, transparent).
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c63000100000500010d0a2db40000000049454e44ae426082"
)


@pytest.fixture
def make(db, fake_wechat_api, io_loop):
    """``make(**options)`` → a WeChatAPI on the fake server (one per simulated process)."""
    made: list[WeChatAPI] = []

    def _make(**options: Any) -> WeChatAPI:
        options.setdefault("retry_delays", (0.01, 0.02, 0.04))
        api = WeChatAPI(
            db,
            app_id=FAKE_APP_ID,
            app_secret=FAKE_APP_SECRET,
            base_url=fake_wechat_api.base_url,
            **options,
        )
        made.append(api)
        return api

    yield _make

    async def close() -> None:
        for api in made:
            await api.close()

    io_loop.run_sync(close)


async def poll(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


# -- delivery -------------------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_replies_are_delivered_as_customer_service_messages(make, fake_wechat_api):
    api = make()
    await api.send_reply(OPENID, Reply.text("你好"))
    await api.send_reply(OPENID, Reply.image("MEDIA-1"))
    await api.send_reply(OPENID, Reply.nothing())  # "success": nothing to send
    await api.send_text(OPENID, "第二条")
    assert fake_wechat_api.sent == [
        {"touser": OPENID, "msgtype": "text", "text": {"content": "你好"}},
        {"touser": OPENID, "msgtype": "image", "image": {"media_id": "MEDIA-1"}},
        {"touser": OPENID, "msgtype": "text", "text": {"content": "第二条"}},
    ]
    assert fake_wechat_api.token_fetches == 1


@pytest.mark.gen_test
async def test_long_text_is_cut_on_a_character_boundary(make, fake_wechat_api):
    await make().send_text(OPENID, "问" * 1000)  # 3000 bytes
    content = fake_wechat_api.sent[0]["text"]["content"]
    assert len(content.encode("utf-8")) <= 2048
    assert content.startswith("问" * 600)
    assert content.endswith("…")


def test_make_api_needs_app_id_and_secret(settings, db):
    assert make_api(settings, db) is None  # conftest's settings have no AppSecret
    api = make_api(settings.replace(app_secret="s", wechat_api_base="http://127.0.0.1:1"), db)
    assert isinstance(api, WeChatAPI)
    assert api.base_url == "http://127.0.0.1:1"


# -- the access token -----------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_two_processes_share_one_token_under_concurrency(make, fake_wechat_api, db):
    fake_wechat_api.delay("token", 0.3)  # widen the window in which they race
    one, two = make(), make()
    got = await asyncio.gather(*[api.access_token() for api in (one, two) for _ in range(10)])
    assert fake_wechat_api.token_fetches == 1
    assert set(got) == {fake_wechat_api.tokens[0]}
    stored = await tokens.load_token(db, FAKE_APP_ID)
    assert stored is not None and stored.value == got[0]
    # Both deliver with it; neither fetches again.
    await asyncio.gather(one.send_text(OPENID, "一"), two.send_text(OPENID, "二"))
    assert len(fake_wechat_api.sent) == 2
    assert fake_wechat_api.token_fetches == 1
    assert one.token_fetches + two.token_fetches == 1


@pytest.mark.gen_test
async def test_a_token_in_mongodb_is_used_without_fetching(make, fake_wechat_api, db):
    token = fake_wechat_api.issue_token()  # as if another process had fetched it
    await tokens.save_token(db, FAKE_APP_ID, token, 7200, fetched_by="elsewhere")
    api = make()
    assert await api.access_token() == token
    await api.send_text(OPENID, "hi")
    assert fake_wechat_api.token_fetches == 0
    assert fake_wechat_api.calls_to(SEND)[0].query["access_token"] == token


@pytest.mark.gen_test
async def test_token_is_refreshed_before_it_expires(make, fake_wechat_api, db):
    # A token with 4 minutes left is inside the 5-minute margin: refreshed.
    old = fake_wechat_api.issue_token()
    await _store_token(db, old, fetched_ago=7200 - 240, lifetime=7200)
    api = make(refresh_margin=300)
    new = await api.access_token()
    assert new != old
    assert fake_wechat_api.token_fetches == 1
    stored = await tokens.load_token(db, FAKE_APP_ID)
    assert stored is not None and stored.value == new


@pytest.mark.gen_test
async def test_token_outside_the_margin_is_kept(make, fake_wechat_api, db):
    current = fake_wechat_api.issue_token()
    await _store_token(db, current, fetched_ago=7200 - 600, lifetime=7200)  # 10 minutes left
    assert await make(refresh_margin=300).access_token() == current
    assert fake_wechat_api.token_fetches == 0


async def _store_token(db, value: str, *, fetched_ago: float, lifetime: float) -> None:
    now = time.time()
    await db[tokens.COLLECTION].replace_one(
        {"_id": f"token:{FAKE_APP_ID}"},
        {
            "value": value,
            "fetched_at": dt.datetime.fromtimestamp(now - fetched_ago, dt.UTC),
            "expires_at": dt.datetime.fromtimestamp(now - fetched_ago + lifetime, dt.UTC),
            "fetched_by": "test",
        },
        upsert=True,
    )


@pytest.mark.gen_test
async def test_a_process_waits_for_the_lease_holder_instead_of_fetching(make, fake_wechat_api, db):
    lease = f"token:{FAKE_APP_ID}"
    assert await tokens.acquire_lease(db, lease, "other-process", ttl=60)
    api = make()
    waiting = asyncio.ensure_future(api.access_token())
    await asyncio.sleep(0.3)
    assert not waiting.done()
    # The other process finishes its refresh.
    token = fake_wechat_api.issue_token()
    await tokens.save_token(db, FAKE_APP_ID, token, 7200, fetched_by="other-process")
    await tokens.release_lease(db, lease, "other-process")
    assert await asyncio.wait_for(waiting, 20) == token
    assert fake_wechat_api.token_fetches == 0


@pytest.mark.gen_test
async def test_an_expired_lease_of_a_crashed_process_is_taken_over(make, fake_wechat_api, db):
    await db[tokens.COLLECTION].insert_one(
        {
            "_id": f"lease:token:{FAKE_APP_ID}",
            "holder": "crashed-process",
            "until": dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1),
        }
    )
    api = make()
    assert await api.access_token() == fake_wechat_api.tokens[0]
    assert fake_wechat_api.token_fetches == 1
    # The lease is given back after the refresh.
    assert await db[tokens.COLLECTION].find_one({"_id": f"lease:token:{FAKE_APP_ID}"}) is None


@pytest.mark.gen_test
async def test_lease_is_exclusive(db):
    assert await tokens.acquire_lease(db, "x", "a", ttl=60)
    assert not await tokens.acquire_lease(db, "x", "b", ttl=60)
    assert await tokens.acquire_lease(db, "x", "a", ttl=60)  # the holder may extend it
    results = await asyncio.gather(*[tokens.acquire_lease(db, "y", f"h{i}", 60) for i in range(8)])
    assert results.count(True) == 1
    await tokens.release_lease(db, "y", "nobody")  # not the holder: no effect
    assert not await tokens.acquire_lease(db, "y", "late", ttl=60)


@pytest.mark.gen_test
@pytest.mark.parametrize("errcode", [40001, 40014, 42001])
async def test_token_error_refreshes_at_once_and_retries_once(make, fake_wechat_api, errcode):
    api = make()
    await api.access_token()
    fake_wechat_api.fail_next(SEND, errcode)
    await api.send_text(OPENID, "hi")
    assert fake_wechat_api.token_fetches == 2
    sends = fake_wechat_api.calls_to(SEND)
    assert len(sends) == 2
    assert sends[0].query["access_token"] == fake_wechat_api.tokens[0]
    assert sends[1].query["access_token"] == fake_wechat_api.tokens[1]
    assert len(fake_wechat_api.sent) == 1


@pytest.mark.gen_test
async def test_revoked_token_is_replaced_once_for_all_processes(make, fake_wechat_api):
    one, two = make(), make()
    await one.access_token()
    await two.access_token()
    fake_wechat_api.revoke_tokens()  # e.g. someone fetched a token elsewhere with the AppSecret
    await one.send_text(OPENID, "一")  # 40001 → refresh → retry
    await two.send_text(OPENID, "二")  # 40001 → finds the new token in MongoDB → retry
    assert fake_wechat_api.token_fetches == 2
    assert len(fake_wechat_api.sent) == 2


@pytest.mark.gen_test
async def test_token_error_after_refresh_is_raised(make, fake_wechat_api):
    fake_wechat_api.fail_next(SEND, 40001, times=2)
    with pytest.raises(WeChatAPIError) as e:
        await make().send_text(OPENID, "hi")
    assert e.value.errcode == 40001
    assert len(fake_wechat_api.calls_to(SEND)) == 2
    assert fake_wechat_api.sent == []


@pytest.mark.gen_test
async def test_wrong_app_secret_is_a_clear_permanent_error(make, fake_wechat_api):
    api = make()
    api._secret = "wrong"
    with pytest.raises(WeChatAPIError) as e:
        await api.send_text(OPENID, "hi")
    assert e.value.errcode == 40125 and e.value.permanent
    assert "WECHAT_APP_SECRET" in str(e.value)
    assert fake_wechat_api.calls_to(SEND) == []


# -- retries --------------------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_system_busy_is_retried_with_back_off(make, fake_wechat_api):
    fake_wechat_api.fail_next(SEND, -1, times=2)
    await make().send_text(OPENID, "hi")
    assert len(fake_wechat_api.calls_to(SEND)) == 3
    assert len(fake_wechat_api.sent) == 1


@pytest.mark.gen_test
async def test_system_busy_beyond_the_retries_is_raised_as_retryable(make, fake_wechat_api):
    fake_wechat_api.fail_next(SEND, -1, times=10)
    with pytest.raises(WeChatAPIError) as e:
        await make(retry_delays=(0.01, 0.01)).send_text(OPENID, "hi")
    assert e.value.errcode == -1 and e.value.retryable
    assert len(fake_wechat_api.calls_to(SEND)) == 3


@pytest.mark.gen_test
@pytest.mark.parametrize(("errcode", "hint"), [(45015, "48"), (40003, "OpenID"), (45047, "")])
async def test_permanent_errors_are_not_retried(make, fake_wechat_api, errcode, hint):
    fake_wechat_api.fail_next(SEND, errcode)
    with pytest.raises(WeChatAPIError) as e:
        await make().send_text(OPENID, "hi")
    assert e.value.errcode == errcode and e.value.permanent
    assert hint in str(e.value)
    assert len(fake_wechat_api.calls_to(SEND)) == 1


@pytest.mark.gen_test
async def test_token_fetch_survives_system_busy_and_a_dropped_connection(make, fake_wechat_api):
    fake_wechat_api.fail_next("token", -1)
    fake_wechat_api.fail_next("token", disconnect=True)
    assert await make().access_token() == fake_wechat_api.tokens[0]
    assert fake_wechat_api.token_fetches == 3


@pytest.mark.gen_test
async def test_idempotent_calls_are_retried_after_a_dropped_connection_or_http_error(
    make, fake_wechat_api
):
    api = make()
    fake_wechat_api.fail_next("menu/create", disconnect=True)
    fake_wechat_api.fail_next("menu/create", None, status=503)
    await api.create_menu({"button": [{"type": "click", "name": "调查", "key": "爆肝度调查"}]})
    assert len(fake_wechat_api.calls_to("menu/create")) == 3
    assert len(fake_wechat_api.menus) == 1


@pytest.mark.gen_test
async def test_a_send_whose_answer_was_lost_is_not_repeated(make, fake_wechat_api):
    """The request reached WeChat, so it may have been delivered: at most once, never twice."""
    fake_wechat_api.fail_next(SEND, disconnect=True)
    with pytest.raises(WeChatAPIError) as e:
        await make().send_text(OPENID, "hi")
    assert e.value.uncertain and not e.value.retryable and not e.value.permanent
    assert "may have been delivered" in str(e.value)
    assert len(fake_wechat_api.calls_to(SEND)) == 1


@pytest.mark.gen_test
async def test_a_send_that_timed_out_is_not_repeated(make, fake_wechat_api):
    fake_wechat_api.delay(SEND, 3.0, times=1)
    with pytest.raises(WeChatAPIError) as e:
        await make(timeout=0.5).send_text(OPENID, "slow")
    assert e.value.uncertain and "Timeout" in str(e.value)
    await poll(lambda: fake_wechat_api.sent)  # WeChat delivered it after all: exactly once
    assert len(fake_wechat_api.calls_to(SEND)) == 1
    assert len(fake_wechat_api.sent) == 1


@pytest.mark.gen_test
async def test_unreachable_server_is_retried_then_raised(db):
    api = WeChatAPI(
        db,
        app_id=FAKE_APP_ID,
        app_secret=FAKE_APP_SECRET,
        base_url="http://127.0.0.1:9",
        retry_delays=(0.01, 0.01),  # nothing listens on port 9
    )
    try:
        with pytest.raises(WeChatAPIError) as e:
            await api.send_text(OPENID, "hi")
        assert e.value.api == "token" and e.value.retryable and not e.value.uncertain
        assert "ConnectionError" in str(e.value)
        assert FAKE_APP_SECRET not in str(e.value) and "secret=***" in str(e.value)
    finally:
        await api.close()


def test_debug_logging_keeps_urllib3_request_lines_out(monkeypatch):
    """urllib3 logs each request line (AppSecret and tokens in the query) at DEBUG: the logging
    set-up of ``python -m service`` keeps it at INFO even with --log-level DEBUG."""
    from service.__main__ import setup_logging

    root = logging.getLogger()
    pool = logging.getLogger("urllib3.connectionpool")
    for name in ("logThreads", "logProcesses", "logMultiprocessing", "_srcfile"):
        monkeypatch.setattr(logging, name, getattr(logging, name))
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    monkeypatch.setattr(pool, "level", pool.level)
    setup_logging("DEBUG")
    assert root.isEnabledFor(logging.DEBUG)
    assert not pool.isEnabledFor(logging.DEBUG)


@pytest.mark.gen_test
async def test_a_send_that_never_left_is_retried(db, caplog):
    """Connection refused: WeChat never saw the message, so resending is safe."""
    await tokens.save_token(db, FAKE_APP_ID, "TOKEN", 7200, fetched_by="elsewhere")
    api = WeChatAPI(
        db,
        app_id=FAKE_APP_ID,
        app_secret=FAKE_APP_SECRET,
        base_url="http://127.0.0.1:9",
        retry_delays=(0.01, 0.01),
    )
    try:
        with pytest.raises(WeChatAPIError) as e:
            await api.send_text(OPENID, "hi")
    finally:
        await api.close()
    assert e.value.api == SEND and e.value.retryable and not e.value.uncertain
    assert sum("retrying" in r.getMessage() for r in caplog.records) == 2
    assert not any("TOKEN" in r.getMessage() for r in caplog.records)


@pytest.mark.gen_test
async def test_calls_do_not_block_the_event_loop(make, fake_wechat_api):
    """While a slow WeChat call waits in a worker thread, the loop keeps serving other work."""
    api = make()
    await api.access_token()
    fake_wechat_api.delay(SEND, 1.0, times=1)
    sending = asyncio.ensure_future(api.send_text(OPENID, "slow"))
    ticks = 0
    while not sending.done():
        ticks += 1
        await asyncio.sleep(0.01)
    await sending
    assert ticks >= 3  # a blocking call would have finished within the first tick


# -- media and menu -------------------------------------------------------------------------------


@pytest.mark.gen_test
@pytest.mark.parametrize("permanent", [False, True])
async def test_upload_image(make, fake_wechat_api, tmp_path, permanent):
    image = tmp_path / "reply.png"
    image.write_bytes(PNG)
    media_id = await make().upload_image(image, permanent=permanent)
    [upload] = fake_wechat_api.uploads
    assert upload["media_id"] == media_id
    assert upload["body"] == PNG
    assert upload["type"] == "image" and upload["filename"] == "reply.png"
    assert upload["permanent"] is permanent


@pytest.mark.gen_test
async def test_upload_rejects_a_missing_or_wrong_file_before_any_call(
    make, fake_wechat_api, tmp_path
):
    api = make()
    with pytest.raises(FileNotFoundError):
        await api.upload_image(tmp_path / "missing.png")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="JPG"):
        await api.upload_image(tmp_path / "notes.txt")
    assert fake_wechat_api.calls == []


@pytest.mark.gen_test
async def test_create_menu_sends_the_validated_menu(make, fake_wechat_api):
    menu = load_menu(ROOT / "deploy" / "menu.example.yaml")
    await make().create_menu(menu)
    assert fake_wechat_api.menus == [menu]
    assert "爆肝度调查" in menu_keys(menu)


@pytest.mark.gen_test
async def test_an_invalid_menu_is_not_sent(make, fake_wechat_api):
    four = [{"type": "click", "name": f"b{i}", "key": f"k{i}"} for i in range(4)]
    with pytest.raises(MenuError):
        await make().create_menu({"button": four})
    assert fake_wechat_api.calls == []


def _click(name: str = "调查", key: str = "k") -> dict[str, Any]:
    return {"type": "click", "name": name, "key": key}


@pytest.mark.parametrize(
    ("menu", "message"),
    [
        ({"button": []}, "1 to 3 top-level buttons"),
        ({"button": [_click()] * 4}, "1 to 3 top-level buttons"),
        ({"buttons": [_click()]}, "unknown top-level field"),
        ({"button": [_click(name="六个汉字长度")]}, "button[0].name: '六个汉字长度' is 18 bytes"),
        ({"button": [{"name": "更多", "sub_button": [_click()] * 6}]}, "1 to 5 sub-buttons"),
        ({"button": [{"name": "更多", "sub_button": []}]}, "1 to 5 sub-buttons"),
        ({"button": [_click(key="k" * 129)]}, "button[0].key: 129 bytes"),
        ({"button": [{"type": "click", "name": "x"}]}, "button[0].key: required"),
        ({"button": [{"type": "view", "name": "x", "url": "ftp://x"}]}, "must be an http(s) URL"),
        ({"button": [{"type": "view", "name": "x", "ur": "https://x"}]}, "unknown field(s) ['ur']"),
        ({"button": [{"type": "klick", "name": "x", "key": "k"}]}, "'klick' is not one of"),
        (
            {"button": [{"name": "更多", "sub_button": [{"name": "x", "sub_button": []}]}]},
            "a sub-button cannot have sub_button",
        ),
        ({"button": [{"name": "", "type": "click", "key": "k"}]}, "button[0].name: required"),
        ("just text", "must be a mapping"),
    ],
)
def test_menu_validation_names_the_problem(menu, message):
    with pytest.raises(MenuError) as e:
        validate_menu(menu)
    assert message in str(e.value)


def test_menu_validation_accepts_limits_and_lists_every_error():
    ok = {
        "button": [
            _click(name="五个汉字长"),  # 15 bytes
            {"name": "更多", "sub_button": [_click(name="子" * 20, key="k" * 128)] * 5},
            {"type": "view", "name": "主页", "url": "https://example.com/a?b=c"},
        ]
    }
    assert validate_menu(ok) == ok
    with pytest.raises(MenuError) as e:
        validate_menu({"button": [_click(name="x" * 17), {"type": "view", "name": "y"}]})
    assert len(e.value.errors) == 2


def test_menu_file_errors(tmp_path):
    bad = tmp_path / "menu.yaml"
    bad.write_text("button: [unclosed\n", encoding="utf-8")
    with pytest.raises(MenuError, match="not valid YAML"):
        load_menu(bad)


# -- wiring into the application ------------------------------------------------------------------


@pytest.mark.gen_test
async def test_make_app_provides_the_api_and_closes_it(wechat_settings, db, fake_wechat_api):
    from service.app import make_app

    app = make_app(wechat_settings, db=db)
    api = app.settings["wechat_api"]
    assert isinstance(api, WeChatAPI) and api.base_url == fake_wechat_api.base_url
    await api.send_reply(OPENID, Reply.text("稍后补发的回复"))
    assert fake_wechat_api.sent[0]["text"]["content"] == "稍后补发的回复"
    await app.settings["process"].close()
    with pytest.raises(RuntimeError, match="closed"):
        await api.send_text(OPENID, "after shutdown")


def test_make_app_without_credentials_has_no_api(settings, db):
    from service.app import make_app

    assert make_app(settings, db=db).settings["wechat_api"] is None


@pytest.mark.gen_test
async def test_image_reply_reads_the_database_once_per_interval(db, db_counter):
    from service.image_reply import ImageReply

    image = ImageReply(db, "from-env", interval=60)
    assert image.media_id == "from-env"
    before = db_counter.snapshot()["by_command"].get("find", 0)
    for _ in range(10):
        assert await image.current() == "from-env"  # nothing stored: the setting stays
    assert db_counter.snapshot()["by_command"].get("find", 0) - before == 1
    await tokens.set_image_media_id(db, "uploaded")
    image.interval = 0
    await image.current()  # starts a background refresh; the message does not wait for it
    await poll(lambda: image.media_id == "uploaded")
    assert await image.current() == "uploaded"
    await db[tokens.COLLECTION].delete_one({"_id": f"setting:{tokens.IMAGE_MEDIA_ID}"})
    assert await image.refresh() == "from-env"  # removed upload: back to the default
    await image.close()


@pytest.mark.gen_test
async def test_the_first_image_waits_briefly_for_the_uploaded_one(db):
    from service.bot import Bot
    from service.image_reply import ImageReply

    await tokens.set_image_media_id(db, "uploaded")
    image = ImageReply(db, "from-env")
    bot = Bot(db, image=image)
    message = Message("k1", OPENID, "gh_test", "image", 1700000000, {"MediaId": "m"}, "<xml/>")
    assert await bot.reply(message) == Reply.image("uploaded")
    await image.close()


@pytest.mark.gen_test
async def test_a_bot_without_an_image_source_uses_a_fixed_media_id(db):
    from service.bot import Bot, FixedImage

    message = Message("k1", OPENID, "gh_test", "image", 1700000000, {"MediaId": "m"}, "<xml/>")
    assert await Bot(db, image_media_id="fixed").reply(message) == Reply.image("fixed")
    assert await Bot(db, image=FixedImage("other")).reply(message) == Reply.image("other")
    assert (await Bot(db).reply(message)).kind == "text"  # no media_id: a text says it arrived


@pytest.mark.gen_test
async def test_the_example_menu_click_starts_the_survey_once(send, wechat, db, app):
    """A CLICK of the shipped menu reaches the survey engine like the typed keyword; WeChat's
    retries of that click (same openid + CreateTime) start it once and get the same reply."""
    from service.store import surveys as survey_store

    [key] = menu_keys(load_menu(ROOT / "deploy" / "menu.example.yaml"))
    assert key == "爆肝度调查"
    xml = wechat.event("clicker", "CLICK", EventKey=key, create_time=int(time.time()))
    replies = await asyncio.gather(*[send(xml) for _ in range(3)])
    texts = {reply["Content"] for _, reply in replies}
    assert len(texts) == 1
    [text] = texts
    assert "爆肝度调查" in text and "1/10" in text.replace(" ", "")
    assert await db[survey_store.COLLECTION].count_documents({"openid": "clicker"}) == 1
