"""``/wechat``: the URL set as 服务器地址 in 公众平台 → 基本配置.

GET is the handshake; POST carries a message in plaintext, compatible or safe (AES) mode. The
signature is checked before anything else runs: a forged request gets 403 and touches nothing.
A message goes through the reply guard (``service/guard.py``): WeChat gets the reply within the
reply budget, or ``success`` and the reply later as a customer-service message.
"""

from __future__ import annotations

import logging
import time
from typing import Any, cast

import tornado.web
from tornado.http1connection import HTTP1Connection

from service.guard import ReplyGuard
from service.inbox import Inbox, user_hash
from service.metrics import Metrics
from service.wechat import Crypto, ProtocolError, check_signature, message_from_xml, parse_xml

from .base import BaseHandler

log = logging.getLogger(__name__)


@tornado.web.stream_request_body
class WeChatHandler(BaseHandler):
    def initialize(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        self._started = time.perf_counter()
        self._summary: dict[str, Any] = {"type": "-", "user": "-", "outcome": "-"}
        self._new_message = False

    def check_xsrf_cookie(self) -> None:
        """WeChat proves itself by signature, not by an XSRF cookie."""

    @property
    def inbox(self) -> Inbox:
        return cast(Inbox, self.settings["inbox"])

    @property
    def guard(self) -> ReplyGuard:
        return cast(ReplyGuard, self.settings["guard"])

    def prepare(self) -> None:
        limit = self.config.max_body_bytes
        length = self.request.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > limit:
            self._summary["outcome"] = "too-large"
            raise tornado.web.HTTPError(413, "body of %s bytes is over the %d limit", length, limit)
        connection = self.request.connection
        if isinstance(connection, HTTP1Connection):
            connection.set_max_body_size(limit + 1)

    def data_received(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > self.config.max_body_bytes:
            self._summary["outcome"] = "too-large"
            raise tornado.web.HTTPError(
                413, "body is over the %d-byte limit", self.config.max_body_bytes
            )
        self._chunks.append(chunk)

    def _verify(self) -> tuple[str, str]:
        """Check ``signature`` on the query string; return (timestamp, nonce)."""
        signature = self.get_query_argument("signature", "")
        timestamp = self.get_query_argument("timestamp", "")
        nonce = self.get_query_argument("nonce", "")
        if not (signature and timestamp and nonce):
            self._summary["outcome"] = "bad-request"
            raise tornado.web.HTTPError(400, "signature, timestamp and nonce are required")
        if not check_signature(self.config.wechat_token, signature, timestamp, nonce):
            self._summary["outcome"] = "forbidden"
            raise tornado.web.HTTPError(403, "signature does not match")
        return timestamp, nonce

    def get(self) -> None:
        self._verify()
        echostr = self.get_query_argument("echostr", "")
        if not echostr:
            self._summary["outcome"] = "bad-request"
            raise tornado.web.HTTPError(400, "echostr is required")
        self._summary.update(type="handshake", outcome="ok")
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.finish(echostr)

    async def post(self) -> None:
        timestamp, nonce = self._verify()
        body = b"".join(self._chunks)
        encrypted = self.get_query_argument("encrypt_type", "raw").lower() == "aes"
        crypto = cast("Crypto | None", self.settings.get("crypto"))
        try:
            fields = parse_xml(body)
            mode = "plain"
            raw = body.decode("utf-8")
            if encrypted:
                if crypto is None:
                    raise ProtocolError(
                        400, "encrypt_type=aes but WECHAT_ENCODING_AES_KEY is not set"
                    )
                encrypt = fields.get("Encrypt")
                msg_signature = self.get_query_argument("msg_signature", "")
                if not isinstance(encrypt, str) or not encrypt or not msg_signature:
                    raise ProtocolError(400, "safe mode needs Encrypt and msg_signature")
                mode = "compat" if "MsgType" in fields else "aes"
                raw = crypto.decrypt(encrypt, msg_signature, timestamp, nonce)
                fields = parse_xml(raw.encode("utf-8"))
            message = message_from_xml(fields, raw)
        except ProtocolError as e:
            self._summary["outcome"] = "forbidden" if e.status == 403 else "bad-request"
            raise tornado.web.HTTPError(e.status, "%s", e.reason) from e
        self._summary.update(type=message.kind, user=user_hash(message.openid))
        outcome = await self.guard.handle(message, mode=mode, received=self._started)
        self._summary["outcome"] = outcome.label
        self._new_message = not outcome.duplicate
        if outcome.xml == "success":
            self.set_header("Content-Type", "text/plain; charset=UTF-8")
            self.finish("success")
            return
        self.set_header("Content-Type", "application/xml; charset=UTF-8")
        if encrypted and crypto is not None:
            self.finish(crypto.encrypt(outcome.xml, nonce))
        else:
            self.finish(outcome.xml)

    def on_finish(self) -> None:
        elapsed = time.perf_counter() - self._started
        latency = elapsed * 1000
        if self._summary["outcome"] == "-" and self.get_status() >= 500:
            self._summary["outcome"] = "error"
        metrics = cast("Metrics | None", self.settings.get("metrics"))
        if metrics is not None:
            outcome = self._summary["outcome"]
            if self._summary["type"] == "handshake":
                outcome = "handshake"
            elif outcome == "-":
                outcome = "other"  # e.g. a method WeChat never uses
            metrics.requests.labels(outcome=outcome).inc()
            if self.request.method == "POST" and self._summary["type"] != "-":
                metrics.reply_latency.observe(elapsed)
                if self._new_message:
                    metrics.message(self._summary["type"])
                else:
                    metrics.duplicates.inc()
        log.info(
            "wechat %s type=%s user=%s status=%d outcome=%s latency=%.1fms",
            self.request.method,
            self._summary["type"],
            self._summary["user"],
            self.get_status(),
            self._summary["outcome"],
            latency,
        )


routes = [(r"/wechat/?", WeChatHandler)]
