"""``/dashboard/ws``: the live feed of messages and replies, over a WebSocket.

Anonymous requests are refused with 403 before the upgrade. ``?since=<ISO time>`` asks for the
messages received since then first (a reconnecting page fills its gap this way); the socket
subscribes to the hub *before* reading that backlog and sends queued live events after it, so
nothing falls between the two. Events carry the message id; the page drops duplicates.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from typing import Any, cast

import tornado.web
import tornado.websocket

from service.clock import iso, now
from service.live import Hub, message_event
from service.store import dashboard as store

from .base import DashboardHandler

__all__ = ["LiveSocket", "message_event", "routes"]

log = logging.getLogger(__name__)

BACKLOG_LIMIT = 500
# A client this far behind is disconnected; it reconnects and catches up with ?since=.
MAX_PENDING_WRITES = 1000


class LiveSocket(DashboardHandler, tornado.websocket.WebSocketHandler):
    allowed_during_password_change = False

    def set_default_headers(self) -> None:
        # No Cache-Control/CSP juggling needed on the 101 response, but keep the same headers.
        super().set_default_headers()

    @property
    def ping_interval(self) -> float | None:
        return 25.0

    @property
    def ping_timeout(self) -> float | None:
        return 20.0

    async def prepare(self) -> None:
        await super().prepare()
        if self._finished:
            return
        if self.owner is None:
            # Refuse before the upgrade; a JSON body like the API's.
            raise tornado.web.HTTPError(403, "login required")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish({"error": self._reason, "status": status_code})

    def password_change_required(self) -> None:
        raise tornado.web.HTTPError(403, "password change required")

    @tornado.web.authenticated
    async def get(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        await super().get(*args, **kwargs)

    # -- the socket -----------------------------------------------------------------------------
    async def open(self, *args: str, **kwargs: str) -> None:
        self._queue: list[dict[str, Any]] | None = []
        self._pending = 0
        self._sent: set[str] = set()
        hub = cast(Hub, self.settings["hub"])
        self._hub = hub
        hub.subscribe(self.on_event)
        try:
            async with asyncio.timeout(10):
                await hub.ready()
        except TimeoutError:
            log.warning("live feed not ready after 10 s; the page will see messages once it is")
        since = self._since()
        try:
            if since is not None:
                docs = await store.messages_after(self.db, since, limit=BACKLOG_LIMIT)
                backlog = [store.message_view(doc) for doc in docs]
                self._sent.update(m["id"] for m in backlog)
                truncated = len(docs) >= BACKLOG_LIMIT
                self.send({"type": "backlog", "messages": backlog, "truncated": truncated})
            self.send({"type": "hello", "mode": hub.mode, "server_time": iso(now())})
            queued, self._queue = self._queue or [], None
            for event in queued:
                self.on_event(event)
        except tornado.websocket.WebSocketClosedError:
            hub.unsubscribe(self.on_event)  # the page went away while we were catching up
        self._sent.clear()

    def _since(self) -> dt.datetime | None:
        raw = self.get_query_argument("since", "").strip()
        if not raw:
            return None
        try:
            value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        # Never more than a day back: a page left open over a weekend reloads instead.
        return max(value, dt.datetime.now(dt.UTC) - dt.timedelta(days=1))

    def on_event(self, event: dict[str, Any]) -> None:
        """Called by the hub; raising makes the hub drop this subscriber."""
        if self._queue is not None:
            self._queue.append(event)
            return
        if self._sent and event.get("message", {}).get("id") in self._sent:
            return
        self.send(event)

    def send(self, event: dict[str, Any]) -> None:
        if self._pending > MAX_PENDING_WRITES:
            log.warning("live client too slow; closing its socket so it reconnects")
            self.close(1008, "too slow")
            raise tornado.websocket.WebSocketClosedError()
        future = self.write_message(json.dumps(event, ensure_ascii=False))
        self._pending += 1
        future.add_done_callback(self._written)

    def _written(self, future: asyncio.Future[None]) -> None:
        self._pending -= 1
        if not future.cancelled():
            future.exception()  # closed connections are reported via on_close; mark as seen

    def on_message(self, message: str | bytes) -> None:
        """The page only listens; a ``ping`` text gets a ``pong`` (keeps proxies awake)."""
        if message == "ping":
            self.send({"type": "pong"})

    def on_close(self) -> None:
        hub = getattr(self, "_hub", None)
        if hub is not None:
            hub.unsubscribe(self.on_event)


routes = [(r"/dashboard/ws", LiveSocket)]
