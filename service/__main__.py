"""The command line: ``python -m service serve | ...`` (also installed as ``wechat-survey``).

Sub-commands live next to the code they drive; each module in ``CLI_MODULES`` has
``add_parser(subparsers)`` that registers its commands with a ``func(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time

from . import __version__

CLI_MODULES = [
    "service.server",
    "service.owners_cli",
    "service.api_cli",
    "service.surveys.cli",
    "service.replies_cli",
    "service.results_cli",
    "service.qr_cli",
]


class _Formatter(logging.Formatter):
    """The standard formatter, with the ``asctime`` text made once per second, not per line."""

    _second = -1
    _text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._text = time.strftime(self.default_time_format, self.converter(second))
            self._second = second
        msec_format = self.default_msec_format
        return msec_format % (self._text, record.msecs) if msec_format else self._text


def setup_logging(level: str = "INFO") -> None:
    """Configure logging once, to stdout (supervisord captures it)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO), handlers=[handler], force=True
    )
    logging.getLogger("pymongo").setLevel(logging.WARNING)
    # urllib3 logs every request line, query string included, at DEBUG: that would put the
    # AppSecret and access tokens (WeChat API calls) into the log with --log-level DEBUG.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.INFO)
    # The format uses none of these: skip collecting them for every record (the logging HOWTO's
    # "Optimization" section). /wechat logs a line per request, so this is on the hot path.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # no caller lookup (sys._getframe) per record


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wechat-survey", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    parser.add_argument(
        "--config", metavar="FILE", help="a KEY=value settings file (the environment wins over it)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in CLI_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
