"""QR channels: ``python -m service qr create|list`` through the fake WeChat API."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from service import qr
from tests.test_api_cli import ROOT, cli  # noqa: F401  (the fixture)

BAOGAN = str(ROOT / "service" / "surveys" / "baogan.yaml")


def test_scene_names_and_durations():
    assert qr.scene_for("baogan", "poster-library") == "baogan:poster-library"
    assert qr.scene_for("baogan", "图书馆") == "baogan:图书馆"
    for bad in ("", "has space", "a:b", "x" * 41):
        with pytest.raises(qr.QrError):
            qr.scene_for("baogan", bad)
    with pytest.raises(qr.QrError, match="64 bytes"):
        qr.scene_for("baogan", "图" * 20)  # 7 + 1 + 60 bytes
    assert qr.parse_duration("30d") == dt.timedelta(days=30)
    assert qr.parse_duration("6h") == dt.timedelta(hours=6)
    assert qr.parse_duration("90s") == dt.timedelta(seconds=90)
    with pytest.raises(qr.QrError):
        qr.parse_duration("3 days")


@pytest.mark.gen_test(timeout=180)
async def test_qr_create_saves_the_png_and_stores_the_code(cli, fake_wechat_api, db, tmp_path):  # noqa: F811
    assert (await cli("surveys", "publish", BAOGAN))[0] == 0
    code, out, err = await cli("qr", "create", "--survey", "baogan", "--channel", "library")
    assert code == 0, err
    png = Path(out.strip())
    assert png == tmp_path / "cli-data" / "qr" / "baogan-library.png"
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    created = fake_wechat_api.calls_to("qrcode/create")
    assert len(created) == 1
    assert created[0].json == {
        "action_name": "QR_LIMIT_STR_SCENE",
        "action_info": {"scene": {"scene_str": "baogan:library"}},
    }
    ticket = created[0].answer["ticket"]
    assert [c.query["ticket"] for c in fake_wechat_api.calls_to("showqrcode")] == [ticket]
    doc = await db.qr_codes.find_one({"_id": "baogan:library"})
    assert doc["survey"] == "baogan" and doc["channel"] == "library"
    assert doc["ticket"] == ticket and doc["url"].startswith("http://weixin.qq.com/q/")
    assert doc["permanent"] is True and doc["expires_at"] is None and doc["scans"] == 0

    # A temporary code, up to 30 days.
    code, _, err = await cli(
        "qr", "create", "--survey", "baogan", "--channel", "canteen", "--expires", "7d"
    )
    assert code == 0, err
    sent = fake_wechat_api.calls_to("qrcode/create")[-1].json
    assert sent["action_name"] == "QR_STR_SCENE" and sent["expire_seconds"] == 7 * 86400
    doc = await db.qr_codes.find_one({"_id": "baogan:canteen"})
    assert doc["permanent"] is False
    assert doc["expires_at"] - doc["created_at"] == dt.timedelta(days=7)

    # Refused before any call: too long, a second code for a channel, an unknown survey.
    calls = len(fake_wechat_api.calls)
    for args, says in (
        (("--channel", "x", "--expires", "31d"), "30 days"),
        (("--channel", "library"), "has a code already"),
        (("--channel", "bad name"), "channel:"),
    ):
        code, _, err = await cli("qr", "create", "--survey", "baogan", *args)
        assert code == 2 and says in err, err
    code, _, err = await cli("qr", "create", "--survey", "nosuch", "--channel", "x")
    assert code == 2 and "no published survey" in err
    assert not [c for c in fake_wechat_api.calls[calls:] if "qrcode" in c.path]

    code, out, _ = await cli("qr", "list", "--survey", "baogan")
    assert code == 0
    lines = out.strip().splitlines()
    assert [line.split("\t")[:3] for line in lines] == [
        ["baogan", "library", "0 scan(s)"],
        ["baogan", "canteen", "0 scan(s)"],
    ]


# -- scans through the real /wechat -----------------------------------------------------------
@pytest.fixture
def app_extra(tmp_path, db, fake_wechat_api):
    from service.surveys import SHIPPED_DIR, SurveyEngine, load_dir
    from service.wechat_api import WeChatAPI
    from tests.fake_wechat_api import FAKE_APP_ID, FAKE_APP_SECRET

    folder = tmp_path / "surveys"
    folder.mkdir()
    (folder / "baogan.yaml").write_bytes((SHIPPED_DIR / "baogan.yaml").read_bytes())
    api = WeChatAPI(
        db, app_id=FAKE_APP_ID, app_secret=FAKE_APP_SECRET, base_url=fake_wechat_api.base_url
    )
    return {"surveys": SurveyEngine(load_dir(folder)), "wechat_api": api}


@pytest.fixture
def codes(io_loop, db, fake_wechat_api, tmp_path):
    """Two codes of the 爆肝度调查 made through the fake API: library (permanent), canteen (7 d)."""
    from service.wechat_api import WeChatAPI
    from tests.fake_wechat_api import FAKE_APP_ID, FAKE_APP_SECRET

    async def make() -> None:
        api = WeChatAPI(
            db, app_id=FAKE_APP_ID, app_secret=FAKE_APP_SECRET, base_url=fake_wechat_api.base_url
        )
        try:
            for channel, expires in (("library", None), ("canteen", dt.timedelta(days=7))):
                await qr.create(
                    api,
                    db,
                    survey_id="baogan",
                    channel=channel,
                    data_dir=tmp_path,
                    expires=expires,
                )
        finally:
            await api.close()

    io_loop.run_sync(make, timeout=60)


@pytest.mark.gen_test(timeout=90)
async def test_qr_subscribe_and_scan_start_the_survey_with_the_channel(
    send, wechat, db, app, codes
):
    from service.bot import WELCOME_TEXT

    # A new follower from the library poster: welcomed, then the survey's first question.
    event = wechat.event("u-lib", "subscribe", EventKey="qrscene_baogan:library", Ticket="T")
    _, reply = await send(event)
    text = reply["Content"]
    assert text.startswith(WELCOME_TEXT + "\n") and "第 1/10 题" in text
    session = await db.survey_sessions.find_one({"_id": "baogan:u-lib"})
    assert session["state"] == "in_progress" and session["channel"] == "library"

    # A follower scanning the canteen poster (SCAN: already following): the survey starts.
    _, reply = await send(wechat.event("u-can", "SCAN", EventKey="baogan:canteen", Ticket="T"))
    assert "第 1/10 题" in reply["Content"] and not reply["Content"].startswith(WELCOME_TEXT)
    assert (await db.survey_sessions.find_one({"_id": "baogan:u-can"}))["channel"] == "canteen"

    # u-lib scans the canteen code later: counted, but the first channel is kept.
    _, reply = await send(
        wechat.event("u-lib", "SCAN", EventKey="baogan:canteen", Ticket="T", create_time=1)
    )
    user = await db.users.find_one({"_id": "u-lib"})
    assert user["channel"] == "library" and user["qr_scans"] == 2
    assert user["channels"] == {"library": 1, "canteen": 1}
    assert (await db.survey_sessions.find_one({"_id": "baogan:u-lib"}))["channel"] == "library"
    scans = {d["_id"]: d["scans"] async for d in db.qr_codes.find()}
    assert scans == {"baogan:library": 1, "baogan:canteen": 2}

    # Unknown and expired scenes: the normal welcome, no survey.
    _, reply = await send(wechat.event("u-x", "subscribe", EventKey="qrscene_nosuch:x"))
    assert reply["Content"].startswith(WELCOME_TEXT) and "第 1/10 题" not in reply["Content"]
    await db.qr_codes.update_one(
        {"_id": "baogan:canteen"},
        {"$set": {"expires_at": dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)}},
    )
    _, reply = await send(wechat.event("u-y", "subscribe", EventKey="qrscene_baogan:canteen"))
    assert "第 1/10 题" not in reply["Content"]
    assert await db.survey_sessions.find_one({"_id": "baogan:u-y"}) is None

    # Results by channel: the survey report counts the sessions per channel.
    from service import reports

    survey = app.settings["surveys"].get("baogan")
    report = await reports.survey_report(db, survey)
    assert {c["channel"]: c["started"] for c in report["channels"]} == {
        "library": 1,
        "canteen": 1,
    }


@pytest.mark.gen_test(timeout=90)
async def test_qr_codes_from_the_survey_page(logged_in, fake_wechat_api, db):
    created = await logged_in.post_json("/api/surveys/baogan/qr", {"channel": "dorm"})
    assert created.code == 201, created.body
    body = json.loads(created.body)
    assert body["scene"] == "baogan:dorm" and body["permanent"] is True and body["scans"] == 0
    assert fake_wechat_api.calls_to("qrcode/create")[-1].json["action_name"] == (
        "QR_LIMIT_STR_SCENE"
    )
    temporary = await logged_in.post_json(
        "/api/surveys/baogan/qr", {"channel": "gate", "expires": "7d"}
    )
    assert temporary.code == 201 and json.loads(temporary.body)["expires_at"]
    for bad, says in (
        ({"channel": "dorm"}, "has a code already"),
        ({"channel": "a b"}, "channel:"),
    ):
        refused = await logged_in.post_json("/api/surveys/baogan/qr", bad)
        assert refused.code == 400 and says in json.loads(refused.body)["error"]
    listing = await logged_in.get_json("/api/surveys/baogan/qr")
    assert [(c["channel"], c["scans"]) for c in listing["items"]] == [("dorm", 0), ("gate", 0)]
    png = await logged_in.get(listing["items"][0]["image"])
    assert png.code == 200 and png.headers["Content-Type"] == "image/png"
    assert png.body.startswith(b"\x89PNG")
    assert (await logged_in.get("/dashboard/surveys/baogan/qr/nosuch.png")).code == 404
