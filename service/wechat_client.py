"""WeChat's side of the protocol: build, sign and encrypt messages; open the replies.

Used by the dashboard simulator (so it sends exactly what WeChat sends), by the tests and by the
benchmark. Decryption of our replies goes through wechatpy's ``WeChatCrypto``, the way WeChat (and
every wechatpy user) reads them.
"""

from __future__ import annotations

import dataclasses
import itertools
import secrets
import time
from typing import Any
from urllib.parse import urlencode
from xml.sax.saxutils import escape

import xmltodict
from wechatpy.crypto import WeChatCrypto

from .wechat import sign

__all__ = ["Signed", "WeChatSide"]

_counter = itertools.count(int(time.time() * 1000) % 10**9)


def _element(name: str, value: Any) -> str:
    if isinstance(value, dict):
        return f"<{name}>" + "".join(_element(k, v) for k, v in value.items()) + f"</{name}>"
    if isinstance(value, int):
        return f"<{name}>{value}</{name}>"
    return f"<{name}><![CDATA[{value}]]></{name}>"


@dataclasses.dataclass(frozen=True)
class Signed:
    """A request ready to send: ``query`` for the URL, ``body`` for the POST."""

    query: dict[str, str]
    body: bytes

    def url(self, base_url: str, path: str = "/wechat") -> str:
        return f"{base_url.rstrip('/')}{path}?{urlencode(self.query)}"


class WeChatSide:
    def __init__(
        self,
        token: str,
        *,
        encoding_aes_key: str = "",
        app_id: str = "",
        account: str = "gh_test_account",
    ) -> None:
        self.token = token
        self.app_id = app_id
        self.account = account
        self.crypto = WeChatCrypto(token, encoding_aes_key, app_id) if encoding_aes_key else None

    # -- messages -----------------------------------------------------------------------------
    def message_xml(
        self,
        openid: str,
        msg_type: str,
        *,
        create_time: int | None = None,
        msg_id: int | str | None = None,
        **fields: Any,
    ) -> str:
        """An inbound message as WeChat sends it; ``msg_id`` defaults to a fresh one."""
        body: dict[str, Any] = {
            "ToUserName": self.account,
            "FromUserName": openid,
            "CreateTime": int(create_time if create_time is not None else time.time()),
            "MsgType": msg_type,
        }
        body.update(fields)
        if msg_type != "event":
            body["MsgId"] = int(msg_id) if msg_id is not None else self.new_msg_id()
        return "<xml>" + "".join(_element(k, v) for k, v in body.items()) + "</xml>"

    def text(self, openid: str, content: str, **kw: Any) -> str:
        return self.message_xml(openid, "text", Content=content, **kw)

    def event(self, openid: str, event: str, **kw: Any) -> str:
        return self.message_xml(openid, "event", Event=event, **kw)

    @staticmethod
    def new_msg_id() -> int:
        return 24_000_000_000_000_000 + next(_counter) * 1000 + secrets.randbelow(1000)

    # -- signing ------------------------------------------------------------------------------
    def handshake(self, echostr: str, *, timestamp: str | None = None) -> dict[str, str]:
        """The URL verification GET's query; ``timestamp`` defaults to now (the endpoint refuses
        one more than SIGNATURE_MAX_AGE away from its clock)."""
        timestamp = str(int(time.time())) if timestamp is None else timestamp
        nonce = secrets.token_hex(5)
        return {
            "signature": sign(self.token, timestamp, nonce),
            "timestamp": timestamp,
            "nonce": nonce,
            "echostr": echostr,
        }

    def sign(self, xml: str, mode: str = "plain", *, timestamp: str | None = None) -> Signed:
        """``mode``: ``plain``, ``aes`` (safe) or ``compat`` (plain fields and Encrypt).

        ``timestamp`` defaults to now: the endpoint refuses one more than SIGNATURE_MAX_AGE away
        from its clock, so a request must be signed when it is sent, not kept for later.
        """
        timestamp = str(int(time.time())) if timestamp is None else timestamp
        nonce = secrets.token_hex(5)
        query = {
            "signature": sign(self.token, timestamp, nonce),
            "timestamp": timestamp,
            "nonce": nonce,
            "openid": _openid_of(xml),
        }
        if mode == "plain":
            return Signed(query, xml.encode("utf-8"))
        if self.crypto is None:
            raise ValueError("safe mode needs encoding_aes_key")
        envelope = xmltodict.parse(self.crypto.encrypt_message(xml, nonce, timestamp))["xml"]
        encrypt = envelope["Encrypt"]
        query["encrypt_type"] = "aes"
        query["msg_signature"] = sign(self.token, timestamp, nonce, encrypt)
        if mode == "aes":
            inner = f"<ToUserName><![CDATA[{escape(self.account)}]]></ToUserName>"
            body = f"<xml>{inner}<Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
        elif mode == "compat":
            body = xml.replace("</xml>", f"<Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>")
        else:
            raise ValueError(f"unknown mode {mode!r}")
        return Signed(query, body.encode("utf-8"))

    # -- replies ------------------------------------------------------------------------------
    def open_reply(self, body: bytes | str, query: dict[str, str] | None = None) -> dict[str, Any]:
        """The reply as a dict (``{}`` for ``success``), decrypted and verified in safe mode."""
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        if text == "success" or not text:
            return {}
        parsed: dict[str, Any] = xmltodict.parse(text)["xml"]
        if "Encrypt" in parsed:
            if self.crypto is None:
                raise ValueError("encrypted reply but no encoding_aes_key")
            plain = self.crypto.decrypt_message(
                text, parsed["MsgSignature"], parsed["TimeStamp"], parsed["Nonce"]
            )
            parsed = xmltodict.parse(plain)["xml"]
        return parsed


def _openid_of(xml: str) -> str:
    start = xml.find("<FromUserName><![CDATA[")
    if start < 0:
        return ""
    start += len("<FromUserName><![CDATA[")
    return xml[start : xml.find("]]>", start)]
