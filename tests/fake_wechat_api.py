"""A fake WeChat API server (``api.weixin.qq.com``) for the tests: a small Tornado application.

It emulates the four calls the service makes, closely enough that wechatpy's client cannot tell:

- ``GET  /cgi-bin/token?grant_type=client_credential&appid=..&secret=..``
- ``POST /cgi-bin/message/custom/send?access_token=..``   (JSON: touser, msgtype, text/image)
- ``POST /cgi-bin/media/upload?access_token=..&type=image`` (multipart field ``media``)
- ``POST /cgi-bin/material/add_material?access_token=..&type=image`` (permanent image)
- ``POST /cgi-bin/menu/create?access_token=..``             (JSON: button)
- ``GET  /cgi-bin/menu/get?access_token=..``                (the menu last created; 46003 if none)
- ``POST /cgi-bin/material/batchget_material?access_token=..`` (JSON: type, offset, count ≤ 20)
- ``GET  /cgi-bin/material/get_materialcount?access_token=..``

Permanent material (``add_material``) is kept in ``materials``; a customer-service message naming
a media_id the fake never issued is refused with 40007 (invalid media_id), as WeChat does.
``fail_next(path, 45009)`` is the daily quota running out.
- ``POST /cgi-bin/qrcode/create``, ``GET /cgi-bin/showqrcode?ticket=..`` (parametric QR codes)

Like WeChat it answers every error with HTTP 200 and ``{"errcode": .., "errmsg": ..}``; access
tokens it did not issue (or revoked with :meth:`FakeWeChatAPI.revoke_tokens`) get 40001.

Tests inject trouble: ``fail_next(path, errcode, times=1)`` answers the next ``times`` calls of
``path`` with that error (``errcode=None`` and ``status=503`` for an HTTP error, or
``disconnect=True`` to drop the connection without answering), ``delay(path, seconds)`` holds the
answers back. Every call is recorded in ``calls``; accepted customer-service messages in ``sent``,
uploads in ``uploads``, menus in ``menus``, issued tokens in ``tokens``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import secrets
import time
from typing import Any

import tornado.web

__all__ = ["FAKE_APP_ID", "FAKE_APP_SECRET", "Call", "FakeWeChatAPI"]

FAKE_APP_ID = "wx1234567890abcdef"
FAKE_APP_SECRET = "fake-app-secret-0123456789abcdef"

ERRMSG = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40003: "invalid openid",
    40013: "invalid appid",
    40014: "invalid access_token",
    40004: "invalid media type",
    40007: "invalid media_id",
    40016: "invalid button size",
    40125: "invalid appsecret",
    42001: "access_token expired",
    43004: "require subscribe",
    45009: "reach max api daily quota limit",
    45015: "response out of time limit or subscription is canceled",
    46003: "menu no exist",
    45047: "out of response count limit",
    48001: "api unauthorized",
}

MEDIA_TYPES = {"image", "voice", "video", "thumb"}


@dataclasses.dataclass
class Call:
    """One request the fake received (recorded before any injected delay or error)."""

    method: str
    path: str
    query: dict[str, str]
    body: bytes
    at: float
    answer: dict[str, Any] | None = None  # what the fake answered (None: disconnected / HTTP error)

    @property
    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


@dataclasses.dataclass
class _Failure:
    errcode: int | None
    times: int
    status: int = 200
    disconnect: bool = False
    errmsg: str | None = None


def normalize(path: str) -> str:
    """``"token"``, ``"cgi-bin/token"`` and ``"/cgi-bin/token"`` all name ``/cgi-bin/token``."""
    path = path.strip("/")
    if not path.startswith("cgi-bin/"):
        path = "cgi-bin/" + path
    return "/" + path


class FakeWeChatAPI:
    """State and controls of one fake server; :meth:`make_app` builds the Tornado application."""

    def __init__(
        self,
        *,
        app_id: str = FAKE_APP_ID,
        app_secret: str = FAKE_APP_SECRET,
        expires_in: int = 7200,
    ) -> None:
        self.app_id = app_id
        self.app_secret = app_secret
        self.expires_in = expires_in
        self.base_url = ""  # set by whoever starts the server
        self.calls: list[Call] = []
        self.sent: list[dict[str, Any]] = []
        self.uploads: list[dict[str, Any]] = []
        self.menus: list[dict[str, Any]] = []
        self.materials: list[dict[str, Any]] = []  # permanent material, newest first
        self.tokens: list[str] = []
        self._valid_tokens: set[str] = set()
        self._failures: dict[str, list[_Failure]] = {}
        self._delays: dict[str, list[float]] = {}
        self._standing_delays: dict[str, float] = {}
        self._media_ids = itertools.count(1)
        self.qrcodes: dict[str, dict[str, Any]] = {}  # ticket -> the qrcode/create request

    # -- controls -------------------------------------------------------------------------------

    def fail_next(
        self,
        path: str,
        errcode: int | None = -1,
        times: int = 1,
        *,
        status: int = 200,
        disconnect: bool = False,
        errmsg: str | None = None,
    ) -> None:
        """Answer the next ``times`` calls of ``path`` with ``errcode`` (queued after earlier ones).

        ``status`` other than 200 answers with that HTTP status instead; ``disconnect`` closes the
        connection without any answer (a network error for the client).
        """
        self._failures.setdefault(normalize(path), []).append(
            _Failure(errcode, times, status, disconnect, errmsg)
        )

    def delay(self, path: str, seconds: float, times: int | None = None) -> None:
        """Hold back the answers of ``path`` by ``seconds`` (next ``times`` calls; None: all)."""
        key = normalize(path)
        if times is None:
            self._standing_delays[key] = seconds
        else:
            self._delays.setdefault(key, []).extend([seconds] * times)

    def revoke_tokens(self) -> None:
        """Every token issued so far becomes invalid (the next call gets 40001)."""
        self._valid_tokens.clear()

    def calls_to(self, path: str) -> list[Call]:
        key = normalize(path)
        return [call for call in self.calls if call.path == key]

    @property
    def token_fetches(self) -> int:
        return len(self.calls_to("token"))

    # -- the server -----------------------------------------------------------------------------

    def make_app(self) -> tornado.web.Application:
        return tornado.web.Application(
            [
                (r"/cgi-bin/token", _TokenHandler, {"fake": self}),
                (r"/cgi-bin/message/custom/send", _CustomSendHandler, {"fake": self}),
                (r"/cgi-bin/media/upload", _MediaUploadHandler, {"fake": self}),
                (r"/cgi-bin/material/add_material", _MaterialHandler, {"fake": self}),
                (r"/cgi-bin/menu/create", _MenuCreateHandler, {"fake": self}),
                (r"/cgi-bin/menu/get", _MenuGetHandler, {"fake": self}),
                (r"/cgi-bin/material/batchget_material", _BatchGetHandler, {"fake": self}),
                (r"/cgi-bin/material/get_materialcount", _MaterialCountHandler, {"fake": self}),
                *qr_routes(self),
            ],
            log_function=lambda handler: None,
        )

    def issue_token(self) -> str:
        token = "FAKE-" + secrets.token_urlsafe(24)
        self.tokens.append(token)
        self._valid_tokens.add(token)
        return token

    def token_valid(self, token: str) -> bool:
        return token in self._valid_tokens

    def _take_failure(self, path: str) -> _Failure | None:
        queue = self._failures.get(path)
        if not queue:
            return None
        failure = queue[0]
        failure.times -= 1
        if failure.times <= 0:
            queue.pop(0)
        return failure

    def _take_delay(self, path: str) -> float:
        queue = self._delays.get(path)
        if queue:
            return queue.pop(0)
        return self._standing_delays.get(path, 0.0)

    def next_media_id(self) -> str:
        return f"FAKE-MEDIA-{next(self._media_ids):04d}-{secrets.token_hex(4)}"

    def knows(self, media_id: str) -> bool:
        return any(u["media_id"] == media_id for u in self.uploads)


def _error(errcode: int, errmsg: str | None = None) -> dict[str, Any]:
    return {"errcode": errcode, "errmsg": errmsg or ERRMSG.get(errcode, "error")}


class _Handler(tornado.web.RequestHandler):
    fake: FakeWeChatAPI
    needs_token = True

    def initialize(self, fake: FakeWeChatAPI) -> None:
        self.fake = fake

    def check_xsrf_cookie(self) -> None:
        """WeChat's API has no cookies."""

    async def get(self) -> None:
        await self._serve()

    async def post(self) -> None:
        await self._serve()

    async def _serve(self) -> None:
        path = self.request.path
        call = Call(
            method=self.request.method or "",
            path=path,
            query={k: self.get_query_argument(k) for k in self.request.query_arguments},
            body=self.request.body,
            at=time.time(),
        )
        self.fake.calls.append(call)
        seconds = self.fake._take_delay(path)
        if seconds:
            await asyncio.sleep(seconds)
        failure = self.fake._take_failure(path)
        if failure is not None:
            if failure.disconnect:
                assert self.request.connection is not None
                self.request.connection.close()  # type: ignore[attr-defined]  # HTTP1Connection
                return
            if failure.status != 200:
                self.set_status(failure.status)
                self.finish(f"<html>{failure.status}</html>")
                return
            assert failure.errcode is not None
            answer = _error(failure.errcode, failure.errmsg)
        elif self.needs_token and not self.fake.token_valid(call.query.get("access_token", "")):
            answer = _error(40001 if call.query.get("access_token") else 41001)
            if answer["errcode"] == 41001:
                answer["errmsg"] = "access_token missing"
        else:
            answer = self.answer(call)
        call.answer = answer
        self.set_header("Content-Type", "application/json; encoding=utf-8")
        self.finish(json.dumps(answer, ensure_ascii=False))

    def answer(self, call: Call) -> dict[str, Any]:
        raise NotImplementedError

    def json_body(self) -> Any:
        try:
            return json.loads(self.request.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None


class _TokenHandler(_Handler):
    needs_token = False

    def answer(self, call: Call) -> dict[str, Any]:
        if call.query.get("grant_type") != "client_credential":
            return _error(40002, "invalid grant_type")
        if call.query.get("appid") != self.fake.app_id:
            return _error(40013)
        if call.query.get("secret") != self.fake.app_secret:
            return _error(40125)
        return {"access_token": self.fake.issue_token(), "expires_in": self.fake.expires_in}


class _CustomSendHandler(_Handler):
    def answer(self, call: Call) -> dict[str, Any]:
        data = self.json_body()
        if not isinstance(data, dict):
            return _error(47001, "data format error")
        if not data.get("touser"):
            return _error(40003)
        kind = data.get("msgtype")
        if kind == "text":
            content = (data.get("text") or {}).get("content")
            if not content:
                return _error(44004, "text content is empty")
        elif kind == "image":
            if not (data.get("image") or {}).get("media_id"):
                return _error(40007, "invalid media_id")
        elif kind in ("voice", "video"):
            if not self.fake.knows((data.get(kind) or {}).get("media_id", "")):
                return _error(40007)
        elif kind == "music":
            if not self.fake.knows((data.get("music") or {}).get("thumb_media_id", "")):
                return _error(40007)
        elif kind == "news":
            articles = (data.get("news") or {}).get("articles")
            if not isinstance(articles, list) or len(articles) != 1:
                return _error(45008, "article size out of limit")
        else:
            return _error(40008, "invalid message type")
        self.fake.sent.append(data)
        return {"errcode": 0, "errmsg": "ok"}


class _MediaUploadHandler(_Handler):
    permanent = False

    def answer(self, call: Call) -> dict[str, Any]:
        kind = call.query.get("type", "")
        if kind not in MEDIA_TYPES:
            return _error(40004, "invalid media type")
        files = self.request.files.get("media")
        if not files:
            return _error(41005, "media data missing")
        upload = files[0]
        if kind == "image" and len(upload.body) > 10 * 1024 * 1024:
            return _error(40009, "invalid image size")
        if kind == "voice" and len(upload.body) > 2 * 1024 * 1024:
            return _error(40010, "invalid voice size")
        if kind == "video" and len(upload.body) > 10 * 1024 * 1024:
            return _error(40011, "invalid video size")
        media_id = self.fake.next_media_id()
        self.fake.uploads.append(
            {
                "type": kind,
                "filename": upload.filename,
                "size": len(upload.body),
                "body": upload.body,
                "media_id": media_id,
                "permanent": self.permanent,
            }
        )
        if self.permanent:
            url = f"http://mmbiz.qpic.cn/fake/{media_id}/0" if kind == "image" else ""
            self.fake.materials.insert(
                0,
                {
                    "type": kind,
                    "media_id": media_id,
                    "name": upload.filename,
                    "update_time": int(time.time()),
                    "url": url,
                },
            )
            return {"media_id": media_id, "url": url} if url else {"media_id": media_id}
        return {"type": kind, "media_id": media_id, "created_at": int(time.time())}


class _MaterialHandler(_MediaUploadHandler):
    permanent = True


class _MenuCreateHandler(_Handler):
    def answer(self, call: Call) -> dict[str, Any]:
        data = self.json_body()
        if not isinstance(data, dict) or not isinstance(data.get("button"), list):
            return _error(47001, "data format error")
        buttons = data["button"]
        if not 1 <= len(buttons) <= 3:
            return _error(40016)
        for button in buttons:
            subs = button.get("sub_button")
            if subs is not None and not 1 <= len(subs) <= 5:
                return _error(40017, "invalid sub button size")
        self.fake.menus.append(data)
        return {"errcode": 0, "errmsg": "ok"}


class _MenuGetHandler(_Handler):
    """The menu as WeChat's menu/get returns it: leaves carry an empty ``sub_button``."""

    def answer(self, call: Call) -> dict[str, Any]:
        if not self.fake.menus:
            return _error(46003)
        buttons = []
        for button in self.fake.menus[-1]["button"]:
            shown = {"sub_button": [], **button}
            shown["sub_button"] = [{"sub_button": [], **sub} for sub in shown["sub_button"]]
            buttons.append(shown)
        return {"menu": {"button": buttons}}


class _BatchGetHandler(_Handler):
    def answer(self, call: Call) -> dict[str, Any]:
        data = self.json_body()
        if not isinstance(data, dict) or data.get("type") not in MEDIA_TYPES - {"thumb"}:
            return _error(40004)
        offset, count = data.get("offset", 0), data.get("count", 20)
        if not isinstance(offset, int) or not isinstance(count, int) or not 1 <= count <= 20:
            return _error(40007, "invalid count")
        found = [m for m in self.fake.materials if m["type"] == data["type"]]
        items = [
            {k: v for k, v in m.items() if k != "type"} for m in found[offset : offset + count]
        ]
        return {"total_count": len(found), "item_count": len(items), "item": items}


class _MaterialCountHandler(_Handler):
    def answer(self, call: Call) -> dict[str, Any]:
        count = {kind: 0 for kind in ("voice", "video", "image", "news")}
        for material in self.fake.materials:
            if material["type"] in count:
                count[material["type"]] += 1
        return {f"{kind}_count": n for kind, n in count.items()}


# -- parametric QR codes (reach12): qrcode/create and showqrcode ------------------------------
# POST /cgi-bin/qrcode/create?access_token=..  {"action_name": "QR_LIMIT_STR_SCENE" |
#   "QR_STR_SCENE", "expire_seconds": n (temporary only, at most 2592000), "action_info":
#   {"scene": {"scene_str": "..."}}}  ->  {"ticket", "expire_seconds"?, "url"}
# GET  /cgi-bin/showqrcode?ticket=..  -> the PNG (WeChat serves it from mp.weixin.qq.com)
# A real PNG: 1x1 white pixel, the same bytes every time, distinct per ticket in a tEXt chunk.

QR_ACTIONS = {"QR_SCENE", "QR_STR_SCENE", "QR_LIMIT_SCENE", "QR_LIMIT_STR_SCENE"}
_PNG_HEAD = bytes.fromhex("89504e470d0a1a0a")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    import zlib

    body = kind + data
    return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")


def fake_png(text: str) -> bytes:
    """A valid 1x1 PNG carrying ``text`` (the ticket) in a tEXt chunk."""
    import zlib

    ihdr = (1).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])  # 1x1, 8-bit greyscale
    pixels = zlib.compress(b"\x00\xff")
    return (
        _PNG_HEAD
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"tEXt", b"ticket\x00" + text.encode())
        + _png_chunk(b"IDAT", pixels)
        + _png_chunk(b"IEND", b"")
    )


class _QrCreateHandler(_Handler):
    def answer(self, call: Call) -> dict[str, Any]:
        data = self.json_body()
        if not isinstance(data, dict) or data.get("action_name") not in QR_ACTIONS:
            return _error(40097, "invalid args")
        scene = ((data.get("action_info") or {}).get("scene")) or {}
        name = str(data["action_name"])
        if "STR" in name:
            text = scene.get("scene_str")
            if not isinstance(text, str) or not 1 <= len(text.encode()) <= 64:
                return _error(40097, "invalid args: scene_str")
        temporary = "LIMIT" not in name
        expire = data.get("expire_seconds", 60)
        if temporary and (not isinstance(expire, int) or not 60 <= expire <= 2592000):
            return _error(40097, "invalid args: expire_seconds")
        ticket = "gQ" + secrets.token_urlsafe(24)
        self.fake.qrcodes[ticket] = data
        answer: dict[str, Any] = {"ticket": ticket, "url": f"http://weixin.qq.com/q/{ticket[:20]}"}
        if temporary:
            answer["expire_seconds"] = expire
        return answer


class _ShowQrHandler(_Handler):
    needs_token = False

    async def get(self) -> None:
        ticket = self.get_query_argument("ticket", "")
        self.fake.calls.append(
            Call(
                method="GET",
                path=self.request.path,
                query={"ticket": ticket},
                body=b"",
                at=time.time(),
            )
        )
        if ticket not in self.fake.qrcodes:
            self.set_status(404)
            self.finish("<html>not found</html>")
            return
        self.set_header("Content-Type", "image/png")
        self.finish(fake_png(ticket))


def qr_routes(fake: FakeWeChatAPI) -> list[Any]:
    return [
        (r"/cgi-bin/qrcode/create", _QrCreateHandler, {"fake": fake}),
        (r"/cgi-bin/showqrcode", _ShowQrHandler, {"fake": fake}),
    ]
