"""Following a collection: a change stream, a polling fallback, resume tokens, a clean stop.

``ChangeFollower`` is the one background loop behind ``service.live.Hub`` (new messages, to the
dashboards) and ``service.definitions.DefinitionWatcher`` (owner-edited definitions):

- it opens a change stream and hands each change to ``_changed``; a stream opened without a
  resume token is a fresh one, and ``_opened(resumed=False)`` reads what came before it (a full
  reload, a gap-filling query), so a change can be late but never lost;
- on a server without change streams (a standalone mongod) it switches to polling for good:
  ``_poll_once`` every ``poll_interval`` seconds;
- when the stream breaks it reopens it with the last resume token, after a backoff that doubles
  up to ``max_backoff``; a lost resume point starts a fresh stream, and so does a stream the
  server ended (``invalidate``: the collection or its database was dropped or renamed), which
  would otherwise answer every read at once with nothing and keep the event loop to itself;
- ``_keep_going()`` returning False ends the loop (the hub with nobody watching); ``stop()``
  cancels it, for good.

Busy, it can read in batches: with ``batch_wait``, once a read's changes are all handled it waits
that long before the next read, so one ``getMore`` brings many changes instead of one each.

A subclass supplies ``_open``, ``_changed`` and ``_poll_once``; ``_setup``, ``_opened``,
``_interrupted`` and ``_keep_going`` are optional hooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Mapping
from typing import Any

from pymongo.asynchronous.change_stream import AsyncChangeStream
from pymongo.errors import OperationFailure, PyMongoError

__all__ = ["HISTORY_LOST", "NO_CHANGE_STREAMS", "ChangeFollower"]

log = logging.getLogger(__name__)

# Server error codes meaning "change streams are not available here" (standalone mongod).
NO_CHANGE_STREAMS = frozenset({40573, 40324, 20, 115})
# "The resume token is too old": start a fresh stream (which reads what it missed).
HISTORY_LOST = frozenset({280, 286, 136})


def _buffered(stream: Any) -> int:
    """Changes the stream has read and not handed out yet (0 when unknown): PyMongo keeps them in
    its cursor's buffer, which it does not expose; read defensively."""
    data = getattr(getattr(stream, "_cursor", None), "_data", None)
    try:
        return len(data) if data is not None else 0
    except TypeError:
        return 0


class _StreamEnded(Exception):
    """The server closed the change stream (after an ``invalidate``): it cannot be resumed."""


class ChangeFollower:
    """One background task following one collection (see the module's docstring)."""

    def __init__(
        self,
        name: str,
        *,
        poll_interval: float = 1.0,
        max_backoff: float = 10.0,
        batch_wait: float = 0.0,
        empty_read_wait: float = 0.0,
        polling: bool = False,
    ) -> None:
        """``name``: for logs and the task. ``polling``: skip the change stream and poll from
        the start (tests, diagnostics)."""
        self.name = name
        self.poll_interval = poll_interval
        self.max_backoff = max_backoff
        self.batch_wait = batch_wait
        # After a read that brought nothing, wait this long before the next. SecantusDB ends a
        # change stream's wait at any write in the database, so without it a stream that changes
        # rarely (the definitions) would cost a getMore per stored message.
        self.empty_read_wait = empty_read_wait
        self.mode = "polling" if polling else "idle"  # "change-stream", "reconnecting"
        self.polls = 0  # polling passes done (polling mode), for tests and diagnostics
        self._resume_token: Mapping[str, Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    # -- what a subclass supplies ---------------------------------------------------------------
    async def _open(self, resume_after: Mapping[str, Any] | None) -> AsyncChangeStream[Any]:
        """The change stream, resuming after ``resume_after`` when given."""
        raise NotImplementedError

    async def _changed(self, change: Mapping[str, Any]) -> None:
        """One change from the stream."""
        raise NotImplementedError

    async def _poll_once(self) -> None:
        """One polling pass (a server without change streams)."""
        raise NotImplementedError

    async def _setup(self) -> None:
        """Before each attempt to follow; a failure is retried with the backoff."""

    async def _opened(self, resumed: bool) -> None:
        """The stream is open; not ``resumed``: a fresh stream, what came before it is not in it."""

    def _interrupted(self) -> None:
        """Following broke (the loop retries after a backoff)."""

    def _keep_going(self) -> bool:
        """False: stop following (checked between attempts, passes and quiet reads)."""
        return True

    # -- life cycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start following (idempotent; needs a running event loop)."""
        if self._stopped or (self._task is not None and not self._task.done()):
            return
        # A fresh context: started lazily from inside a message's ``pymongo.timeout`` (the
        # inbox's deadline), the task would otherwise inherit that deadline and its change
        # stream would break (and start afresh, costing round trips) once it passed.
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"{self.name} watcher", context=contextvars.Context()
        )

    async def stop(self) -> None:
        """Stop following, for good (``start`` does nothing afterwards)."""
        self._stopped = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.mode = "idle"

    # -- the loop -------------------------------------------------------------------------------
    async def _run(self) -> None:
        backoff = 0.5
        while not self._stopped and self._keep_going():
            try:
                await self._setup()
                if self.mode == "polling":
                    await self._poll()
                else:
                    await self._follow()
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except _StreamEnded:
                log.warning(
                    "%s: the change stream ended (collection or database dropped); starting afresh",
                    self.name,
                )
                self._resume_token = None
            except OperationFailure as e:
                if e.code in NO_CHANGE_STREAMS:
                    log.warning("%s: no change streams on this server (%s); polling", self.name, e)
                    self.mode = "polling"
                    continue
                if e.code in HISTORY_LOST:
                    log.warning("%s: resume point lost; starting afresh", self.name)
                    self._resume_token = None
                else:
                    log.warning("%s: interrupted: %s", self.name, e)
            except PyMongoError as e:
                log.warning("%s: interrupted: %s", self.name, e)
            except Exception:  # boundary: the background task must survive anything
                log.exception("%s: failed", self.name)
            self._interrupted()
            if self.mode != "polling":
                self.mode = "reconnecting"
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    async def _follow(self) -> None:
        resumed = self._resume_token is not None
        stream = await self._open(self._resume_token)
        async with stream:
            self.mode = "change-stream"
            await self._opened(resumed)
            log.info("%s: following (change stream)", self.name)
            while not self._stopped:
                if not stream.alive:
                    # A closed stream's reads return None at once, without any I/O: looping on
                    # them would never give the event loop back.
                    raise _StreamEnded
                change = await stream.try_next()
                if stream.resume_token is not None:
                    self._resume_token = stream.resume_token
                if change is None:
                    if not self._keep_going():
                        log.info("%s: stopped following", self.name)
                        return
                    if self.empty_read_wait:
                        await asyncio.sleep(self.empty_read_wait)
                    continue
                await self._changed(change)
                if self.batch_wait and _buffered(stream) == 0:
                    # What the last read brought is handled: let changes gather so the next
                    # read brings them together (a quiet stream waits in the read, not here).
                    await asyncio.sleep(self.batch_wait)

    async def _poll(self) -> None:
        while not self._stopped and self._keep_going():
            await self._poll_once()
            self.polls += 1
            await asyncio.sleep(self.poll_interval)
