"""The media library against the fake WeChat API: sizes and formats checked before upload
(nothing sent when refused), permanent material added and listed with image thumbnails, WeChat's
errors (45009 quota) shown, no secret in any answer; without AppID/AppSecret it says so."""

from __future__ import annotations

import json
import struct
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from service.app import make_app
from service.media import check_upload

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def amr(seconds: float) -> bytes:
    """An AMR-NB file of silent 12.2 kbit/s frames (mode 7: 32 bytes, 20 ms each)."""
    frame = bytes([7 << 3 | 4]) + b"\x00" * 31
    return b"#!AMR\n" + frame * int(seconds / 0.02)


def mp3(seconds: float) -> bytes:
    """MPEG-1 layer III frames, 128 kbit/s at 44.1 kHz: 417 bytes and 26.1 ms each."""
    frame = b"\xff\xfb\x90\x64" + b"\x00" * 413
    return frame * int(seconds / 0.026122)


def mp4() -> bytes:
    return struct.pack(">I", 24) + b"ftypisom" + b"\x00" * 12


def test_limits_are_checked_before_upload():
    assert check_upload("image", "a.png", PNG) == []
    assert check_upload("image", "a.webp", PNG) == [
        "'a.webp': a image must be bmp, png, jpeg, jpg, gif (this is webp)"
    ]
    assert check_upload("image", "a.png", b"GIF89a...") == ["'a.png' is not really a png file"]
    assert (
        "at most 10 MB" in check_upload("image", "big.jpg", b"\xff\xd8\xff" + b"0" * 11 * 2**20)[0]
    )
    assert check_upload("voice", "ok.amr", amr(10)) == []
    assert check_upload("voice", "long.amr", amr(61)) == [
        "'long.amr' lasts 61 s; WeChat takes a voice of at most 60 s"
    ]
    assert check_upload("voice", "ok.mp3", mp3(30)) == []
    assert "lasts 61 s" in check_upload("voice", "long.mp3", mp3(61))[0]
    assert "cannot read its length" in check_upload("voice", "bad.mp3", b"not an mp3 at all")[0]
    assert check_upload("video", "v.mp4", mp4()) == ["a video needs a title"]
    assert check_upload("video", "v.mp4", mp4(), title="片子") == []
    assert check_upload("video", "v.mov", mp4(), title="x")[0].endswith("(this is mov)")


@pytest.fixture
def app(io_loop: Any, wechat_settings: Any, db: Any) -> Iterator[Any]:
    application = make_app(wechat_settings, db=db)
    yield application
    io_loop.run_sync(application.settings["process"].close)


async def upload(session: Any, kind: str, name: str, data: bytes, **extra: str) -> Any:
    query = urllib.parse.urlencode({"type": kind, "name": name, **extra})
    response = await session.fetch(
        f"/api/media/upload?{query}",
        method="POST",
        body=data,
        headers={"X-XSRFToken": session.xsrf, "Content-Type": "application/octet-stream"},
    )
    return response.code, json.loads(response.body)


@pytest.mark.gen_test(timeout=60)
async def test_upload_and_list(logged_in, app, fake_wechat_api):
    code, refused = await upload(logged_in, "voice", "long.amr", amr(70))
    assert code == 422 and "at most 60 s" in refused["issues"][0]
    assert fake_wechat_api.uploads == []

    code, added = await upload(logged_in, "image", "logo.png", PNG)
    assert code == 200, added
    assert fake_wechat_api.uploads[0]["permanent"] and fake_wechat_api.uploads[0]["body"] == PNG
    code, video = await upload(logged_in, "video", "clip.mp4", mp4(), title="片子")
    assert code == 200

    listing = await logged_in.get_json("/api/media", type="image")
    assert listing["configured"] and listing["counts"] == {"image": 1, "voice": 0, "video": 1}
    assert listing["items"][0]["media_id"] == added["media_id"]
    assert listing["items"][0]["url"].startswith("http://mmbiz.qpic.cn/")
    assert listing["items"][0]["name"] == "logo.png"
    text = json.dumps(listing)
    assert "FAKE-" not in text.replace(added["media_id"], "")  # no access_token in the answer
    videos = await logged_in.get_json("/api/media", type="video")
    assert [v["media_id"] for v in videos["items"]] == [video["media_id"]]

    fake_wechat_api.fail_next("material/add_material", 45009)
    code, failed = await upload(logged_in, "image", "again.png", PNG)
    assert code == 502 and failed["errcode"] == 45009

    page = await logged_in.get("/dashboard/media")
    assert page.code == 200 and "素材库" in page.body.decode()


@pytest.mark.gen_test(timeout=60)
async def test_a_media_reply_of_unknown_material_is_40007(logged_in, app, fake_wechat_api):
    """The fake refuses a customer-service voice naming media it never issued, as WeChat does."""
    api = app.settings["wechat_api"]
    from service.wechat import Reply
    from service.wechat_api import WeChatAPIError

    with pytest.raises(WeChatAPIError) as refused:
        await api.send_reply("openid-1", Reply.voice("NOT-ISSUED"))
    assert refused.value.errcode == 40007


@pytest.mark.gen_test(timeout=60)
async def test_late_replies_of_every_kind_go_out_as_customer_service_messages(
    logged_in, app, fake_wechat_api
):
    """A reply past the 5-second budget is sent through the API: the matching message type."""
    from service.wechat import Article, Reply

    _, image = await upload(logged_in, "image", "cover.png", PNG)
    _, voice = await upload(logged_in, "voice", "hi.amr", amr(3))
    _, video = await upload(logged_in, "video", "clip.mp4", mp4(), title="片子")
    api = app.settings["wechat_api"]
    await api.send_reply("o1", Reply.voice(voice["media_id"]))
    await api.send_reply("o1", Reply.video(video["media_id"], "片子", "一段"))
    await api.send_reply(
        "o1",
        Reply.music(thumb_media_id=image["media_id"], title="歌", music_url="https://e.com/a.mp3"),
    )
    await api.send_reply(
        "o1", Reply.news([Article("第一篇", url="https://e.com/1"), Article("第二篇")])
    )
    sent = fake_wechat_api.sent
    assert [m["msgtype"] for m in sent] == ["voice", "video", "music", "news"]
    assert sent[1]["video"]["title"] == "片子"
    assert sent[2]["music"]["thumb_media_id"] == image["media_id"]
    assert [a["title"] for a in sent[3]["news"]["articles"]] == ["第一篇"]  # one article only
