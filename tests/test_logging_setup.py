"""The log format of ``python -m service``: the per-second ``asctime`` cache changes nothing."""

from __future__ import annotations

import logging

from service.__main__ import _Formatter

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def test_cached_asctime_formats_exactly_like_the_standard_formatter():
    standard, cached = logging.Formatter(FORMAT), _Formatter(FORMAT)
    record = logging.LogRecord("handlers.wechat", logging.INFO, "", 0, "wechat %s", ("x",), None)
    for step in (0.0, 0.001, 0.25, 0.9, 1.0, 3600.5, -3600.0):  # same second, later, earlier
        record.created += step
        record.msecs = (record.created % 1) * 1000
        assert cached.format(record) == standard.format(record)
    assert _Formatter(FORMAT, datefmt="%H:%M").format(record) == logging.Formatter(
        FORMAT, datefmt="%H:%M"
    ).format(record)
