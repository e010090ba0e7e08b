"""Owner-editable definitions, held in memory and kept in step in every process.

Surveys today (reply rules and the menu later) are data in MongoDB that the hot path reads from
an immutable in-memory snapshot, never from the database. ``DefinitionWatcher`` is the one
mechanism that swaps the snapshot when the data changes, in every process:

- it follows a change stream on the definitions' collection and reloads on every change (the
  stream is opened *before* the first load, so nothing written in between is missed);
- on a server without change streams (a standalone mongod) it polls a cheap stamp (``stamp()``,
  e.g. every document's ``updated_at``) every ``poll_interval`` seconds and reloads when it moved;
- when the stream breaks it reopens it with the last resume token; a lost resume point (or any
  fresh stream) is followed by a full reload, so a change can be late but never lost.

The owner of a kind of definition supplies three coroutines: ``watch(resume_after)`` (the change
stream), ``stamp()`` and ``reload()`` (read everything, validate, swap the snapshot; it must leave
the old snapshot in place when it fails, and never swap in a snapshot older than the one it
holds: reloads may overlap). The watcher is the same code for every kind; it follows
``service.live.Hub``'s approach (stream first, polling fallback, resume tokens, backoff).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pymongo.asynchronous.change_stream import AsyncChangeStream
from pymongo.errors import OperationFailure, PyMongoError

__all__ = ["DefinitionWatcher"]

log = logging.getLogger(__name__)

# Server error codes meaning "change streams are not available here" (standalone mongod).
_NO_CHANGE_STREAMS = {40573, 40324, 20, 115}
# "The resume token is too old": start a fresh stream (which reloads everything).
_HISTORY_LOST = {280, 286, 136}

Watch = Callable[[Mapping[str, Any] | None], Awaitable[AsyncChangeStream[dict[str, Any]]]]


class DefinitionWatcher:
    """Calls ``reload()`` once at start and again after every change to the watched data."""

    def __init__(
        self,
        name: str,
        *,
        watch: Watch,
        stamp: Callable[[], Awaitable[Any]],
        reload: Callable[[], Awaitable[None]],
        prepare: Callable[[], Awaitable[None]] | None = None,
        poll_interval: float = 1.0,
        max_backoff: float = 10.0,
        polling: bool = False,
    ) -> None:
        """``prepare``: run once (retried until it succeeds) before the first stream is opened,
        so its own writes (e.g. start-up imports) do not come back as changes.
        ``polling``: skip the change stream and poll from the start (tests, diagnostics)."""
        self.name = name
        self._watch = watch
        self._stamp = stamp
        self._reload = reload
        self._prepare = prepare
        self.poll_interval = poll_interval
        self.max_backoff = max_backoff
        self.mode = "polling" if polling else "idle"  # "change-stream", "reconnecting"
        self.reloads = 0
        self._resume_token: Mapping[str, Any] | None = None
        self._last_stamp: Any = None
        self._task: asyncio.Task[None] | None = None
        self._loaded = asyncio.Event()
        self._stopped = False

    @property
    def loaded(self) -> bool:
        return self._loaded.is_set()

    def start(self) -> None:
        """Start following (idempotent; needs a running event loop)."""
        if self._stopped or (self._task is not None and not self._task.done()):
            return
        # A fresh context: started lazily from inside a message's ``pymongo.timeout`` (the
        # inbox's deadline), the task would otherwise inherit that deadline and its change
        # stream would break (and reload, costing round trips) once it passed.
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"{self.name}-watch", context=contextvars.Context()
        )

    async def ready(self) -> None:
        """Wait until the first load succeeded (callers bound the wait)."""
        self.start()
        await self._loaded.wait()

    async def refresh(self) -> None:
        """Reload now (after a change this process made itself: no need to wait for the echo)."""
        await self._do_reload()

    async def stop(self) -> None:
        self._stopped = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.mode = "idle"

    async def _do_reload(self) -> None:
        await self._reload()
        self.reloads += 1
        self._loaded.set()

    async def _run(self) -> None:
        backoff = 0.5
        while not self._stopped:
            try:
                if self._prepare is not None:
                    await self._prepare()
                    self._prepare = None
                if self.mode == "polling":
                    await self._poll()
                else:
                    await self._follow()
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except OperationFailure as e:
                if e.code in _NO_CHANGE_STREAMS:
                    log.warning("%s: no change streams on this server (%s); polling", self.name, e)
                    self.mode = "polling"
                    continue
                if e.code in _HISTORY_LOST:
                    log.warning("%s: resume point lost; reloading everything", self.name)
                    self._resume_token = None
                else:
                    log.warning("%s: watch interrupted: %s", self.name, e)
            except PyMongoError as e:
                log.warning("%s: watch interrupted: %s", self.name, e)
            except Exception:  # boundary: the background task must survive anything
                log.exception("%s: watch failed", self.name)
            if self.mode != "polling":
                self.mode = "reconnecting"
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    async def _follow(self) -> None:
        resuming = self._resume_token is not None
        stream = await self._watch(self._resume_token)
        async with stream:
            self.mode = "change-stream"
            if not resuming or not self.loaded:
                await self._do_reload()  # a fresh stream: what changed before it is read now
            while not self._stopped:
                change = await stream.try_next()
                if stream.resume_token is not None:
                    self._resume_token = stream.resume_token
                if change is not None:
                    await self._do_reload()

    async def _poll(self) -> None:
        while not self._stopped:
            stamp = await self._stamp()
            if not self.loaded or stamp != self._last_stamp:
                await self._do_reload()
                self._last_stamp = stamp
            await asyncio.sleep(self.poll_interval)
