"""QR channels: ``python -m service qr create|list`` through the fake WeChat API."""

from __future__ import annotations

import datetime as dt
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
