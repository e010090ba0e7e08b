"""The WeChat API commands, run for real: ``python -m service media|menu|send`` as subprocesses,
against the test database and the fake WeChat API server.

The fake server runs on the test's IOLoop, so the subprocesses are awaited
(``asyncio.create_subprocess_exec``) and the loop keeps answering them meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from service import onboarding
from service.config import ENV_VARS
from service.menu import load_menu
from service.store import tokens
from service.wechat_api import WeChatAPI

from .fake_wechat_api import FAKE_APP_ID, FAKE_APP_SECRET
from .ops_helpers import until
from .test_wechat_api import PNG

ROOT = Path(__file__).resolve().parent.parent
OPENID = "oABCD1234567890abcdefghijklm"
EXAMPLE_MENU = ROOT / "deploy" / "menu.example.yaml"


@pytest.fixture
def cli(mongo_uri, settings, db, fake_wechat_api, tmp_path):
    """``await cli(*args, env=...)`` → (exit status, stdout, stderr) of ``python -m service``."""
    base_env = {
        k: v for k, v in os.environ.items() if k not in ENV_VARS and k != "WECHAT_SURVEY_CONFIG"
    }
    base_env.update(
        MONGODB_URI=mongo_uri,
        MONGODB_DB=settings.mongodb_db,
        WECHAT_API_BASE=fake_wechat_api.base_url,
        WECHAT_APP_ID=FAKE_APP_ID,
        WECHAT_APP_SECRET=FAKE_APP_SECRET,
        DATA_DIR=str(tmp_path / "cli-data"),
    )

    async def run(*args: str, env: dict[str, str | None] | None = None) -> tuple[int, str, str]:
        full_env = dict(base_env)
        for key, value in (env or {}).items():
            if value is None:
                full_env.pop(key, None)
            else:
                full_env[key] = value
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "service",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=full_env,
            cwd=str(ROOT),
        )
        out, err = await asyncio.wait_for(process.communicate(), 90)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    return run


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "reply.png"
    path.write_bytes(PNG)
    return path


async def image_reply(send: Any, wechat: Any, msg_id: int) -> dict[str, Any]:
    xml = wechat.message_xml(
        "user-img", "image", msg_id=msg_id, PicUrl="http://mmbiz/x.jpg", MediaId="m"
    )
    _, reply = await send(xml)
    return reply


@pytest.mark.gen_test(timeout=120)
async def test_media_upload_stores_the_media_id_and_it_becomes_the_image_reply(
    cli, fake_wechat_api, db, image, send, wechat
):
    code, out, err = await cli("media", "upload", str(image))
    assert code == 0, err
    media_id = out.strip()
    [upload] = fake_wechat_api.uploads
    assert upload["media_id"] == media_id and upload["body"] == PNG
    assert not upload["permanent"] and "3" in err  # warns that temporary media expire
    assert await tokens.image_media_id(db) == media_id
    setting = await tokens.get_setting(db, tokens.IMAGE_MEDIA_ID)
    assert setting is not None
    assert setting["file"] == "reply.png" and setting["expires_at"] is not None
    # The running service answers images with it.
    reply = await image_reply(send, wechat, 5001)
    assert reply["MsgType"] == "image"
    assert reply["Image"]["MediaId"] == media_id


@pytest.mark.gen_test(timeout=120)
async def test_a_running_process_picks_up_a_new_upload(cli, app, image, send, wechat):
    first = await image_reply(send, wechat, 5101)
    assert first["MsgType"] == "text"  # no image configured yet
    code, out, err = await cli("media", "upload", "--permanent", str(image))
    assert code == 0, err
    media_id = out.strip()
    app.settings["image_reply"].interval = 0  # instead of waiting a minute
    msg_ids = iter(range(5102, 10**6))

    async def image_arrives() -> dict[str, Any] | None:
        reply = await image_reply(send, wechat, next(msg_ids))
        return reply if reply["MsgType"] == "image" else None

    reply = await until(image_arrives, every=0.1)  # the new image reaches the bot
    assert reply["Image"]["MediaId"] == media_id


@pytest.mark.gen_test(timeout=120)
async def test_media_upload_of_a_missing_file_fails_clearly(cli, fake_wechat_api, tmp_path):
    code, _, err = await cli("media", "upload", str(tmp_path / "nope.png"))
    assert code == 2
    assert "no such image" in err
    assert fake_wechat_api.uploads == []


@pytest.mark.gen_test(timeout=120)
async def test_menu_push_creates_the_menu(cli, fake_wechat_api, db):
    code, out, err = await cli("menu", "push", str(EXAMPLE_MENU))
    assert code == 0, err
    assert fake_wechat_api.menus == [load_menu(EXAMPLE_MENU)]
    assert "爆肝度调查" in out
    # The dashboard's first-run checklist sees the push.
    pushed = await tokens.get_setting(db, onboarding.MENU_PUSHED)
    assert pushed is not None and pushed["value"] is True
    assert pushed["buttons"] == len(load_menu(EXAMPLE_MENU)["button"])


@pytest.mark.gen_test(timeout=120)
async def test_an_invalid_menu_is_refused_before_any_call(cli, fake_wechat_api, tmp_path):
    bad = tmp_path / "menu.yaml"
    bad.write_text(
        "button:\n"
        "  - {type: click, name: 这个名字实在太长了, key: a}\n"
        "  - {type: view, name: 主页, url: not-a-url}\n",
        encoding="utf-8",
    )
    code, _, err = await cli("menu", "push", str(bad))
    assert code == 2
    assert "button[0].name" in err and "button[1].url" in err
    assert fake_wechat_api.calls == []


@pytest.mark.gen_test(timeout=120)
async def test_menu_check_needs_no_credentials(cli, fake_wechat_api):
    code, out, err = await cli(
        "menu",
        "check",
        str(EXAMPLE_MENU),
        env={"WECHAT_APP_ID": None, "WECHAT_APP_SECRET": None, "MONGODB_URI": None},
    )
    assert code == 0, err
    assert "CLICK keys" in out and "爆肝度调查" in out
    assert "warning" not in err  # its key is the shipped survey's keyword
    assert fake_wechat_api.calls == []


@pytest.mark.gen_test(timeout=120)
async def test_menu_check_warns_about_click_keys_no_survey_claims(cli, tmp_path):
    menu = tmp_path / "menu.yaml"
    menu.write_text(
        "button:\n  - {type: click, name: 调查, key: 爆肝度调查}\n"
        "  - {type: click, name: 退出, key: 退出}\n  - {type: click, name: 天气, key: WEATHER}\n",
        encoding="utf-8",
    )
    code, _, err = await cli("menu", "check", str(menu))
    assert code == 0
    assert "warning" in err and "WEATHER" in err
    assert "爆肝度调查," not in err and "退出" not in err.split("command:")[-1]


@pytest.mark.gen_test(timeout=120)
async def test_send_delivers_a_customer_service_message(cli, fake_wechat_api):
    code, _, err = await cli("send", OPENID, "您好，问卷结果已更新")
    assert code == 0, err
    assert fake_wechat_api.sent == [
        {"touser": OPENID, "msgtype": "text", "text": {"content": "您好，问卷结果已更新"}}
    ]


@pytest.mark.gen_test(timeout=120)
async def test_send_outside_the_48_hour_window_fails_clearly(cli, fake_wechat_api):
    fake_wechat_api.fail_next("message/custom/send", 45015)
    code, _, err = await cli("send", OPENID, "hi")
    assert code == 1
    assert "45015" in err and "48" in err
    assert fake_wechat_api.sent == []


@pytest.mark.gen_test(timeout=120)
async def test_commands_need_app_id_and_secret(cli, fake_wechat_api):
    code, _, err = await cli("send", OPENID, "hi", env={"WECHAT_APP_SECRET": None})
    assert code == 2
    assert "WECHAT_APP_SECRET" in err
    assert fake_wechat_api.calls == []


@pytest.mark.gen_test(timeout=180)
async def test_processes_share_one_access_token(cli, fake_wechat_api, db):
    """Three real processes start at once with no token stored: WeChat is asked once."""
    fake_wechat_api.delay("token", 0.5)
    results = await asyncio.gather(*[cli("send", OPENID, f"第{i}条") for i in range(3)])
    assert [code for code, _, _ in results] == [0, 0, 0], results
    assert len(fake_wechat_api.sent) == 3
    assert fake_wechat_api.token_fetches == 1
    # And this process (a fourth) uses the same token from MongoDB.
    api = WeChatAPI(
        db, app_id=FAKE_APP_ID, app_secret=FAKE_APP_SECRET, base_url=fake_wechat_api.base_url
    )
    try:
        assert await api.access_token() == fake_wechat_api.tokens[0]
    finally:
        await api.close()
    assert fake_wechat_api.token_fetches == 1
