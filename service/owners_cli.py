"""``create-owner NAME``: create (or ``--reset``) a dashboard owner account.

The password is asked for twice on a terminal, or read from standard input with
``--password-stdin`` (scripts, CI). Without ``MONGODB_URI`` the command uses the embedded database
of the service running on the same ``DATA_DIR`` (``make run``), or starts it for its duration.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import sys
import unicodedata
from pathlib import Path
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from .config import ConfigError, Settings
from .db import open_database
from .embedded import EmbeddedDatabaseError
from .store import owners

__all__ = [
    "add_parser",
    "create_owner",
    "ensure_first_owner",
    "framed",
    "owner_banner",
    "unused_first_password",
]

log = logging.getLogger(__name__)

FIRST_PASSWORD_FILE = "first-password"  # noqa: S105 - a file name, not a password


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


async def ensure_first_owner(
    db: AsyncDatabase[dict[str, Any]], name: str = "admin", *, data_dir: Path | None = None
) -> str | None:
    """Create ``admin`` with a one-time password when there is no owner yet (``serve --dev``).

    Returns the password to print, or ``None`` when an owner already exists. The owner must
    choose a new password at the first login. With ``data_dir``, the password is kept there
    (``first-password``, mode 0600) so that a restart can show it again while it is unused.
    """
    if await owners.count(db) > 0:
        return None
    password = owners.generate_password()
    try:
        doc = await owners.create(db, name, password, must_change_password=True)
    except owners.OwnerError:
        return None  # another process created it first
    if data_dir is not None:
        kept = {"name": doc["_id"], "password": password, "hash": doc["password_hash"]}
        _keep(data_dir / FIRST_PASSWORD_FILE, kept)
    return password


def _keep(path: Path, kept: dict[str, str]) -> None:
    """Write the one-time password where only this user can read it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(json.dumps(kept) + "\n", encoding="utf-8")


def _kept(path: Path) -> tuple[str, str, str] | None:
    """(name, password, hash) from the kept file; a damaged file is removed."""
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
        return str(kept["name"]), str(kept["password"]), str(kept["hash"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        path.unlink(missing_ok=True)
        return None


async def unused_first_password(
    db: AsyncDatabase[dict[str, Any]], data_dir: Path
) -> tuple[str, str] | None:
    """The kept one-time password ``(name, password)`` while nobody has replaced it yet.

    Once the owner has chosen their own password (or the account is gone), the file is removed.
    """
    path = data_dir / FIRST_PASSWORD_FILE
    kept = _kept(path)
    if kept is None:
        return None
    name, password, hashed = kept
    owner = await owners.get(db, name)
    if owner is None or not owner.get("must_change_password") or owner["password_hash"] != hashed:
        _forget(path)
        return None
    return name, password


def _forget(path: Path) -> None:
    path.unlink(missing_ok=True)


def framed(lines: list[str]) -> str:
    """``lines`` in a box, so they stand out at the end of a long log."""
    width = max(len(line) + _wide(line) for line in lines)
    rule = "+" + "-" * (width + 2) + "+"
    body = [f"| {line}{' ' * (width - len(line) - _wide(line))} |" for line in lines]
    return "\n".join([rule, *body, rule])


def _wide(text: str) -> int:
    """How many more terminal columns than characters (CJK characters take two)."""
    return sum(1 for ch in text if unicodedata.east_asian_width(ch) in "WF")


async def owner_banner(
    db: AsyncDatabase[dict[str, Any]], data_dir: Path | None = None
) -> list[str]:
    """The ``serve --dev`` lines about logging in: the one-time password (the first start, and
    later starts while it is unused), or how to add an owner."""
    password = await ensure_first_owner(db, data_dir=data_dir)
    name = "admin"
    if password is None and data_dir is not None:
        kept = await unused_first_password(db, data_dir)
        if kept is not None:
            name, password = kept
    if password is not None:
        return [
            f"Dashboard login: {name} / {password}",
            "(one-time password: you choose your own at the first login)",
        ]
    return ["More owners: python -m service create-owner NAME"]


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
