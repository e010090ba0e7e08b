"""``python -m service replies check | export | publish``: the reply rules as YAML, for git users.

``check FILE`` runs the validation a publish runs (without the database: survey names and
keywords are not checked) and prints every mistake as ``file:line:column: path: message``.

The others work on the running service's database (``MONGODB_URI``, or the embedded database of
the ``serve`` on the same ``DATA_DIR``, as ``create-owner`` does); every process applies a publish
within about a second, without a restart:

- ``export`` prints the replies in force as YAML (the built-in ones when nothing was saved).
- ``publish FILE`` validates the whole file (surveys named must be published; an exact keyword
  must not be a survey's) and saves it as the next version; any mistake: every one listed,
  nothing saved, exit 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from .config import Settings
from .definitions_cli import conclude, database_errors, on_database, out, report, settings_of, who
from .replies import MAX_DEFINITION_BYTES, ReplyRules, dump_yaml, parse_yaml
from .store import Db
from .surveys.catalog import SurveyCatalog
from .surveys.engine import SurveyEngine
from .surveys.loader import Issue

__all__ = ["add_parser"]

T = TypeVar("T")


def _on_database(settings: Settings, work: Callable[[ReplyRules], Awaitable[T]]) -> T:
    """Run ``work`` with the reply rules of the service's database (loaded, not following),
    checked against its published surveys."""

    async def with_rules(catalog: SurveyCatalog, db: Db) -> T:
        rules = ReplyRules(db, surveys=SurveyEngine(catalog=catalog, tz=settings.tzinfo))
        await rules.refresh()
        return await work(rules)

    return on_database(settings, with_rules)


def _read(path: Path) -> tuple[str | None, list[Issue]]:
    try:
        if path.stat().st_size > MAX_DEFINITION_BYTES:
            return None, [Issue(str(path), 0, 0, "", f"over {MAX_DEFINITION_BYTES // 1024} KiB")]
        return path.read_text(encoding="utf-8"), []
    except (OSError, UnicodeDecodeError) as e:
        return None, [Issue(str(path), 0, 0, "", f"cannot read it: {e}")]


def _check(args: argparse.Namespace) -> int:
    path = Path(args.path)
    text, issues = _read(path)
    if text is not None:
        book, issues = parse_yaml(text, str(path))
        if book is not None:
            out(f"ok: {path}: {len(book.rules)} rule(s)")
            return 0
    report(issues)
    return 1


def _export(args: argparse.Namespace) -> int:
    settings = settings_of(args)

    async def work(rules: ReplyRules) -> str:
        return dump_yaml(rules.snapshot)

    def run() -> int:
        sys.stdout.write(_on_database(settings, work))
        return 0

    return database_errors(run)


def _publish(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    path = Path(args.path)

    async def work(rules: ReplyRules) -> tuple[int, list[Issue]]:
        text, issues = _read(path)
        if text is None:
            return 0, issues
        book, issues = rules.check_yaml(text, str(path))
        if book is None:
            return 0, issues
        result = await rules.publish(book, by=who(), source="cli")
        return result.version, list(result.issues)

    def run() -> int:
        version, issues = _on_database(settings, work)
        published = (
            [] if issues or not version else [f"published: reply rules version {version} ({path})"]
        )
        return conclude(published, issues, done=bool(version))

    return database_errors(run)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "replies",
        help="check, export or publish the reply rules (YAML)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = p.add_subparsers(dest="replies_command", required=True, metavar="ACTION")
    check = commands.add_parser("check", help="validate a replies file; list every mistake")
    check.add_argument("path", metavar="FILE")
    check.set_defaults(func=_check)
    exporting = commands.add_parser("export", help="print the reply rules in force as YAML")
    exporting.set_defaults(func=_export)
    publish = commands.add_parser(
        "publish", help="validate and save a replies file (the service's database)"
    )
    publish.add_argument("path", metavar="FILE")
    publish.set_defaults(func=_publish)
