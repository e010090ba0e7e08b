"""Outages lose nothing: a local, append-only, fsynced spool of the messages the database missed.

When the database is unreachable (or does not answer within its bound), the WeChat endpoint still
answers, and the message document (exactly what would have been inserted, ``_id`` = message key)
is appended as one JSON line to a file under ``DATA_DIR/spool/`` and fsynced *before* the answer
goes out. ``Replayer`` pings the database while it is down and, once it answers, replays every
spool file with ``insert_one``; a ``DuplicateKeyError`` means the message is already stored (a
WeChat retry, a write that timed out but landed, a replay interrupted half-way), so each message
ends up in MongoDB exactly once. A fully replayed file is deleted.

Files and processes: each process appends to its own file (``<host>-<pid>-<ms>-<n>.jsonl``) and
holds an exclusive ``flock`` on it while it is open. A replay pass first closes the process's own
file, then takes every file it can lock: a file left behind by a process that died is replayed by
whichever process gets to it first, and another live process's current file is left to its owner.

Writes are group-committed: lines queued while a write is in progress go out together with a single
``fsync``, in a worker thread, so a burst during an outage neither blocks the event loop nor costs
one fsync per message. The spool is bounded (``SPOOL_MAX_BYTES``, counted over the whole
directory); when it is full a message cannot be saved, which is logged as an error and counted in
``wechat_survey_spool_dropped_total``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bson import json_util
from bson.json_util import JSONMode, JSONOptions
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from .db import ping
from .store import is_outage

if TYPE_CHECKING:
    from .dbstate import DatabaseState
    from .metrics import Metrics

__all__ = ["DEFAULT_MAX_BYTES", "Replayer", "Spool", "decode", "encode", "is_outage"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
SUFFIX = ".jsonl"
JSON_OPTIONS = JSONOptions(json_mode=JSONMode.RELAXED, tz_aware=True, tzinfo=dt.UTC)
Insert = Callable[[dict[str, Any]], Awaitable[bool]]


def encode(doc: dict[str, Any]) -> bytes:
    """One spool line: Extended JSON (datetimes survive), UTF-8, newline-terminated."""
    text = json_util.dumps(doc, json_options=JSON_OPTIONS, ensure_ascii=False)
    return text.encode("utf-8") + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    doc = json_util.loads(line.decode("utf-8"), json_options=JSON_OPTIONS)
    if not isinstance(doc, dict) or "_id" not in doc:
        raise ValueError("not a spooled message document")
    return doc


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """The spool directory of one process. ``await append(doc)`` returns once the line is on disk
    (True) or could not be saved (False: spool full or disk error, already logged)."""

    def __init__(
        self, directory: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, name: str | None = None
    ) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self._seq = itertools.count(1)
        self._lock = threading.Lock()  # the open file; taken by writer and rotation threads
        self._fd: int | None = None
        self._current: Path | None = None
        self._bytes = -1  # bytes in the directory's spool files; -1: not scanned yet
        self._queue: list[tuple[bytes, asyncio.Future[bool]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._pending: dict[Path, int] = {}  # records not yet replayed, per file (event loop only)
        self._replay_lock = asyncio.Lock()
        self.dropped = 0
        self._dropped_unlogged = 0
        self._full_logged_at = -1e9
        self._listeners: list[Callable[[], None]] = []

    # -- state ---------------------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Messages in spool files this process knows about that are not in the database yet."""
        return sum(self._pending.values())

    def files(self) -> list[Path]:
        """Spool files in the directory (any process's), oldest name first. Blocking: a listing."""
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.iterdir() if p.name.endswith(SUFFIX))

    def has_foreign_files(self) -> bool:
        """Files other than this process's open one (left by a dead process, or rotated)."""
        current = self._current
        return any(p != current for p in self.files())

    def on_append(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every append (the replayer wakes up on it)."""
        self._listeners.append(listener)

    # -- writing -------------------------------------------------------------------------------

    async def append(self, doc: dict[str, Any]) -> bool:
        line = encode(doc)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._queue.append((line, future))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._drain())
        saved = await asyncio.shield(future)
        if not saved:
            self._dropped(doc)
        for listener in self._listeners:
            listener()
        return saved

    def _dropped(self, doc: dict[str, Any]) -> None:
        self.dropped += 1
        self._dropped_unlogged += 1
        now = time.monotonic()
        if now - self._full_logged_at >= 60:
            log.error(
                "spool %s is full or unwritable (limit SPOOL_MAX_BYTES=%d bytes): %d message(s) "
                "NOT saved while the database is unavailable, latest %s. Free disk space or raise "
                "SPOOL_MAX_BYTES; the spool drains once the database is back.",
                self.directory,
                self.max_bytes,
                self._dropped_unlogged,
                doc.get("_id"),
            )
            self._full_logged_at = now
            self._dropped_unlogged = 0

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            lines = [line for line, _ in batch]
            try:
                accepted, path = await asyncio.to_thread(self._write_batch, lines)
            except OSError:
                log.exception("could not write %d message(s) to the spool", len(batch))
                accepted, path = [False] * len(batch), None
            for (_, future), ok in zip(batch, accepted, strict=True):
                if ok and path is not None:
                    self._pending[path] = self._pending.get(path, 0) + 1
                if not future.done():
                    future.set_result(ok)

    def _write_batch(self, lines: list[bytes]) -> tuple[list[bool], Path | None]:
        with self._lock:
            if self._bytes < 0:
                self._bytes = self._scan_bytes()
            accepted: list[bool] = []
            chunks: list[bytes] = []
            for line in lines:
                fits = self._bytes + len(line) <= self.max_bytes
                accepted.append(fits)
                if fits:
                    self._bytes += len(line)
                    chunks.append(line)
            if not chunks:
                return accepted, self._current
            try:
                if self._fd is None:
                    self._open()
                assert self._fd is not None  # noqa: S101 - set by _open
                data = memoryview(b"".join(chunks))
                while data:
                    written = os.write(self._fd, data)
                    data = data[written:]
                os.fsync(self._fd)
            except OSError:
                self._close_file()  # start a fresh file next time
                raise
            return accepted, self._current

    def _open(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        stamp = int(time.time() * 1000)
        path = self.directory / f"{self.name}-{stamp}-{next(self._seq)}{SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise
        _fsync_dir(self.directory)  # the new name survives a crash too
        self._fd, self._current = fd, path
        log.warning("spooling messages to %s", path)

    def _close_file(self) -> None:
        fd, self._fd, self._current = self._fd, None, None
        if fd is not None:
            os.close(fd)  # releases the flock: the file is now anyone's to replay

    def _scan_bytes(self) -> int:
        total = 0
        for path in self.files():
            with contextlib.suppress(FileNotFoundError):
                total += path.stat().st_size
        return total

    def _rescan(self) -> None:
        with self._lock:
            self._bytes = self._scan_bytes()

    def rotate(self) -> None:
        """Close the current file (blocking); the next append starts a new one."""
        with self._lock:
            self._close_file()

    async def close(self) -> None:
        """Wait for queued writes, then close the file (it stays on disk until replayed)."""
        if self._writer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        await asyncio.to_thread(self.rotate)

    # -- replay --------------------------------------------------------------------------------

    async def replay(self, insert: Insert) -> tuple[int, int]:
        """Replay every spool file this process can lock; return (inserted, already there).

        ``insert(doc)`` returns True when the document was new, False when it was already stored,
        and raises ``PyMongoError``: an outage (see ``is_outage``) stops the pass and leaves the
        file for the next one; any other error sets that one line aside in ``rejected/``.
        """
        async with self._replay_lock:
            await asyncio.to_thread(self.rotate)
            inserted = duplicates = 0
            for path in await asyncio.to_thread(self.files):
                counts = await self._replay_file(path, insert)
                inserted += counts[0]
                duplicates += counts[1]
            await asyncio.to_thread(self._rescan)
            return inserted, duplicates

    async def _replay_file(self, path: Path, insert: Insert) -> tuple[int, int]:
        fd = await asyncio.to_thread(self._take, path)
        if fd is None:
            return 0, 0
        inserted = duplicates = 0
        try:
            data = await asyncio.to_thread(self._read, fd)
            lines = [line for line in data.split(b"\n") if line.strip()]
            self._pending[path] = len(lines)
            for number, line in enumerate(lines, 1):
                try:
                    doc = decode(line)
                except ValueError:
                    # A torn last line from a crash mid-write: that answer never went out.
                    log.warning("%s:%d is not a complete record; set aside", path.name, number)
                    await asyncio.to_thread(self._reject, path, line)
                    self._pending[path] -= 1
                    continue
                try:
                    new = await insert(doc)
                except PyMongoError as e:
                    if is_outage(e):
                        raise
                    log.exception("spooled message %s was refused; set aside", doc.get("_id"))
                    await asyncio.to_thread(self._reject, path, line)
                    self._pending[path] -= 1
                    continue
                inserted += new
                duplicates += not new
                self._pending[path] -= 1
            await asyncio.to_thread(self._remove, path)
            self._pending.pop(path, None)
        finally:
            os.close(fd)
        return inserted, duplicates

    def _take(self, path: Path) -> int | None:
        """Open and lock ``path`` for replay; None if it is gone or another process holds it."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        if not path.exists():  # replayed and removed by someone else meanwhile
            os.close(fd)
            return None
        return fd

    @staticmethod
    def _read(fd: int) -> bytes:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)

    def _remove(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        _fsync_dir(self.directory)

    def _reject(self, path: Path, line: bytes) -> None:
        rejected = self.directory / "rejected"
        rejected.mkdir(mode=0o700, exist_ok=True)
        with open(rejected / path.name, "ab") as f:
            f.write(line.rstrip(b"\n") + b"\n")
            f.flush()
            os.fsync(f.fileno())


class Replayer:
    """Drains the spool into the database whenever the database answers.

    The database's state is the shared ``DatabaseState``: a failure recorded there (by the inbox,
    or by this replayer's own ping) wakes the background task, which then pings every
    ``interval`` seconds, marks the database up again and replays the spool. A spool write wakes
    it too. While all is well it only looks for other processes' leftover files every
    ``scan_interval``.
    """

    def __init__(
        self,
        db: AsyncDatabase[dict[str, Any]],
        spool: Spool,
        insert: Insert,
        *,
        state: DatabaseState,
        metrics: Metrics | None = None,
        prepare: Callable[[], Awaitable[None]] | None = None,
        interval: float = 1.0,
        scan_interval: float = 30.0,
        ping_timeout: float = 2.0,
    ) -> None:
        self.db = db
        self.spool = spool
        self.insert = insert
        self.state = state
        self.metrics = metrics
        self.interval = interval
        self.scan_interval = scan_interval
        self.ping_timeout = ping_timeout
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._scan_due = 0.0
        # Run once the database answers again, before it is marked up (e.g. create the indexes
        # when the service started without a database); cleared after it succeeds.
        self._prepare = prepare
        state.on_failure(self.poke)
        spool.on_append(self.poke)

    def poke(self) -> None:
        """Look at the database and the spool soon (after a spool write, a failure)."""
        self._wake.set()
        self.start()

    def start(self) -> None:
        """Start the background task (idempotent); it first replays what an earlier run left."""
        if self._closed:
            return
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while not self._closed:
            self._wake.clear()
            try:
                await self.step()
            except Exception:  # boundary: the background task must keep running
                log.exception("spool replay step failed")
            busy = not self.state.up or self.spool.backlog > 0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._wake.wait(), self.interval if busy else self.scan_interval
                )

    async def step(self) -> None:
        """One look: ping if there is reason to, mark the database up, replay the spool."""
        needed = not self.state.up or self.spool.backlog > 0 or self._prepare is not None
        if not needed and time.monotonic() >= self._scan_due:
            self._scan_due = time.monotonic() + self.scan_interval
            needed = await asyncio.to_thread(self.spool.has_foreign_files)
        if not needed:
            return
        try:
            await ping(self.db, self.ping_timeout)
        except PyMongoError as e:
            if self.metrics is not None:
                self.metrics.database_errors.labels(operation="ping").inc()
            if self.state.up and is_outage(e):
                self.state.failed(e, "ping")
            return
        if self._prepare is not None:
            try:
                await self._prepare()
            except PyMongoError as e:
                log.warning("database answers but is not ready yet: %s", type(e).__name__)
                return
            self._prepare = None
        self.state.recovered()
        await self.replay()

    async def replay(self) -> tuple[int, int]:
        try:
            inserted, duplicates = await self.spool.replay(self.insert)
        except PyMongoError as e:
            self.state.failed(e, "replay")
            return 0, 0
        if self.metrics is not None:
            self.metrics.replayed.labels(result="inserted").inc(inserted)
            self.metrics.replayed.labels(result="duplicate").inc(duplicates)
        if inserted or duplicates:
            log.info(
                "replayed %d spooled message(s) into the database (%d were already there)",
                inserted + duplicates,
                duplicates,
            )
        return inserted, duplicates

    async def close(self, grace: float = 5.0) -> None:
        """Stop the task; if the database is up, replay what is left (bounded); close the file."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.spool.close()
        leftovers = self.spool.backlog > 0 or bool(await asyncio.to_thread(self.spool.files))
        if self.state.up and leftovers:
            try:
                async with asyncio.timeout(grace):
                    await self.replay()
            except TimeoutError:
                log.warning("spool not fully replayed at shutdown; it will be on the next start")
        if self.spool.backlog:
            log.warning(
                "%d message(s) remain in the spool %s; they are replayed at the next start",
                self.spool.backlog,
                self.spool.directory,
            )
