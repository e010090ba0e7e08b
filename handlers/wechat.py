"""``/wechat``: the URL set as 服务器地址 in 公众平台 → 基本配置.

GET is the handshake; POST carries a message in plaintext, compatible or safe (AES) mode. The
signature is checked before anything else runs: a forged request gets 403 and touches nothing.
A message goes through the reply guard (``service/guard.py``): WeChat gets the reply within the
reply budget, or ``success`` and the reply later as a customer-service message.
"""

from __future__ import annotations

import logging
import time
from typing import cast

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
        # What the request's log line and metrics say: message type, user hash, outcome.
        self._type = "-"
        self._user = "-"
        self._outcome = "-"
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
            self._outcome = "too-large"
            raise tornado.web.HTTPError(413, "body of %s bytes is over the %d limit", length, limit)
        connection = self.request.connection
        if isinstance(connection, HTTP1Connection):
            connection.set_max_body_size(limit + 1)

    def data_received(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > self.config.max_body_bytes:
            self._outcome = "too-large"
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
            self._outcome = "bad-request"
            raise tornado.web.HTTPError(400, "signature, timestamp and nonce are required")
        if not check_signature(self.config.wechat_token, signature, timestamp, nonce):
            self._outcome = "forbidden"
            raise tornado.web.HTTPError(403, "signature does not match")
        return timestamp, nonce

    def get(self) -> None:
        self._verify()
        echostr = self.get_query_argument("echostr", "")
        if not echostr:
            self._outcome = "bad-request"
            raise tornado.web.HTTPError(400, "echostr is required")
        self._type, self._outcome = "handshake", "ok"
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
            self._outcome = "forbidden" if e.status == 403 else "bad-request"
            raise tornado.web.HTTPError(e.status, "%s", e.reason) from e
        self._type = message.kind
        self._user = user_hash(message.openid)
        outcome = await self.guard.handle(message, mode=mode, received=self._started)
        self._outcome = outcome.label
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
        status = self.get_status()
        kind, outcome = self._type, self._outcome
        if outcome == "-" and status >= 500:
            outcome = self._outcome = "error"
        metrics = cast("Metrics | None", self.settings.get("metrics"))
        if metrics is not None:
            if kind == "handshake":
                metrics.request("handshake")
            else:
                metrics.request("other" if outcome == "-" else outcome)  # other: e.g. PUT
            if kind != "-" and self.request.method == "POST":
                metrics.reply_latency.observe(elapsed)
                if self._new_message:
                    metrics.message(kind)
                else:
                    metrics.duplicates.inc()
        log.info(
            "wechat %s type=%s user=%s status=%d outcome=%s latency=%.1fms",
            self.request.method,
            kind,
            self._user,
            status,
            outcome,
            elapsed * 1000,
        )


routes = [(r"/wechat/?", WeChatHandler)]
