"""WeChat API commands: ``media upload``, ``menu push`` / ``menu check``, ``send``.

::

    python -m service media upload IMAGE [--permanent]  # upload, store, make it the image reply
    python -m service menu check menu.yaml             # validate only (no network)
    python -m service menu push menu.yaml              # validate, then create the custom menu
    python -m service send OPENID TEXT                 # a customer-service text message

They need ``WECHAT_APP_ID`` and ``WECHAT_APP_SECRET`` (``WECHAT_TOKEN`` is not needed) and the
database the service uses (``MONGODB_URI``), where the shared access_token lives; without
``MONGODB_URI`` they use the embedded database of the service running on the same ``DATA_DIR``
(or start it for the duration of the command). Exit status: 0 done, 1 WeChat refused or
could not be reached, 2 bad input or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import getpass
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from pymongo.errors import PyMongoError

from .config import ConfigError, Settings
from .db import open_database
from .embedded import EmbeddedDatabaseError
from .menu import MenuError, load_menu, menu_keys, push_menu
from .store import tokens
from .wechat_api import WeChatAPI, WeChatAPIError, make_api

__all__ = ["add_parser", "cli_settings"]

# Temporary media live three days on WeChat's side.
TEMPORARY_MEDIA_SECONDS = 3 * 24 * 3600


def _logs_to_stderr() -> None:
    """Keep stdout for the command's result (e.g. ``MEDIA_ID=$(... media upload x.png)``)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout:
            handler.setStream(sys.stderr)


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def cli_settings(args: argparse.Namespace) -> Settings:
    """Settings from the environment (and ``--config``); these commands need no WECHAT_TOKEN."""
    return Settings.from_env(config_file=getattr(args, "config", None), require_token=False)


@contextlib.asynccontextmanager
async def _api(settings: Settings) -> AsyncIterator[tuple[WeChatAPI, Any]]:
    """The database (embedded if ``MONGODB_URI`` is unset) and a WeChatAPI on it."""
    async with open_database(settings) as (_client, db):
        api = make_api(settings, db)
        if api is None:
            raise ConfigError("WECHAT_APP_ID and WECHAT_APP_SECRET are required for this command")
        try:
            yield api, db
        finally:
            await api.close()


def _run(args: argparse.Namespace, action: Callable[[WeChatAPI, Any], Awaitable[int]]) -> int:
    _logs_to_stderr()
    try:
        settings = cli_settings(args)
        if not settings.app_id or not settings.app_secret:
            raise ConfigError("WECHAT_APP_ID and WECHAT_APP_SECRET are required for this command")

        async def main() -> int:
            async with _api(settings) as (api, db):
                return await action(api, db)

        return asyncio.run(main())
    except (ConfigError, EmbeddedDatabaseError, MenuError, ValueError, OSError) as e:
        _err(f"错误 / error: {e}")
        return 2
    except WeChatAPIError as e:
        _err(f"微信接口错误 / WeChat API error: {e}")
        return 1
    except PyMongoError as e:
        _err(f"数据库错误 / database error: {e}")
        return 1


# -- media upload ---------------------------------------------------------------------------------


def _media_upload(args: argparse.Namespace) -> int:
    image: Path = args.image
    permanent: bool = args.permanent

    async def action(api: WeChatAPI, db: Any) -> int:
        media_id = await api.upload_image(image, permanent=permanent)
        now = dt.datetime.now(dt.UTC)
        await tokens.set_image_media_id(
            db,
            media_id,
            source="media upload",
            file=image.name,
            permanent=permanent,
            expires_at=None if permanent else now + dt.timedelta(seconds=TEMPORARY_MEDIA_SECONDS),
        )
        print(media_id)
        print(
            "已设为收到图片时的回复，运行中的服务一分钟内生效。\n"
            "Now the image reply; running processes pick it up within a minute.",
            file=sys.stderr,
        )
        if not permanent:
            print(
                "注意：临时素材 3 天后失效，长期使用请加 --permanent。\n"
                "Note: temporary media expire after 3 days; use --permanent to keep it.",
                file=sys.stderr,
            )
        return 0

    return _run(args, action)


# -- menu -----------------------------------------------------------------------------------------


def _describe_menu(menu: dict[str, Any]) -> str:
    lines = []
    for button in menu["button"]:
        if "sub_button" in button:
            lines.append(f"- {button['name']}")
            lines.extend(f"  - {_describe_item(sub)}" for sub in button["sub_button"])
        else:
            lines.append(f"- {_describe_item(button)}")
    return "\n".join(lines)


def _describe_item(item: dict[str, Any]) -> str:
    detail = item.get("key") or item.get("url") or item.get("media_id") or item.get("article_id")
    return f"{item['name']} ({item['type']}: {detail})"


def _warn_unclaimed_keys(args: argparse.Namespace, menu: dict[str, Any]) -> None:
    """CLICK keys reach the bot like typed keywords: warn about keys no survey or command claims."""
    from .surveys import SurveyLoadError, load_engine
    from .surveys.loader import normalize_keyword
    from .surveys.model import COMMAND_WORDS

    try:
        engine = load_engine(cli_settings(args))
    except (ConfigError, SurveyLoadError, OSError) as e:
        _err(f"警告 / warning: surveys not loaded, CLICK keys not checked: {e}")
        return
    commands = {normalize_keyword(word) for word in COMMAND_WORDS}
    unclaimed = [
        key
        for key in menu_keys(menu)
        if engine.keyword_survey(key) is None and normalize_keyword(key) not in commands
    ]
    if unclaimed:
        _err(
            "警告 / warning: 这些 CLICK key 不是问卷关键词或命令；若也没有自动回复规则匹配，"
            "点击后会得到「不能识别」回复（看板的菜单页会一并检查规则） / "
            "these CLICK keys match no survey keyword "
            "or command; unless a reply rule takes them (the dashboard's menu page checks the "
            "rules too) a click gets the unknown reply: " + ", ".join(unclaimed)
        )


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in this environment (a container)
        return "cli"


def _menu_check(args: argparse.Namespace) -> int:
    _logs_to_stderr()
    try:
        menu = load_menu(args.file)
    except (MenuError, OSError) as e:
        _err(f"错误 / error: {e}")
        return 2
    print(_describe_menu(menu))
    keys = menu_keys(menu)
    if keys:
        print("CLICK keys (routed like typed keywords): " + ", ".join(keys))
    _warn_unclaimed_keys(args, menu)
    return 0


def _menu_push(args: argparse.Namespace) -> int:
    _logs_to_stderr()
    try:
        menu = load_menu(args.file)  # before any network or database work
    except (MenuError, OSError) as e:
        _err(f"错误 / error: {e}")
        return 2
    _warn_unclaimed_keys(args, menu)

    async def action(api: WeChatAPI, db: Any) -> int:
        await push_menu(db, api, menu, by=_who())
        print(_describe_menu(menu))
        print("菜单已创建（用户重新进入公众号后可见）/ menu created", file=sys.stderr)
        return 0

    return _run(args, action)


# -- send -----------------------------------------------------------------------------------------


def _send(args: argparse.Namespace) -> int:
    openid: str = args.openid
    text: str = args.text

    async def action(api: WeChatAPI, db: Any) -> int:
        await api.send_text(openid, text)
        print("已发送 / sent", file=sys.stderr)
        return 0

    return _run(args, action)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    media = sub.add_parser("media", help="WeChat media: upload the image reply")
    media_sub = media.add_subparsers(dest="media_command", required=True, metavar="ACTION")
    upload = media_sub.add_parser(
        "upload", help="upload IMAGE, store its media_id and make it the image reply"
    )
    upload.add_argument("image", type=Path, help="a JPG/PNG/GIF/BMP file, at most 10 MB")
    upload.add_argument(
        "--permanent",
        action="store_true",
        help="add to the permanent material library (temporary media expire after 3 days)",
    )
    upload.set_defaults(func=_media_upload)

    menu = sub.add_parser("menu", help="the custom menu")
    menu_sub = menu.add_subparsers(dest="menu_command", required=True, metavar="ACTION")
    check = menu_sub.add_parser("check", help="validate a menu YAML file (no network)")
    check.add_argument("file", type=Path)
    check.set_defaults(func=_menu_check)
    push = menu_sub.add_parser("push", help="validate a menu YAML file and create the menu")
    push.add_argument("file", type=Path)
    push.set_defaults(func=_menu_push)

    send = sub.add_parser("send", help="send a customer-service text message")
    send.add_argument("openid")
    send.add_argument("text")
    send.set_defaults(func=_send)
