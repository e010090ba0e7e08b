"""``qr create --survey ID --channel NAME [--expires 30d]`` and ``qr list [--survey ID]``.

``create`` makes the parametric QR code of a survey's channel through the WeChat API (permanent
without ``--expires``; temporary for up to 30 days with it), saves its PNG under
``DATA_DIR/qr/<survey>-<channel>.png`` and prints the file's path; ``list`` shows every code with
its scans. Credentials and database as the other WeChat API commands (``service.api_cli``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from . import qr
from .api_cli import _run, cli_settings
from .store import qr_codes
from .surveys.catalog import SurveyCatalog
from .wechat_api import WeChatAPI

__all__ = ["add_parser"]


def _create(args: argparse.Namespace) -> int:
    settings = cli_settings(args)
    try:
        expires = qr.parse_duration(args.expires) if args.expires else None
        qr.scene_for(args.survey, args.channel)
    except qr.QrError as e:
        print(f"错误 / error: {e}", file=sys.stderr)
        return 2

    async def action(api: WeChatAPI, db: Any) -> int:
        catalog = SurveyCatalog(db, tz=settings.tzinfo)
        await catalog.refresh()
        if catalog.snapshot.current.get(args.survey) is None:
            print(f"错误 / error: no published survey {args.survey!r}", file=sys.stderr)
            return 2
        doc = await qr.create(
            api,
            db,
            survey_id=args.survey,
            channel=args.channel,
            data_dir=settings.data_dir,
            expires=expires,
        )
        print(settings.data_dir / "qr" / doc["image"])
        until = (
            "永久 / permanent"
            if doc["permanent"]
            else f"expires {doc['expires_at']:%Y-%m-%d %H:%M} UTC"
        )
        print(f"scene {doc['_id']}  ({until})  {doc['url']}", file=sys.stderr)
        return 0

    return _run(args, action)


def _list(args: argparse.Namespace) -> int:
    async def action(_api: WeChatAPI, db: Any) -> int:
        for doc in await qr_codes.list_codes(db, args.survey):
            expires = doc.get("expires_at")
            until = "permanent" if expires is None else f"until {expires:%Y-%m-%d %H:%M} UTC"
            print(
                f"{doc['survey']}\t{doc['channel']}\t{doc.get('scans', 0)} scan(s)\t{until}\t"
                f"{doc.get('image', '')}"
            )
        return 0

    return _run(args, action)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("qr", help="parametric QR codes: one per survey and channel")
    commands = p.add_subparsers(dest="qr_command", required=True, metavar="ACTION")
    create = commands.add_parser("create", help="create a channel's QR code and save its PNG")
    create.add_argument("--survey", required=True, help="the survey id")
    create.add_argument("--channel", required=True, help="a name for where the code is put up")
    create.add_argument("--expires", help="a temporary code: 30m, 6h, 2d ... at most 30d")
    create.set_defaults(func=_create)
    listing = commands.add_parser("list", help="every QR code with its scans")
    listing.add_argument("--survey", help="only this survey's codes")
    listing.set_defaults(func=_list)
