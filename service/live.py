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

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure, PyMongoError

from .store import dashboard as store

__all__ = ["Hub", "Listener", "message_event"]

log = logging.getLogger(__name__)

Listener = Callable[[dict[str, Any]], None]
# Server error codes meaning "change streams are not available here" (standalone mongod).
_NO_CHANGE_STREAMS = {40573, 40324, 20, 115}
# Error codes meaning "the resume token is too old": start afresh and fill the gap by a query.
_HISTORY_LOST = {280, 286, 136}


def _buffered(stream: Any) -> int:
    """Changes the stream has read and not handed out yet (0 when unknown): PyMongo keeps them in
    its cursor's buffer, which it does not expose; read defensively."""
    data = getattr(getattr(stream, "_cursor", None), "_data", None)
    try:
        return len(data) if data is not None else 0
    except TypeError:
        return 0


def message_event(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The event a subscriber receives for one stored message."""
    return {"type": "message", "message": store.message_view(doc)}


class Hub:
    """Fan-out of new messages to this process's subscribers."""

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
        self.db = db
        self.batch_wait = batch_wait
        self.idle_stop = idle_stop
        self.poll_interval = poll_interval
        self.max_backoff = max_backoff
        # How far back the gap-filling query looks before the last delivered message: inserts
        # from other processes commit slightly out of order.
        self.gap_overlap = dt.timedelta(seconds=gap_overlap)
        self.mode = "idle"  # "change-stream", "polling", "reconnecting"
        self.delivered = 0
        self._listeners: list[Listener] = []
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._stopped = False
        self.polls = 0  # polling passes done (polling mode), for tests and diagnostics
        self._resume_token: Mapping[str, Any] | None = None
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
    def start(self) -> None:
        """Start following the collection (idempotent; needs a running event loop)."""
        if self._stopped or (self._task is not None and not self._task.done()):
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="live-hub")

    async def ready(self) -> None:
        """Wait until the watcher follows the collection: later inserts will be delivered.

        Callers bound the wait with ``asyncio.timeout``.
        """
        self.start()
        await self._ready.wait()

    async def stop(self) -> None:
        self._stopped = True
        self._listeners.clear()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.mode = "idle"

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
        await self._run_until_idle()
        if not self._stopped:  # nobody watching (a broken stream keeps its place: it resumes)
            self._forget_position()

    async def _run_until_idle(self) -> None:
        backoff = 0.5
        if self._last_at is None:
            self._last_at = dt.datetime.now(dt.UTC)
        while not self._stopped and not self._idle_too_long():
            try:
                if self.mode == "polling":
                    await self._poll()
                else:
                    await self._follow()
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except OperationFailure as e:
                if e.code in _NO_CHANGE_STREAMS:
                    log.warning("no change streams on this server (%s); polling instead", e)
                    self.mode = "polling"
                    continue
                if e.code in _HISTORY_LOST:
                    log.warning("live feed: resume point lost; filling the gap by a query")
                    self._resume_token = None
                else:
                    log.warning("live feed interrupted: %s", e)
            except PyMongoError as e:
                log.warning("live feed interrupted: %s", e)
            except Exception:  # boundary: the background task must survive anything
                log.exception("live feed failed")
            self._ready.clear()
            if self.mode != "polling":
                self.mode = "reconnecting"
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    async def _follow(self) -> None:
        resuming = self._resume_token is not None
        stream = await store.watch_messages(self.db, resume_after=self._resume_token)
        async with stream:
            self.mode = "change-stream"
            if self._followed and not resuming:
                # A fresh stream starts now: read what arrived since the last delivery.
                await self._fill_gap()
            self._followed = True
            self._ready.set()
            log.info("live feed following messages (change stream)")
            while not self._stopped:
                change = await stream.try_next()
                if stream.resume_token is not None:
                    self._resume_token = stream.resume_token
                if change is None:
                    if self._idle_too_long():
                        log.info("live feed: nobody watching; stopped following")
                        return
                    continue
                doc = change.get("fullDocument")
                if doc is not None:
                    self._deliver(doc)
                if self.batch_wait and _buffered(stream) == 0:
                    # What the last read brought is delivered: let inserts gather so the next
                    # read brings them together (a quiet feed waits in the read, not here).
                    await asyncio.sleep(self.batch_wait)

    async def _poll(self) -> None:
        self._ready.set()
        while not self._stopped and not self._idle_too_long():
            await self._fill_gap()
            self.polls += 1
            await asyncio.sleep(self.poll_interval)
