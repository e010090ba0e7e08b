"""``python -m service surveys check | publish | export | list``: survey definitions.

``check FILE...`` runs exactly the validation publishing runs and prints every mistake as
``file:line:column: path: message``; exit status 1 when there is any.

The others work on the running service's database (``MONGODB_URI``, or the embedded database of
the ``serve`` on the same ``DATA_DIR``, as ``create-owner`` does); every process of the service
picks a publish up within about a second, without a restart:

- ``publish FILE...`` (a folder stands for its ``*.yaml`` files) validates every file (and
  their keywords against the other published surveys) and publishes each as the next version of
  its survey, only when its definition changed; it prints the version. Any mistake: every one
  listed, nothing published, exit 2.
- ``export ID [--version N]`` prints a published version's YAML (default the newest).
- ``list`` shows id, title, open or not, newest version and sessions in progress;
  ``list --files`` (or ``--dir FOLDER``) lists the files of ``SURVEYS_DIR`` instead.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from ..definitions_cli import (
    conclude,
    database_errors,
    on_database,
    out,
    settings_of,
    who,
)
from ..store import Db
from ..store import surveys as sessions_store
from .catalog import MAX_DEFINITION_BYTES, SurveyCatalog
from .engine import SurveyEngine
from .loader import SHIPPED_DIR, Issue, SurveyLoadError, check_paths, load_dir, survey_files

__all__ = ["add_parser", "export", "publish_files"]


def _check(args: argparse.Namespace) -> int:
    # Times without an offset are read in TIMEZONE, as the service reads them.
    tz = settings_of(args).tzinfo
    surveys, issues = check_paths([Path(p) for p in args.paths], tz=tz)
    for issue in issues:
        out(str(issue))
    for survey in surveys:
        low, high = survey.score_range()
        scoring = f", scores {low}–{high} in {len(survey.bands)} band(s)" if survey.bands else ""
        out(
            f"ok: {survey.source}: {survey.id} 「{survey.title}」, "
            f"{survey.total} question(s){scoring}"
        )
    if issues:
        out(f"{len(issues)} mistake(s) found")
        return 1
    return 0


async def publish_files(
    catalog: SurveyCatalog, paths: list[Path], *, by: str
) -> tuple[list[str], list[Issue]]:
    """Validate every file, then publish each; returns the lines to print and the mistakes
    (when there is any mistake, nothing is published)."""
    _surveys, issues = check_paths(paths, tz=catalog.tz)
    # A folder stands for its survey files, as in ``check`` (it used to publish nothing, exit 0).
    files = [f for p in paths for f in (survey_files(p) if p.is_dir() else [p])]
    texts: list[tuple[Path, str]] = []
    for path in files:
        if not path.is_file():
            continue
        if path.stat().st_size > MAX_DEFINITION_BYTES:
            issues.append(Issue(str(path), 0, 0, "", "the definition is over 256 KiB"))
            continue
        texts.append((path, path.read_text(encoding="utf-8")))
    if not issues:
        for path, text in texts:
            issues.extend(catalog.validate(text, str(path))[1])
    if issues:
        return [], issues
    lines = []
    for path, text in texts:
        result = await catalog.publish(text, by=by, source="cli", name=str(path))
        if not result.ok:  # changed under us between the check and the publish
            issues.extend(result.issues)
            continue
        if result.created:
            lines.append(f"published: {result.survey_id} version {result.version} ({path})")
        else:
            lines.append(f"unchanged: {result.survey_id} version {result.version} ({path})")
    return lines, issues


async def export(catalog: SurveyCatalog, survey_id: str, version: int | None) -> str | None:
    return await catalog.export(survey_id, version)


def _publish(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    paths = [Path(p) for p in args.paths]

    def run() -> int:
        lines, issues = on_database(
            settings, lambda catalog, _db: publish_files(catalog, paths, by=who())
        )
        return conclude(lines, issues)

    return database_errors(run)


def _export(args: argparse.Namespace) -> int:
    settings = settings_of(args)

    def run() -> int:
        text = on_database(settings, lambda catalog, _db: export(catalog, args.id, args.version))
        if text is None:
            which = f"version {args.version} of " if args.version else ""
            sys.stderr.write(f"error: no published {which}survey {args.id!r}\n")
            return 1
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return 0

    return database_errors(run)


async def _rows(catalog: SurveyCatalog, db: Db) -> list[dict[str, Any]]:
    counts = await sessions_store.in_progress_by_version(db)
    rows = []
    for survey in catalog.snapshot.current.values():
        in_progress = {v: n for (sid, v), n in counts.items() if sid == survey.id}
        rows.append(
            {
                **survey.describe(),
                "in_progress": sum(in_progress.values()),
                "in_progress_by_version": {str(v): n for v, n in sorted(in_progress.items())},
            }
        )
    for sid, info in catalog.snapshot.info.items():
        if sid not in catalog.snapshot.current:
            rows.append({"id": sid, "title": "", "version": 0, "draft_only": True, **info})
    return rows


def _list_database(args: argparse.Namespace) -> int:
    settings = settings_of(args)

    def run() -> int:
        rows = on_database(settings, _rows)
        if args.json:
            out(json.dumps(rows, ensure_ascii=False, indent=2, default=str))
            return 0
        out(f"{len(rows)} survey(s) in the database:")
        for row in rows:
            if row.get("draft_only"):
                out(f"  {row['id']:<16} (a draft, nothing published yet)")
                continue
            out(
                f"  {row['id']:<16} 「{row['title']}」 version {row['version']}, "
                f"{row['availability']}, {row['in_progress']} in progress; "
                f"keywords: {'、'.join(row['keywords'])}"
            )
        return 0

    return database_errors(run)


def _list(args: argparse.Namespace) -> int:
    if not (args.files or args.dir):
        return _list_database(args)
    settings = settings_of(args)
    folder = Path(args.dir) if args.dir else settings.surveys_dir or SHIPPED_DIR
    try:
        surveys = load_dir(folder, tz=settings.tzinfo)
    except SurveyLoadError as e:
        for issue in e.issues:
            out(str(issue))
        return 1
    engine = SurveyEngine(surveys, tz=settings.tzinfo)
    now = dt.datetime.now(dt.UTC)
    if args.json:
        out(json.dumps([s.describe() for s in engine.all_surveys()], ensure_ascii=False, indent=2))
        return 0
    out(f"{len(surveys)} survey(s) in {folder}:")
    for s in engine.all_surveys():
        retake = "retakes allowed" if s.allow_retake else "no retakes"
        out(
            f"  {s.id:<16} 「{s.title}」 {s.total} question(s), {s.availability(now)}, {retake}; "
            f"keywords: {'、'.join(s.keywords)}"
        )
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "surveys",
        help="check, publish, export or list survey definitions (YAML)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = p.add_subparsers(dest="surveys_command", required=True, metavar="ACTION")
    check = commands.add_parser("check", help="validate survey files; list every mistake")
    check.add_argument("paths", nargs="+", metavar="FILE", help="survey YAML files or folders")
    check.set_defaults(func=_check)
    publish = commands.add_parser(
        "publish", help="validate and publish survey files as new versions (the service's database)"
    )
    publish.add_argument("paths", nargs="+", metavar="FILE", help="survey YAML files")
    publish.set_defaults(func=_publish)
    exporting = commands.add_parser("export", help="print a published survey's YAML")
    exporting.add_argument("id", help="the survey id")
    exporting.add_argument("--version", type=int, help="the version (default the newest)")
    exporting.set_defaults(func=_export)
    listing = commands.add_parser(
        "list", help="list the published surveys (the service's database)"
    )
    listing.add_argument("--files", action="store_true", help="list the files of SURVEYS_DIR")
    listing.add_argument("--dir", help="list the files of this folder")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=_list)
