"""The simulator: the owner chats as a test user through the real ``/wechat`` code path.

The message is built, signed (and encrypted, in safe mode) by ``WeChatSide`` exactly as WeChat
would, and POSTed over loopback HTTP to this same process's ``/wechat``; the reply is opened the way
WeChat opens it. Test users' openids start with ``TEST_OPENID_PREFIX`` and are stored marked, so
their data can be wiped with one click.
"""

from __future__ import annotations

import logging
import re
import secrets
import socket
import time
from typing import Any

import tornado.httpclient
import tornado.iostream
import tornado.web

from service.store import TEST_OPENID_PREFIX
from service.store import dashboard as store
from service.store.users import UserStats
from service.wechat_client import WeChatSide

from . import surveys as survey_views
from .base import ApiHandler

log = logging.getLogger(__name__)

MAX_TEXT = 2000
_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,48}$")
EVENTS = ("subscribe", "unsubscribe", "CLICK")


def test_openid(value: Any) -> str:
    """``sim-<name>`` from what the page sends; anything else is a 400."""
    raw = str(value or "").strip()
    name = raw[len(TEST_OPENID_PREFIX) :] if raw.startswith(TEST_OPENID_PREFIX) else raw
    if not _NAME.match(name):
        raise tornado.web.HTTPError(400, "user must be letters, digits, - or _ (1-48)")
    return TEST_OPENID_PREFIX + name


# What the simulator may send in each message mode of the endpoint (WECHAT_MESSAGE_MODE): the
# endpoint refuses the others, so the simulator does not offer them. The first is the default.
SIMULATOR_MODES: dict[str, tuple[str, ...]] = {
    "plain": ("plain",),
    "compat": ("aes", "compat", "plain"),
    "safe": ("aes", "compat"),
}


class SimulatorSendApi(ApiHandler):
    """``POST {"user", "type", "content" | "event" + "key" | ..., "mode"}`` → the opened reply."""

    def loopback_base(self) -> str:
        """Where this process listens, as seen from itself (not through any proxy)."""
        configured = self.settings.get("simulator_base_url")
        if configured:
            return str(configured)
        stream = getattr(self.request.connection, "stream", None)
        sock = getattr(stream, "socket", None)
        scheme = "https" if isinstance(stream, tornado.iostream.SSLIOStream) else "http"
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            host, port = sock.getsockname()[:2]
            if host in ("0.0.0.0", "::", ""):  # noqa: S104 - an address we listen on, not bind
                host = "127.0.0.1"
            if ":" in host:
                host = f"[{host}]"
            return f"{scheme}://{host}:{port}"
        host = "127.0.0.1" if self.config.host in ("0.0.0.0", "") else self.config.host  # noqa: S104
        return f"http://{host}:{self.config.port}"

    def build(self, side: WeChatSide, openid: str, body: dict[str, Any]) -> str:
        kind = str(body.get("type") or "text")
        if kind == "text":
            content = str(body.get("content") or "")
            if not content.strip():
                raise tornado.web.HTTPError(400, "content is empty")
            if len(content) > MAX_TEXT:
                raise tornado.web.HTTPError(400, "content is longer than %d characters", MAX_TEXT)
            return side.text(openid, content)
        if kind == "event":
            event = str(body.get("event") or "")
            if event not in EVENTS:
                raise tornado.web.HTTPError(400, "event must be one of %s", ", ".join(EVENTS))
            fields: dict[str, Any] = {}
            if event == "CLICK":
                fields["EventKey"] = str(body.get("key") or "")[:128]
            elif event == "subscribe":
                fields["EventKey"] = ""
            # Events have no MsgId: their key is openid + CreateTime, so two clicks in one
            # second would be one message. Keep them apart the way WeChat's clock would.
            return side.event(openid, event, create_time=self._event_time(openid), **fields)
        if kind == "image":
            media = "sim_media_" + secrets.token_hex(8)
            return side.message_xml(
                openid, "image", PicUrl="https://example.invalid/sim.jpg", MediaId=media
            )
        if kind == "location":
            return side.message_xml(
                openid,
                "location",
                Location_X="39.908823",
                Location_Y="116.397470",
                Scale=15,
                Label="北京市东城区天安门",
            )
        raise tornado.web.HTTPError(400, "type must be text, event, image or location")

    def _event_time(self, openid: str) -> int:
        last: dict[str, int] = self.settings.setdefault("simulator_event_times", {})
        now = int(time.time())
        at = max(now, last.get(openid, 0) + 1)
        last[openid] = at
        return at

    @tornado.web.authenticated
    async def post(self) -> None:
        body = self.json_body()
        openid = test_openid(body.get("user"))
        config = self.config
        allowed = SIMULATOR_MODES[config.effective_message_mode]
        mode = str(body.get("mode") or allowed[0])
        if mode not in ("plain", "aes", "compat"):
            raise tornado.web.HTTPError(400, "mode must be plain, aes or compat")
        if mode not in allowed:
            raise tornado.web.HTTPError(
                400,
                f"the endpoint is in {config.effective_message_mode} mode (WECHAT_MESSAGE_MODE): "
                f"it refuses {mode} requests; use {' or '.join(allowed)}",
            )
        side = WeChatSide(
            config.wechat_token, encoding_aes_key=config.encoding_aes_key, app_id=config.app_id
        )
        xml = self.build(side, openid, body)
        signed = side.sign(xml, mode)
        url = signed.url(self.loopback_base())
        started = time.perf_counter()
        client = tornado.httpclient.AsyncHTTPClient()
        try:
            response = await client.fetch(
                url,
                method="POST",
                body=signed.body,
                headers={"Content-Type": "text/xml; charset=UTF-8"},
                request_timeout=15,
                raise_error=False,
                validate_cert=False,  # loopback to ourselves
            )
        except OSError as e:
            raise tornado.web.HTTPError(502, "could not reach /wechat: %s", e) from e
        elapsed = round((time.perf_counter() - started) * 1000, 1)
        text = response.body.decode("utf-8", "replace") if response.body else ""
        result: dict[str, Any] = {
            "user": openid,
            "mode": mode,
            "request_xml": xml,
            "status": response.code,
            "elapsed_ms": elapsed,
            "response_body": text[:8000],
            "reply": None,
        }
        if response.code == 200:
            result["reply"] = side.open_reply(response.body)
        else:
            log.warning("simulator: /wechat answered %d", response.code)
        self.write_json(result)


class SimulatorWipeApi(ApiHandler):
    """Delete every test user's messages, user record and survey data."""

    @tornado.web.authenticated
    async def post(self) -> None:
        users = self.settings.get("users")
        if isinstance(users, UserStats):
            await users.flush()  # pending counters would bring the wiped users back
        counts = await store.wipe_test_messages(self.db, TEST_OPENID_PREFIX)
        counts.update(await survey_views.wipe_test(self))
        log.info("test data wiped: %s", counts)
        self.write_json({"deleted": counts})


routes = [
    (r"/api/simulator/send", SimulatorSendApi),
    (r"/api/simulator/wipe", SimulatorWipeApi),
]
