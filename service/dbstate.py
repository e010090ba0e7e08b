"""Whether this process can reach the database: up, or down since when.

One ``DatabaseState`` per process (built by ``service.process.Process``), shared by everything
that needs to know: the inbox (while the database is down, messages go straight to the spool
instead of waiting for it), the spool replayer (it pings while the database is down, marks it up
again and replays), ``/healthz`` (it reports the state, it never changes it) and ``/metrics``.

Only real database operations change the state: ``failed`` when one of them fails with an outage
error (``service.spool.is_outage``), ``recovered`` when the replayer's ping answers again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pymongo.errors import PyMongoError

if TYPE_CHECKING:
    from .metrics import Metrics

__all__ = ["DatabaseState", "Probe"]

log = logging.getLogger(__name__)


class DatabaseState:
    """Up or down (and since when), with listeners told of every failure."""

    def __init__(self, *, metrics: Metrics | None = None) -> None:
        self.metrics = metrics
        self.up = True
        # time.monotonic() of the first failure of the current outage; None while up.
        self.down_since: float | None = None
        self.outages = 0
        self._listeners: list[Callable[[], None]] = []
        self._probe: Probe | None = None
        self._probing: asyncio.Future[Probe] | None = None

    def on_failure(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every recorded failure (the replayer wakes up on it)."""
        self._listeners.append(listener)

    @property
    def down_for(self) -> float:
        """Seconds since the database was marked down; 0.0 while it is up."""
        return 0.0 if self.down_since is None else time.monotonic() - self.down_since

    def failed(self, error: BaseException, operation: str) -> None:
        """A database operation failed with an outage error: mark the database down."""
        if self.metrics is not None:
            self.metrics.database_errors.labels(operation=operation).inc()
        if self.up:
            self.up = False
            self.down_since = time.monotonic()
            self.outages += 1
            if self.metrics is not None:
                self.metrics.database_up.set(0)
            detail = str(error).splitlines()[0][:200] if str(error) else ""
            log.warning(
                "database unavailable (%s during %s: %s); answering without it and spooling "
                "messages until it is back",
                type(error).__name__,
                operation,
                detail,
            )
        for listener in self._listeners:
            listener()

    def recovered(self) -> None:
        """The database answers again (a ping succeeded): mark it up."""
        if self.up:
            return
        log.warning("database reachable again after %.1f s; replaying the spool", self.down_for)
        self.up = True
        self.down_since = None
        if self.metrics is not None:
            self.metrics.database_up.set(1)

    def report(self) -> dict[str, Any]:
        """What ``/healthz`` shows of it."""
        return {"up": self.up, "down_for_s": round(self.down_for, 1)}

    async def probe(self, ping: Callable[[], Awaitable[float]], *, max_age: float = 1.0) -> Probe:
        """A ping for ``/healthz``: at most one every ``max_age`` seconds, shared by concurrent
        callers (a flood of health checks costs the database one ping a second). Its failure is
        reported, not recorded: only the hot path and the replayer mark the database down."""
        now = time.monotonic()
        cached = self._probe
        # A failed ping is not reused once the database is known to be back (the replayer saw it
        # answer): the next health check pings again instead of reporting a stale outage.
        if cached is not None and now - cached.at < max_age and (cached.ok or not self.up):
            return cached
        if self._probing is None or self._probing.done():
            self._probing = asyncio.ensure_future(self._ping(ping))
        return await asyncio.shield(self._probing)

    async def _ping(self, ping: Callable[[], Awaitable[float]]) -> Probe:
        try:
            result = Probe(time.monotonic(), ping_ms=round(await ping(), 2))
        except PyMongoError as e:
            result = Probe(time.monotonic(), error=type(e).__name__)
        self._probe = result
        return result


@dataclasses.dataclass(frozen=True)
class Probe:
    """One health ping: when (monotonic), its latency, or the error's name."""

    at: float
    ping_ms: float | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error
