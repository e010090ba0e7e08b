"""``results ID --format csv|xlsx -o FILE``: a survey's results from the service's database.

The same files as the dashboard's exports, with the same filters (``--channel``, ``--state``,
``--from``/``--to`` local dates in TIMEZONE, ``--band``, ``--answered QID:N``, ``--version``),
and ``--pseudonymous`` (pseudonyms instead of openids, as the dashboard's option).
Without ``MONGODB_URI`` the command uses the embedded database of the service running on the
same ``DATA_DIR`` (``make run``), or starts it for its duration, as ``create-owner`` does.
Exit 0 with the number of rows written on standard error, 1 for an unknown survey or a mistaken
filter (every mistake listed), 2 when the database cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import logging
import sys
from pathlib import Path

from . import exports, privacy, reports
from .config import ConfigError, Settings
from .db import open_database
from .embedded import EmbeddedDatabaseError
from .surveys.catalog import SurveyCatalog

__all__ = ["add_parser", "export_results"]

log = logging.getLogger(__name__)

EXPORT_SOCKET_TIMEOUT_MS = 15 * 60 * 1000


class ResultsError(Exception):
    pass


async def export_results(settings: Settings, args: argparse.Namespace) -> int:
    """Write the file; returns the rows written (``ResultsError`` for the caller's mistakes)."""
    # A batch tool: the embedded SecantusDB reads a large survey's sessions for a long time
    # before the first batch (tens of seconds at 100,000), longer than the service's 10 s; and
    # while it does, its heartbeat answers late (a 2-s heartbeat would reset the pool and
    # cancel the read).
    async with open_database(
        settings,
        socketTimeoutMS=EXPORT_SOCKET_TIMEOUT_MS,
        connectTimeoutMS=EXPORT_SOCKET_TIMEOUT_MS,
    ) as (_client, db):
        catalog = SurveyCatalog(db, tz=settings.tzinfo)
        await catalog.refresh()
        survey = catalog.snapshot.current.get(args.id)
        if survey is None:
            raise ResultsError(f"no published survey {args.id!r}")
        values = {
            "channel": args.channel or "",
            "state": args.state or "",
            "from": getattr(args, "from") or "",
            "to": args.to or "",
            "band": args.band or "",
            "answered": ",".join(args.answered or []),
        }
        try:
            filters = reports.parse_filters(
                survey, lambda name: values.get(name, ""), timezone=settings.timezone
            )
        except reports.FilterError as e:
            raise ResultsError("\n".join(e.errors)) from e
        versions = [args.version] if args.version else None
        pseudonym = await privacy.pseudonymizer(db) if args.pseudonymous else None
        out = Path(args.output)
        if args.format == "xlsx":
            return await exports.write_xlsx(
                db,
                survey,
                out,
                include_test=args.test,
                versions=versions,
                filters=filters,
                timezone=settings.timezone,
                pseudonym=pseudonym,
            )
        rows = 0
        # A command-line tool: nothing else waits on this loop.
        with out.open("w", encoding="utf-8-sig", newline="") as f:  # noqa: ASYNC230
            writer = csv.writer(f, lineterminator="\r\n")
            header = reports.csv_header(survey)
            if pseudonym is not None:
                header[0] = "pseudonym"
            writer.writerow(header)
            async for row in reports.csv_rows(
                db,
                survey,
                include_test=args.test,
                filters=filters,
                versions=versions,
                pseudonym=pseudonym,
            ):
                writer.writerow(row)
                rows += 1
        return rows


def _results(args: argparse.Namespace) -> int:
    from .server import load_settings

    try:
        settings = load_settings(args, dev=True)
        rows = asyncio.run(export_results(settings, args))
    except ResultsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (EmbeddedDatabaseError, ConfigError) as e:
        log.error("%s", e)
        return 2
    print(f"{rows} session(s) written to {args.output}", file=sys.stderr)
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "results",
        help="export a survey's results (CSV or XLSX) from the service's database",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("id", help="the survey id")
    p.add_argument("--format", choices=("csv", "xlsx"), default="csv")
    p.add_argument("-o", "--output", required=True, help="the file to write")
    p.add_argument("--channel", help="only sessions from this channel (QR code)")
    p.add_argument("--state", help="finished, in_progress, paused, expired, ...")
    p.add_argument("--from", dest="from", help="started on or after this local date YYYY-MM-DD")
    p.add_argument("--to", help="started on or before this local date YYYY-MM-DD")
    p.add_argument("--band", help="only this result band")
    p.add_argument(
        "--answered", action="append", metavar="QID:N", help="chose option N of question QID"
    )
    p.add_argument("--version", type=int, help="only sessions started on this version")
    p.add_argument("--test", action="store_true", help="include test (simulator) users")
    p.add_argument(
        "--pseudonymous",
        action="store_true",
        help="pseudonyms instead of openids (a keyed hash: the same person gets the same one "
        "in every export, irreversible without the secret kept in the database)",
    )
    p.set_defaults(func=_results)
