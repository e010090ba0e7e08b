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
holds: reloads may overlap). ``LiveSnapshot`` is that reload, done once for every kind: a
subclass supplies only ``_build()`` (read and validate) and gets the snapshot, the swap that
never goes back, and the watcher's start / ready / refresh / close. The watcher is the same code
for every kind, and its loop (stream first, polling fallback, resume tokens, backoff) is
``service.changes.ChangeFollower``, the one ``service.live.Hub`` runs too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, TypeVar

from pymongo.asynchronous.change_stream import AsyncChangeStream

from .changes import ChangeFollower

__all__ = ["DefinitionWatcher", "LiveSnapshot"]

S = TypeVar("S")

Watch = Callable[[Mapping[str, Any] | None], Awaitable[AsyncChangeStream[dict[str, Any]]]]


EMPTY_READ_WAIT = 0.5  # seconds between reads of a stream that brought nothing


class DefinitionWatcher(ChangeFollower):
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
        # A quiet stream is read twice a second at most (changes are live within 2 s).
        super().__init__(
            name,
            poll_interval=poll_interval,
            max_backoff=max_backoff,
            empty_read_wait=EMPTY_READ_WAIT,
            polling=polling,
        )
        self._watch = watch
        self._stamp = stamp
        self._reload = reload
        self._prepare = prepare
        self.reloads = 0
        self._last_stamp: Any = None
        self._loaded = asyncio.Event()

    @property
    def loaded(self) -> bool:
        return self._loaded.is_set()

    async def ready(self) -> None:
        """Wait until the first load succeeded (callers bound the wait)."""
        self.start()
        await self._loaded.wait()

    async def refresh(self) -> None:
        """Reload now (after a change this process made itself: no need to wait for the echo)."""
        await self._do_reload()

    async def _do_reload(self) -> None:
        await self._reload()
        self.reloads += 1
        self._loaded.set()

    # -- ChangeFollower's hooks -----------------------------------------------------------------
    async def _setup(self) -> None:
        if self._prepare is not None:
            await self._prepare()
            self._prepare = None

    async def _open(self, resume_after: Mapping[str, Any] | None) -> AsyncChangeStream[Any]:
        return await self._watch(resume_after)

    async def _opened(self, resumed: bool) -> None:
        if not resumed or not self.loaded:
            await self._do_reload()  # a fresh stream: what changed before it is read now

    async def _changed(self, change: Mapping[str, Any]) -> None:
        await self._do_reload()

    async def _poll_once(self) -> None:
        stamp = await self._stamp()
        if not self.loaded or stamp != self._last_stamp:
            await self._do_reload()
            self._last_stamp = stamp


class LiveSnapshot(Generic[S]):
    """An immutable snapshot of one kind of definition, swapped whole by a ``DefinitionWatcher``.

    The owner of a kind subclasses it and supplies ``_build()``: read everything, validate, and
    return the new snapshot, or ``None`` to keep the one in place (the data failed validation).
    Loads may overlap (a refresh after a save, a change from the stream): a load swaps its
    snapshot in only if no load started after it has swapped already.
    """

    def __init__(
        self,
        name: str,
        initial: S,
        *,
        watch: Watch,
        stamp: Callable[[], Awaitable[Any]],
        prepare: Callable[[], Awaitable[None]] | None = None,
        poll_interval: float = 1.0,
        polling: bool = False,
    ) -> None:
        self.snapshot = initial  # what the hot path reads
        self._loads = 0  # loads started; a load swaps the snapshot only if none newer did
        self._swapped = 0
        self.watcher = DefinitionWatcher(
            name,
            watch=watch,
            stamp=stamp,
            reload=self._load,
            prepare=prepare,
            poll_interval=poll_interval,
            polling=polling,
        )

    async def _build(self) -> S | None:
        raise NotImplementedError

    @property
    def loaded(self) -> bool:
        return self.watcher.loaded

    def start(self) -> None:
        self.watcher.start()

    async def ready(self) -> None:
        """Wait for the first load. Callers bound the wait."""
        await self.watcher.ready()

    async def refresh(self) -> None:
        await self.watcher.refresh()

    async def close(self) -> None:
        await self.watcher.stop()

    async def _load(self) -> None:
        self._loads += 1
        started = self._loads
        snapshot = await self._build()
        if snapshot is None:
            return
        if started < self._swapped:
            return  # a load that started later (and so read newer data) swapped already
        self._swapped = started
        self.snapshot = snapshot
