"""``create-owner NAME``: create (or ``--reset``) a dashboard owner account.

The password is asked for twice on a terminal, or read from standard input with
``--password-stdin`` (scripts, CI). Without ``MONGODB_URI`` the command uses the embedded database
of the service running on the same ``DATA_DIR`` (``make run``), or starts it for its duration.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import sys
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from .config import ConfigError, Settings
from .db import open_database
from .embedded import EmbeddedDatabaseError
from .store import owners

__all__ = ["add_parser", "create_owner", "ensure_first_owner", "owner_banner"]

log = logging.getLogger(__name__)


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("密码 / Password: ")
    second = getpass.getpass("再输入一次 / Again: ")
    if first != second:
        raise owners.OwnerError("the two passwords differ")
    return first


async def create_owner(settings: Settings, name: str, password: str, *, reset: bool) -> str:
    async with open_database(settings) as (_client, db):
        if reset:
            if await owners.get(db, name) is None:
                raise owners.OwnerError(f"owner {owners.normalize_name(name)!r} does not exist")
            await owners.set_password(db, name, password)
            return "reset"
        await owners.create(db, name, password)
        return "created"


async def ensure_first_owner(db: AsyncDatabase[dict[str, Any]], name: str = "admin") -> str | None:
    """Create ``admin`` with a one-time password when there is no owner yet (``serve --dev``).

    Returns the password to print, or ``None`` when an owner already exists. The owner must
    choose a new password at the first login.
    """
    if await owners.count(db) > 0:
        return None
    password = owners.generate_password()
    try:
        await owners.create(db, name, password, must_change_password=True)
    except owners.OwnerError:
        return None  # another process created it first
    return password


async def owner_banner(db: AsyncDatabase[dict[str, Any]]) -> str:
    """The ``serve --dev`` lines about logging in: a one-time password, or how to add an owner."""
    password = await ensure_first_owner(db)
    if password is not None:
        return (
            "  Dashboard login (first start): admin / "
            f"{password}  (one-time password: you choose your own at the first login)\n"
        )
    return "  More owners: python -m service create-owner NAME\n"


def _create(args: argparse.Namespace) -> int:
    from .server import load_settings

    try:
        owners.normalize_name(args.name)
        password = _read_password(args)
        owners.check_password(password)
        settings = load_settings(args, dev=True)
        outcome = asyncio.run(create_owner(settings, args.name, password, reset=args.reset))
    except owners.OwnerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except EmbeddedDatabaseError as e:
        log.error("%s", e)
        return 2
    except ConfigError as e:
        log.error("%s", e)
        return 2
    name = owners.normalize_name(args.name)
    if outcome == "reset":
        print(f"password of owner {name!r} changed; its sessions have ended")
    else:
        print(f"owner {name!r} created; log in at /dashboard/login")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "create-owner",
        help="create a dashboard owner account (asks for the password)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", help="the owner's login name (case-insensitive)")
    p.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    p.add_argument("--reset", action="store_true", help="set a new password for an existing owner")
    p.set_defaults(func=_create)
