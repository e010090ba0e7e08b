"""``/healthz`` and ``/metrics``: for the operator's load balancer, supervisor and Prometheus.

Both are outside the dashboard's login on purpose (they are on the route-auth allow-list):

- ``GET /healthz`` is public and cheap: a ``ping`` to the database, bounded by a short timeout and
  cached for a second (a flood of health checks costs one ping a second). 200 with a JSON body
  when the database answers, 503 when it does not (the process itself still answers WeChat then,
  from the spool). It reports the shared database state (``service.dbstate``) and never changes
  it: a slow health ping does not switch the hot path to the spool. It says nothing secret.
- ``GET /metrics`` (Prometheus text format) needs ``Authorization: Bearer <METRICS_TOKEN>`` when
  that is set; without a token it is served to loopback clients only. "Loopback" means the TCP
  peer itself, not what ``X-Forwarded-For``/``X-Real-IP`` claim, and a request relayed by a proxy
  on the same machine for a remote client (its forwarded address is not loopback) is refused too.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import socket
from typing import Any, cast

import tornado.web

from service import __version__
from service.db import ping
from service.guard import ReplyGuard
from service.metrics import CONTENT_TYPE, Metrics
from service.spool import Spool

from .base import BaseHandler

__all__ = ["HEALTH_DB_TIMEOUT", "HealthHandler", "MetricsHandler", "routes"]

HEALTH_DB_TIMEOUT = 1.5  # seconds: a health check must answer quickly, whatever the database does


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def peer_is_local(handler: tornado.web.RequestHandler) -> bool:
    """The TCP peer is on this machine, and no proxy says it relayed a remote client."""
    context = getattr(handler.request.connection, "context", None)
    family = getattr(context, "address_family", None)
    address = getattr(context, "address", None)
    if family == socket.AF_UNIX:
        peer_ok = True
    elif family in (socket.AF_INET, socket.AF_INET6) and address:
        peer_ok = _loopback(str(address[0]))
    else:
        peer_ok = False
    # With xheaders, remote_ip is what the proxy reported; without, it is the peer again.
    return peer_ok and _loopback(handler.request.remote_ip or "")


class HealthHandler(BaseHandler):
    """``GET /healthz``: database ping, spool backlog, version. Public (route-auth allow-list)."""

    async def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        state = self.database
        probe = await state.probe(lambda: ping(self.db, HEALTH_DB_TIMEOUT))
        database: dict[str, Any] = {"ok": probe.ok, "spooling": not state.up}
        if probe.ok:
            database["ping_ms"] = probe.ping_ms
        else:
            database["error"] = probe.error
        if not state.up:
            database["down_for_s"] = round(state.down_for, 1)
        spool = cast("Spool | None", self.settings.get("spool"))
        guard = cast(ReplyGuard, self.settings["guard"])
        body = {
            "status": "ok" if probe.ok else "unavailable",
            "version": __version__,
            "pid": os.getpid(),
            "database": database,
            "spool": {
                "backlog": spool.backlog if spool is not None else 0,
                "dropped": spool.dropped if spool is not None else 0,
            },
            "in_flight": guard.in_flight,
            "requests_in_progress": self.settings["requests"].active,
        }
        self.set_status(200 if probe.ok else 503)
        self.finish(body)

    async def head(self) -> None:
        await self.get()  # Tornado sends the headers of a HEAD response without its body


class MetricsHandler(BaseHandler):
    """``GET /metrics``: Prometheus text format; bearer token or loopback only (allow-list)."""

    def prepare(self) -> None:
        token = self.config.metrics_token
        if token:
            header = self.request.headers.get("Authorization", "")
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode("utf-8"), token.encode("utf-8")
            ):
                raise tornado.web.HTTPError(401, "metrics need the METRICS_TOKEN bearer token")
        elif not peer_is_local(self):
            raise tornado.web.HTTPError(403, "metrics are served to loopback clients only")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if status_code == 401:  # send_error cleared the headers: say how to authenticate
            self.set_header("WWW-Authenticate", 'Bearer realm="metrics"')
        super().write_error(status_code, **kwargs)

    def get(self) -> None:
        metrics = cast(Metrics, self.settings["metrics"])
        self.set_header("Content-Type", CONTENT_TYPE)
        self.set_header("Cache-Control", "no-store")
        self.finish(metrics.render())


routes = [
    (r"/healthz", HealthHandler),
    (r"/metrics", MetricsHandler),
]
