"""The command line: ``python -m service serve | ...`` (also installed as ``wechat-survey``).

Sub-commands live next to the code they drive; each module in ``CLI_MODULES`` has
``add_parser(subparsers)`` that registers its commands with a ``func(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import __version__

CLI_MODULES = [
    "service.server",
    "service.owners_cli",
    "service.api_cli",
    "service.surveys.cli",
]


def setup_logging(level: str = "INFO") -> None:
    """Configure logging once, to stdout (supervisord captures it)."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
        force=True,
    )
    logging.getLogger("pymongo").setLevel(logging.WARNING)


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
