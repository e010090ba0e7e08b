"""Time: the current moment and the one ISO 8601 text every JSON answer and export uses.

``iso()`` writes UTC with milliseconds and a ``Z`` (``2026-11-26T15:30:00.000Z``), which
JavaScript's ``Date`` and Python's ``datetime.fromisoformat`` both read. Times shown to people
in a sentence use the owner's ``Settings.timezone`` instead (see ``service.surveys``).
"""

from __future__ import annotations

import datetime as dt

__all__ = ["iso", "now"]


def now() -> dt.datetime:
    """The current time, timezone-aware, in UTC."""
    return dt.datetime.now(dt.UTC)


def iso(value: object) -> str | None:
    """``value`` as ``YYYY-MM-DDTHH:MM:SS.mmmZ``; None for anything but a datetime.

    A naive datetime (as a driver without ``tz_aware`` returns them) is taken to be UTC.
    """
    if not isinstance(value, dt.datetime):
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
