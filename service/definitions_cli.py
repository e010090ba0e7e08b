"""What the definition commands (``surveys ...``, ``replies ...``) share: their settings, who they
say published, the database they work on, and how they report mistakes and exit.

Exit status: 0 done; 1 ``check`` found mistakes; 2 ``publish`` found mistakes (every one listed,
nothing published) or the database could not be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from .config import ConfigError, Settings
from .db import open_database
from .embedded import EmbeddedDatabaseError
from .store import Db
from .surveys.catalog import SurveyCatalog
from .surveys.loader import Issue

__all__ = ["conclude", "database_errors", "on_database", "out", "report", "settings_of", "who"]

log = logging.getLogger(__name__)
T = TypeVar("T")


def out(text: str) -> None:
    sys.stdout.write(text + "\n")


def settings_of(args: argparse.Namespace) -> Settings:
    """The service's settings (``TIMEZONE``, ``SURVEYS_DIR``); these commands need no token."""
    return Settings.from_env(config_file=getattr(args, "config", None), require_token=False)


def who() -> str:
    """Who a publish from the command line is recorded as."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in this environment (a container)
        return "cli"


def on_database(settings: Settings, work: Callable[[SurveyCatalog, Db], Awaitable[T]]) -> T:
    """Run ``work`` with a catalog of the service's database (loaded, not following)."""

    async def run() -> T:
        async with open_database(settings) as (_client, db):
            catalog = SurveyCatalog(db, tz=settings.tzinfo)
            await catalog.refresh()
            return await work(catalog, db)

    return asyncio.run(run())


def database_errors(run: Callable[[], int]) -> int:
    """``run()``'s exit status; 2 (the reason logged) when the database cannot be reached."""
    try:
        return run()
    except (EmbeddedDatabaseError, ConfigError) as e:
        log.error("%s", e)
        return 2


def report(issues: Sequence[Issue], tail: str = "") -> None:
    """Every mistake as ``file:line:column: path: message``, then how many."""
    for issue in issues:
        out(str(issue))
    out(f"{len(issues)} mistake(s) found{tail}")


def conclude(lines: Sequence[str], issues: Sequence[Issue], *, done: bool = True) -> int:
    """The end of a publish: what was published, then every mistake. Exit 2 when there is any
    mistake (or nothing was ``done``), else 0."""
    for line in lines:
        out(line)
    if issues or not done:
        report(issues, "" if lines else "; nothing published")
        return 2
    return 0
