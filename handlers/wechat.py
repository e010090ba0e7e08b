"""``/wechat``: the URL set as 服务器地址 in 公众平台 → 基本配置.

GET is the handshake; POST carries a message in plaintext, compatible or safe (AES) mode. The
signature and its timestamp (within ``SIGNATURE_MAX_AGE`` of our clock) are checked before
anything else runs, then the message mode (``WECHAT_MESSAGE_MODE``: in safe mode only encrypted
requests), then the body is parsed and checked: a refused request gets its 4xx, touches nothing,
is counted in ``wechat_survey_refused_total{reason}`` and logged without its query string.
A message goes through the reply guard (``service/guard.py``): WeChat gets the reply within the
reply budget, or ``success`` and the reply later as a customer-service message.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from types import TracebackType
from typing import NoReturn, cast

import tornado.web
from pymongo.errors import PyMongoError
from tornado.http1connection import HTTP1Connection
from tornado.log import app_log

from service import onboarding
from service.guard import ReplyGuard
from service.inbox import Inbox, user_hash
from service.metrics import Metrics
from service.wechat import (
    Crypto,
    ProtocolError,
    check_signature,
    check_timestamp,
    message_from_xml,
    parse_xml,
)

from .base import BaseHandler

log = logging.getLogger(__name__)

HANDSHAKE_RECORD_TIMEOUT = 3.0  # seconds; the echo has been sent by then


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
        # Why the request was refused (a REFUSAL_REASONS label) and the detail for the log line.
        self._refused = ""
        self._detail = ""

    def check_xsrf_cookie(self) -> None:
        """WeChat proves itself by signature, not by an XSRF cookie."""

    @property
    def inbox(self) -> Inbox:
        return cast(Inbox, self.settings["inbox"])

    @property
    def guard(self) -> ReplyGuard:
        return cast(ReplyGuard, self.settings["guard"])

    def _refuse(
        self, status: int, reason: str, detail: str, cause: ProtocolError | None = None
    ) -> NoReturn:
        """Answer ``status`` before anything ran; ``reason`` labels the metric, ``detail`` the
        request's log line."""
        self._refused, self._detail = reason, detail
        self._outcome = {403: "forbidden", 413: "too-large"}.get(status, "bad-request")
        raise tornado.web.HTTPError(status, "%s", detail) from cause

    def prepare(self) -> None:
        limit = self.config.max_body_bytes
        length = self.request.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > limit:
            self._refuse(413, "too-large", f"body of {length} bytes is over the {limit} limit")
        connection = self.request.connection
        if isinstance(connection, HTTP1Connection):
            # Ours (in data_received) is the only body limit here: Tornado's would answer a
            # chunked body over it with a bare 400, without our log line and metric. Tornado
            # hands the body over in pieces of at most 64 KiB, so memory stays bounded.
            connection.set_max_body_size(sys.maxsize)

    def data_received(self, chunk: bytes) -> None:
        if self._refused:
            return
        self._size += len(chunk)
        limit = self.config.max_body_bytes
        if self._size > limit:
            # Answer now, while the body is still arriving (a chunked one has no length): Tornado
            # stops handing over the rest and closes the connection once the 413 is sent.
            self._chunks.clear()
            self._refused, self._outcome = "too-large", "too-large"
            self._detail = f"body is over the {limit}-byte limit"
            self.send_error(413)
            return
        self._chunks.append(chunk)

    def _verify(self) -> tuple[str, str]:
        """Check ``signature`` and its timestamp on the query string; return (timestamp, nonce)."""
        signature = self.get_query_argument("signature", "")
        timestamp = self.get_query_argument("timestamp", "")
        nonce = self.get_query_argument("nonce", "")
        if not (signature and timestamp and nonce):
            self._refuse(400, "missing-parameter", "signature, timestamp and nonce are required")
        if not check_signature(self.config.wechat_token, signature, timestamp, nonce):
            self._refuse(403, "signature", "signature does not match")
        try:
            check_timestamp(timestamp, self.config.signature_max_age)
        except ProtocolError as e:
            self._refuse(e.status, e.kind, e.reason, e)
        return timestamp, nonce

    async def get(self) -> None:
        if self._refused:
            return  # answered already (413 while the body was arriving)
        self._verify()
        echostr = self.get_query_argument("echostr", "")
        if not echostr:
            self._refuse(400, "missing-parameter", "echostr is required")
        self._type, self._outcome = "handshake", "ok"
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        # Answer first: WeChat waits for the echo, not for our bookkeeping.
        await self.finish(echostr)
        await self._record_handshake()

    async def _record_handshake(self) -> None:
        """Note the verified handshake for the dashboard's first-run checklist (best effort:
        with the database down the handshake still succeeds; the next one records it)."""
        try:
            async with asyncio.timeout(HANDSHAKE_RECORD_TIMEOUT):
                await onboarding.record_handshake(self.db, mode=self.config.effective_message_mode)
        except (PyMongoError, TimeoutError) as e:
            log.warning("handshake verified but not recorded: %s", type(e).__name__)

    async def post(self) -> None:
        if self._refused:
            return  # answered already (413 while the body was arriving)
        timestamp, nonce = self._verify()
        body = b"".join(self._chunks)
        encrypted = self.get_query_argument("encrypt_type", "raw").lower() == "aes"
        crypto = cast("Crypto | None", self.settings.get("crypto"))
        message_mode = self.config.effective_message_mode
        if not encrypted and message_mode == "safe":
            # Only msg_signature binds the body: a plaintext request would void that.
            self._refuse(403, "plaintext-refused", "plaintext request refused in safe mode")
        try:
            fields = parse_xml(body)
            mode = "plain"
            raw = body.decode("utf-8")
            if encrypted:
                if crypto is None or message_mode == "plain":
                    raise ProtocolError(
                        400,
                        "encrypt_type=aes but the message mode is plain"
                        + ("" if crypto is not None else " (no WECHAT_ENCODING_AES_KEY)"),
                        kind="encrypted-refused",
                    )
                encrypt = fields.get("Encrypt")
                msg_signature = self.get_query_argument("msg_signature", "")
                if not isinstance(encrypt, str) or not encrypt or not msg_signature:
                    raise ProtocolError(
                        400, "safe mode needs Encrypt and msg_signature", kind="missing-encrypt"
                    )
                mode = "compat" if "MsgType" in fields else "aes"
                raw = crypto.decrypt(encrypt, msg_signature, timestamp, nonce)
                fields = parse_xml(raw.encode("utf-8"))
            message = message_from_xml(fields, raw)
        except ProtocolError as e:
            self._refuse(e.status, e.kind, e.reason, e)
        self._type = message.kind
        self._user = user_hash(message.openid)
        outcome = await self.guard.handle(
            message, mode=mode, received=self._started, signed=f"{timestamp}:{nonce}"
        )
        if outcome.reused_signature:
            self._refuse(403, "reused-signature", "this signed URL came with another message")
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

    def log_exception(
        self,
        typ: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Tornado's, without the query string (signature, nonce, openid) or the request repr.

        A refusal (HTTPError) is already in the request's one log line (``on_finish``).
        """
        if isinstance(value, tornado.web.HTTPError):
            return
        app_log.error(
            "Uncaught exception in %s %s",
            self.request.method,
            self.request.path,
            exc_info=(typ, value, tb),  # type: ignore[arg-type]
        )

    def on_finish(self) -> None:
        elapsed = time.perf_counter() - self._started
        status = self.get_status()
        kind, outcome = self._type, self._outcome
        if outcome == "-" and status >= 500:
            outcome = self._outcome = "error"
        metrics = cast("Metrics | None", self.settings.get("metrics"))
        if metrics is not None:
            if self._refused:
                metrics.refuse(self._refused)
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
            "wechat %s type=%s user=%s status=%d outcome=%s latency=%.1fms%s",
            self.request.method,
            kind,
            self._user,
            status,
            outcome,
            elapsed * 1000,
            f" refused={self._refused}: {self._detail}" if self._refused else "",
        )


routes = [(r"/wechat/?", WeChatHandler)]
