"""Natural batching of database round trips (the idea of group commit).

When nothing is in flight, an item goes at once, alone: no added latency at one connection. While
a batch is in flight, new items queue; when it returns, everything queued (up to ``max_items`` and
``max_bytes``) goes together in one round trip. Under load the batches grow by themselves, and so
does the work each round trip (and each journal flush) does; idle, nothing waits.

``run(items)`` does one round trip for a list of items and returns one result per item, in order:
a value, or an exception for that item alone. An exception raised by ``run`` itself (the database
is unreachable) is every item's. Each batch runs under its own ``pymongo.timeout`` (``timeout``);
a caller inside a shorter ``pymongo.timeout`` gives up at its own deadline with ``NetworkTimeout``
(an outage to ``is_outage``), and its item is dropped if the batch has not started yet.

Two helpers for writing a ``run``: ``by_database`` groups a batch's items by their database (one
round trip each), and ``write_errors`` turns an unordered bulk write's ``BulkWriteError`` into
each failed item's own result (a duplicate key is often an answer, not a failure).
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import pymongo
from pymongo import _csot
from pymongo.errors import BulkWriteError, NetworkTimeout, WriteError

from . import Db

__all__ = ["BatchStats", "Batcher", "by_database", "write_errors"]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
D = TypeVar("D")

DUPLICATE_KEY = 11000


def by_database(items: Sequence[T], db_of: Callable[[T], Db]) -> list[tuple[Db, list[int]]]:
    """The positions of ``items`` grouped by their database (``db_of(item)``, the same object),
    in the order each database first appears: one round trip per database."""
    groups: dict[int, tuple[Db, list[int]]] = {}
    for index, item in enumerate(items):
        db = db_of(item)
        groups.setdefault(id(db), (db, []))[1].append(index)
    return list(groups.values())


def write_errors(
    e: BulkWriteError, duplicate: Callable[[Mapping[str, Any]], D]
) -> dict[int, D | WriteError]:
    """The failed operations of an unordered bulk write, by their position in it: what
    ``duplicate(error)`` makes of a duplicate key (the server's error document, with its
    ``keyPattern``), a ``WriteError`` for anything else. The operations not listed succeeded.

    Raises ``e`` again when the server reports a write concern error: what it wrote is not known
    to be durable, so the whole batch failed (every item gets ``e``).
    """
    if e.details.get("writeConcernErrors"):
        raise e
    failed: dict[int, D | WriteError] = {}
    for error in e.details.get("writeErrors", []):
        index = int(error["index"])
        if error.get("code") == DUPLICATE_KEY:
            failed[index] = duplicate(error)
        else:
            failed[index] = WriteError(error.get("errmsg", ""), error.get("code"), error)
    return failed


@dataclasses.dataclass
class BatchStats:
    batches: int = 0
    items: int = 0
    largest: int = 0


class Batcher(Generic[T, R]):
    def __init__(
        self,
        run: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]],
        *,
        name: str,
        max_items: int = 64,
        max_bytes: int = 8 * 1024 * 1024,
        timeout: float | None = None,
    ) -> None:
        self._run = run
        self.name = name
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.stats = BatchStats()
        self._queue: collections.deque[tuple[T, int, asyncio.Future[R]]] = collections.deque()
        self._drainer: asyncio.Task[None] | None = None

    async def submit(self, item: T, size: int = 0) -> R:
        """``item``'s result, from the next batch (``size``: its bytes, for the batch bound)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queue.append((item, size, future))
        if self._drainer is None:
            # A fresh context: the batch must not inherit this caller's pymongo.timeout deadline.
            self._drainer = loop.create_task(self._drain(), context=contextvars.Context())
        remaining = _csot.remaining()
        if remaining is None:
            return await future
        try:
            return await asyncio.wait_for(future, max(remaining, 0.0))
        except TimeoutError:
            raise NetworkTimeout(f"{self.name}: no answer within the caller's deadline") from None

    def _take(self) -> list[tuple[T, int, asyncio.Future[R]]]:
        batch: list[tuple[T, int, asyncio.Future[R]]] = []
        total = 0
        while self._queue and len(batch) < self.max_items:
            item, size, future = self._queue[0]
            if batch and total + size > self.max_bytes:
                break
            self._queue.popleft()
            if future.done():  # its caller gave up before it went
                continue
            batch.append((item, size, future))
            total += size
        return batch

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = self._take()
                if not batch:
                    continue
                self.stats.batches += 1
                self.stats.items += len(batch)
                self.stats.largest = max(self.stats.largest, len(batch))
                try:
                    with pymongo.timeout(self.timeout):
                        results = await self._run([item for item, _, _ in batch])
                except asyncio.CancelledError:
                    for _, _, future in batch:
                        future.cancel()
                    raise
                except Exception as e:  # every item's: the round trip itself failed
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(e)
                    continue
                for (_, _, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._drainer = None
            for _, _, future in self._queue:  # cancelled with items still queued
                future.cancel()
            self._queue.clear()

    async def close(self) -> None:
        """Let the batch in flight and everything queued finish."""
        if self._drainer is not None:
            await asyncio.shield(self._drainer)
