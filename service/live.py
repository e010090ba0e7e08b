"""The live-traffic hub: subscribe / unsubscribe / publish, across processes.

Every process runs one background task that follows the ``messages`` collection (a MongoDB change
stream; on a standalone mongod, which has none, it polls) and hands each new message to the local
subscribers, the dashboard WebSockets. A message answered by process 2 therefore reaches a dashboard
served by process 1: both watch the same collection. The process that stored the message learns of
it the same way, so there is one path and no duplicates.

The watcher starts with the first subscriber and stops ``idle_stop`` seconds after the last one
has gone (a process nobody watches costs the database nothing). When the stream breaks it
reconnects with the last resume token; when that is no longer possible it fills the gap by
reading the messages received since the last one it delivered.

Busy, it reads in batches: after delivering, it waits ``batch_wait`` (50 ms, inside the live
feed's 100 ms) before asking for more, so one ``getMore`` brings many inserts instead of one
each (measured in bench/README.md: each watching process cost the database 400-900 us of CPU per
message at 0.3-0.8 getMore per message).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Mapping
from typing import Any

from pymongo.asynchronous.change_stream import AsyncChangeStream
from pymongo.asynchronous.database import AsyncDatabase

from .changes import ChangeFollower
from .store import dashboard as store

__all__ = ["Hub", "Listener", "message_event"]

log = logging.getLogger(__name__)

Listener = Callable[[dict[str, Any]], None]


def message_event(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The event a subscriber receives for one stored message."""
    return {"type": "message", "message": store.message_view(doc)}


class Hub(ChangeFollower):
    """Fan-out of new messages to this process's subscribers; its watcher is a
    ``service.changes.ChangeFollower`` on ``messages``."""

    def __init__(
        self,
        db: AsyncDatabase[dict[str, Any]],
        *,
        poll_interval: float = 1.0,
        max_backoff: float = 10.0,
        gap_overlap: float = 5.0,
        batch_wait: float = 0.05,
        idle_stop: float = 60.0,
    ) -> None:
        super().__init__(
            "live feed", poll_interval=poll_interval, max_backoff=max_backoff, batch_wait=batch_wait
        )
        self.db = db
        self.idle_stop = idle_stop
        # How far back the gap-filling query looks before the last delivered message: inserts
        # from other processes commit slightly out of order.
        self.gap_overlap = dt.timedelta(seconds=gap_overlap)
        self.delivered = 0
        self._listeners: list[Listener] = []
        self._ready = asyncio.Event()
        self._last_at: dt.datetime | None = None
        self._recent: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._followed = False
        self._unwatched_since: float | None = None

    # -- subscribers --------------------------------------------------------------------------
    @property
    def subscribers(self) -> int:
        return len(self._listeners)

    def subscribe(self, listener: Listener) -> None:
        """Add ``listener``; it is called with each event and dropped if it raises."""
        if listener not in self._listeners:
            self._listeners.append(listener)
        self.start()

    def unsubscribe(self, listener: Listener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def publish(self, event: dict[str, Any]) -> None:
        """Hand ``event`` to every subscriber of this process."""
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # boundary: one broken subscriber must not stop the others
                log.info("dropping a live subscriber whose delivery failed", exc_info=True)
                self.unsubscribe(listener)

    # -- the watcher --------------------------------------------------------------------------
    async def ready(self) -> None:
        """Wait until the watcher follows the collection: later inserts will be delivered.

        Callers bound the wait with ``asyncio.timeout``.
        """
        self.start()
        await self._ready.wait()

    async def stop(self) -> None:
        self._listeners.clear()
        await super().stop()

    def _seen(self, key: str) -> bool:
        if key in self._recent:
            return True
        self._recent[key] = None
        while len(self._recent) > 5000:
            self._recent.popitem(last=False)
        return False

    def _deliver(self, doc: Mapping[str, Any]) -> None:
        if self._seen(str(doc["_id"])):
            return
        at = doc.get("received_at")
        if isinstance(at, dt.datetime) and (self._last_at is None or at > self._last_at):
            self._last_at = at
        self.delivered += 1
        self.publish(message_event(doc))

    async def _fill_gap(self) -> None:
        """Deliver what was stored while the watcher was not following (deduplicated)."""
        if self._last_at is None:
            return
        since = self._last_at - self.gap_overlap
        for doc in await store.messages_after(self.db, since, limit=1000):
            self._deliver(doc)

    def _idle_too_long(self) -> bool:
        """No subscriber for ``idle_stop`` seconds: time to stop following."""
        now = asyncio.get_running_loop().time()
        if self._listeners:
            self._unwatched_since = None
            return False
        if self._unwatched_since is None:
            self._unwatched_since = now
        return now - self._unwatched_since >= self.idle_stop

    def _forget_position(self) -> None:
        """The next start follows from then on: nobody was watching what came in between."""
        self._resume_token = None
        self._last_at = None
        self._followed = False
        self._unwatched_since = None
        self._ready.clear()
        if self.mode != "polling":
            self.mode = "idle"

    async def _run(self) -> None:
        await super()._run()
        if not self._stopped:  # nobody watching (a broken stream keeps its place: it resumes)
            self._forget_position()

    # -- ChangeFollower's hooks ---------------------------------------------------------------
    def _keep_going(self) -> bool:
        return not self._idle_too_long()

    async def _setup(self) -> None:
        if self._last_at is None:
            self._last_at = dt.datetime.now(dt.UTC)

    async def _open(self, resume_after: Mapping[str, Any] | None) -> AsyncChangeStream[Any]:
        return await store.watch_messages(self.db, resume_after=resume_after)

    async def _opened(self, resumed: bool) -> None:
        if self._followed and not resumed:
            # A fresh stream starts now: read what arrived since the last delivery.
            await self._fill_gap()
        self._followed = True
        self._ready.set()

    async def _changed(self, change: Mapping[str, Any]) -> None:
        doc = change.get("fullDocument")
        if doc is not None:
            self._deliver(doc)

    async def _poll_once(self) -> None:
        self._ready.set()
        await self._fill_gap()

    def _interrupted(self) -> None:
        self._ready.clear()
