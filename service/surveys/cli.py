"""``python -m service surveys check FILE... | list``: validate and list survey definitions.

``check`` runs exactly the validation start-up runs and prints every mistake as
``file:line:column: path: message``; exit status 1 when there is any. ``list`` shows the surveys
the service would load (``SURVEYS_DIR``, default the shipped folder).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from ..config import Settings
from .engine import SurveyEngine
from .loader import SHIPPED_DIR, SurveyLoadError, check_paths, load_dir

__all__ = ["add_parser"]


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _settings(args: argparse.Namespace) -> Settings:
    """The service's settings (``TIMEZONE``, ``SURVEYS_DIR``); these commands need no token."""
    return Settings.from_env(config_file=getattr(args, "config", None), require_token=False)


def _check(args: argparse.Namespace) -> int:
    # Times without an offset are read in TIMEZONE, as the service reads them.
    tz = _settings(args).tzinfo
    surveys, issues = check_paths([Path(p) for p in args.paths], tz=tz)
    for issue in issues:
        _out(str(issue))
    for survey in surveys:
        low, high = survey.score_range()
        scoring = f", scores {low}–{high} in {len(survey.bands)} band(s)" if survey.bands else ""
        _out(
            f"ok: {survey.source}: {survey.id} 「{survey.title}」, "
            f"{survey.total} question(s){scoring}"
        )
    if issues:
        _out(f"{len(issues)} mistake(s) found")
        return 1
    return 0


def _list(args: argparse.Namespace) -> int:
    settings = _settings(args)
    folder = Path(args.dir) if args.dir else settings.surveys_dir or SHIPPED_DIR
    try:
        surveys = load_dir(folder, tz=settings.tzinfo)
    except SurveyLoadError as e:
        for issue in e.issues:
            _out(str(issue))
        return 1
    engine = SurveyEngine(surveys, tz=settings.tzinfo)
    now = dt.datetime.now(dt.UTC)
    if args.json:
        _out(json.dumps([s.describe() for s in engine.all_surveys()], ensure_ascii=False, indent=2))
        return 0
    _out(f"{len(surveys)} survey(s) in {folder}:")
    for s in engine.all_surveys():
        retake = "retakes allowed" if s.allow_retake else "no retakes"
        _out(
            f"  {s.id:<16} 「{s.title}」 {s.total} question(s), {s.availability(now)}, {retake}; "
            f"keywords: {'、'.join(s.keywords)}"
        )
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("surveys", help="check or list survey definitions (YAML)")
    commands = p.add_subparsers(dest="surveys_command", required=True, metavar="ACTION")
    check = commands.add_parser("check", help="validate survey files; list every mistake")
    check.add_argument("paths", nargs="+", metavar="FILE", help="survey YAML files or folders")
    check.set_defaults(func=_check)
    listing = commands.add_parser("list", help="list the surveys the service loads")
    listing.add_argument("--dir", help="folder to list (default SURVEYS_DIR or the shipped one)")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=_list)
