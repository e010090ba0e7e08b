"""Requests in progress: counted between their headers and the last byte of their response.

``serve`` wraps the application in ``InFlight`` so that shutdown can wait for the requests in
progress before it closes the connections; ``/healthz`` reports the count.
"""

from __future__ import annotations

import asyncio
from typing import Any

import tornado.httputil
import tornado.web

__all__ = ["InFlight", "RequestCount"]


class RequestCount:
    """Requests between their headers and the last byte of their response (``active``).

    Built by the process (``service.process.Process.requests``); ``InFlight`` counts into it and
    ``/healthz`` reports it as ``requests_in_progress``.
    """

    def __init__(self) -> None:
        self.active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def begin(self) -> None:
        self.active += 1
        self._idle.clear()

    def end(self) -> None:
        self.active -= 1
        if self.active <= 0:
            self.active = 0
            self._idle.set()

    async def wait_idle(self, grace: float) -> bool:
        """True once no request is in progress; False if some still were after ``grace`` s."""
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except TimeoutError:
            return False
        return True


class InFlight(tornado.httputil.HTTPServerConnectionDelegate):
    """The application, counting requests into ``count`` so that shutdown can wait for them:
    Tornado's ``close_all_connections`` would cut them off mid-request.

    The end of a response is the request connection's finish future, which Tornado resolves once
    the response is flushed, the client is gone, or the connection is detached (WebSocket).
    """

    def __init__(self, app: tornado.web.Application, count: RequestCount) -> None:
        self.app = app
        self.count = count

    def start_request(
        self,
        server_conn: object,
        request_conn: tornado.httputil.HTTPConnection,
    ) -> tornado.httputil.HTTPMessageDelegate:
        delegate = self.app.start_request(server_conn, request_conn)
        return _Tracked(self, delegate, request_conn)

    def on_close(self, server_conn: object) -> None:
        self.app.on_close(server_conn)


class _Tracked(tornado.httputil.HTTPMessageDelegate):
    def __init__(
        self,
        tracker: InFlight,
        delegate: tornado.httputil.HTTPMessageDelegate,
        connection: tornado.httputil.HTTPConnection,
    ) -> None:
        self.tracker = tracker
        self.delegate = delegate
        self.connection = connection
        self.counted = False

    def headers_received(
        self,
        start_line: tornado.httputil.RequestStartLine | tornado.httputil.ResponseStartLine,
        headers: tornado.httputil.HTTPHeaders,
    ) -> Any:
        # Tornado's HTTP1Connection resolves this when the response is done (or the connection
        # is closed or detached); without it the request is simply not waited for.
        finished = getattr(self.connection, "_finish_future", None)
        if isinstance(finished, asyncio.Future) and not finished.done():
            self.counted = True
            self.tracker.count.begin()
            finished.add_done_callback(lambda _: self._done())
        return self.delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Any:
        return self.delegate.data_received(chunk)

    def finish(self) -> None:
        self.delegate.finish()

    def on_connection_close(self) -> None:
        self._done()
        self.delegate.on_connection_close()

    def _done(self) -> None:
        if self.counted:
            self.counted = False
            self.tracker.count.end()
