"""The WeChat API client: access_token shared through MongoDB, customer-service messages,
media upload and the custom menu, on top of wechatpy's (synchronous) ``WeChatClient``.

How the pieces fit
------------------
``WeChatAPI`` is the async face the rest of the service uses. wechatpy's client is synchronous
(``requests``), so every HTTP call runs in a small thread pool owned by the ``WeChatAPI`` object;
the event loop never blocks. The async driver (``AsyncMongoClient``) belongs to the event loop and
cannot be used from those threads, so the token logic stays on the loop:

1. ``access_token()`` returns the in-process copy while it is fresh (no database round trip);
   otherwise it reads ``token:<appid>`` from MongoDB (``service.store.tokens``), which every process
   shares.
2. When the stored token is missing, about to expire (``refresh_margin``, 5 minutes by default) or
   was just rejected by WeChat, one process takes the refresh lease (a document with an expiry),
   fetches a new token with wechatpy, stores it and gives the lease back; the others poll MongoDB
   until the new token appears. Inside one process an ``asyncio.Lock`` makes concurrent callers
   wait for a single refresh.
3. The token is handed to wechatpy through ``TokenSession``, a wechatpy ``SessionStorage`` whose
   source of truth is that MongoDB document: the async layer loads it, and each call pins the exact
   token it chose for the worker thread, so a 40001 answer can be matched to the token that failed.

Errors: 40001/40014/42001 (token invalid or expired) refresh at once and retry the call once.
``-1`` (system busy) and network errors are retried with exponential back-off and jitter
(``retry_delays``). A customer-service message whose answer was lost after it was sent (read
timeout, dropped connection) is *not* resent, since it may have been delivered: sends are at most
once. Everything else (45015 outside the 48-hour window, 40003 bad openid, 45047 too many
messages, ...) is permanent and raised at once as ``WeChatAPIError``.

The menu is checked by ``service.menu.validate_menu`` against WeChat's limits before it is sent;
the image reply that follows ``python -m service media upload`` is ``service.image_reply``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import logging
import os
import random
import re
import secrets
import socket
import threading
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import requests
import urllib3.exceptions
from wechatpy.client import WeChatClient
from wechatpy.exceptions import WeChatClientException
from wechatpy.session import SessionStorage

from .config import Settings
from .menu import menu_from_wechat, validate_menu
from .store import Db, tokens
from .wechat import TEXT_LIMIT_BYTES, Reply, truncate_utf8

__all__ = [
    "PERMANENT_ERRCODES",
    "RETRYABLE_ERRCODES",
    "TOKEN_ERRCODES",
    "TokenSession",
    "WeChatAPI",
    "WeChatAPIError",
    "make_api",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

# The access_token is invalid (40001, 40014) or expired (42001): refresh it and retry once.
TOKEN_ERRCODES = frozenset({40001, 40014, 42001})
# WeChat's "system busy, try again later": safe to retry.
RETRYABLE_ERRCODES = frozenset({-1})
# Known permanent errors with a hint for the operator (any other non-zero errcode is permanent).
PERMANENT_ERRCODES: dict[int, str] = {
    40003: "不合法的 OpenID / invalid openid",
    40013: "AppID 无效 / invalid AppID (WECHAT_APP_ID)",
    40125: "AppSecret 无效 / invalid AppSecret (WECHAT_APP_SECRET)",
    43004: "需要接收者关注 / the user is not (or no longer) following the account",
    40164: "调用接口的 IP 不在白名单中 / caller IP not in the IP whitelist (公众平台 → 基本配置)",
    45009: "接口调用超过当日上限 / daily API quota reached",
    45015: "用户 48 小时内未与公众号互动，不能发客服消息 / user outside the 48-hour window",
    45047: "客服消息下行条数超过上限 / too many messages to this user without a reply from them",
    48001: "公众号没有该接口权限 / the account is not authorised for this API",
}
TOKEN_PATH = "/cgi-bin/token"  # noqa: S105 - a URL path, not a secret


class WeChatAPIError(Exception):
    """A WeChat API call failed for good (after the retries that were safe).

    - ``errcode``: WeChat's code (None for HTTP or network failures); ``api``: the call, e.g.
      ``"message/custom/send"``.
    - ``retryable``: a temporary failure (system busy, network) that outlasted the retries; calling
      again later is safe and may succeed.
    - ``uncertain``: a customer-service message whose answer was lost after the request went out
      (timeout, dropped connection, HTTP error): it may have been delivered, so it is not resent.
    - ``permanent``: neither; WeChat refused (45015 outside the 48-hour window, 40003 bad openid,
      ...). Retrying will not help.
    """

    def __init__(
        self,
        errcode: int | None,
        errmsg: str,
        *,
        api: str,
        retryable: bool = False,
        uncertain: bool = False,
    ) -> None:
        self.errcode = errcode
        self.errmsg = _redact(errmsg)
        self.api = api
        self.retryable = retryable
        self.uncertain = uncertain
        hint = PERMANENT_ERRCODES.get(errcode) if errcode is not None else None
        code = f"errcode {errcode}" if errcode is not None else "no errcode"
        text = f"WeChat API {api} failed ({code}): {self.errmsg}"
        if uncertain:
            text += " — may have been delivered, not resent"
        super().__init__(text + (f" — {hint}" if hint else ""))

    @property
    def permanent(self) -> bool:
        return not self.retryable and not self.uncertain


_SECRET_PARAM = re.compile(r"\b(access_token|secret)=[^&\s'\")]+")


def _redact(text: str) -> str:
    """Network errors quote the URL: never let the AppSecret or a token reach a log or message."""
    return _SECRET_PARAM.sub(r"\1=***", text)


class TokenSession(SessionStorage):
    """wechatpy session storage backed by the MongoDB token document.

    The async layer (``WeChatAPI``) reads and writes MongoDB and keeps the current token here with
    :meth:`load`; a worker thread pins the token its call must use with :meth:`pin`, so wechatpy's
    ``client.access_token`` returns exactly that value. Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, Any] = {}
        self._local = threading.local()

    def load(self, key: str, value: str) -> None:
        with self._lock:
            self._values[key] = value

    def pin(self, key: str, value: str | None) -> None:
        self._local.pinned = {key: value} if value else {}

    def unpin(self) -> None:
        self._local.pinned = {}

    def get(self, key: str, default: Any = None) -> Any:
        pinned = getattr(self._local, "pinned", {})
        if key in pinned:
            return pinned[key]
        with self._lock:
            return self._values.get(key, default)

    def set(self, key: str, value: Any, ttl: int | None = None) -> None:
        if value is None:
            return
        with self._lock:
            self._values[key] = value

    def delete(self, key: str) -> None:
        with self._lock:
            self._values.pop(key, None)


class _Client(WeChatClient):
    """wechatpy's client on a configurable base URL that never fetches a token on its own.

    ``fetch_access_token`` is called only by ``WeChatAPI`` while it holds the refresh lease;
    ``access_token`` is whatever the async layer pinned for this call.
    """

    def __init__(self, app_id: str, secret: str, *, base_url: str, **kwargs: Any) -> None:
        super().__init__(app_id, secret, auto_retry=False, **kwargs)
        self.API_BASE_URL = base_url.rstrip("/") + "/cgi-bin/"
        self.token_url = base_url.rstrip("/") + TOKEN_PATH

    @property
    def access_token(self) -> str:
        token = self.session.get(self.access_token_key)
        if not token:
            raise RuntimeError("no access_token pinned: calls go through WeChatAPI")
        return str(token)

    def fetch_access_token(self) -> dict[str, Any]:
        result: dict[str, Any] = self._fetch_access_token(
            url=self.token_url,
            params={"grant_type": "client_credential", "appid": self.appid, "secret": self.secret},
        )
        return result


IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp"})
IMAGE_MAX_BYTES = 10 * 1024 * 1024  # WeChat's limit for images, temporary and permanent


def _check_image(image: Path) -> tuple[Path, int]:
    if not image.is_file():
        raise FileNotFoundError(f"no such image: {image}")
    if image.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"{image.name}: WeChat accepts JPG, PNG, GIF or BMP images")
    size = image.stat().st_size
    if size > IMAGE_MAX_BYTES:
        raise ValueError(f"{image.name}: {size} bytes, WeChat's limit is {IMAGE_MAX_BYTES} bytes")
    return image, size


def _sent_nothing(error: requests.RequestException) -> bool:
    """True when the request never reached the server (so resending cannot duplicate it)."""
    if isinstance(error, requests.ConnectTimeout):
        return True
    if isinstance(error, requests.ConnectionError):
        reason = error.args[0] if error.args else None
        reason = getattr(reason, "reason", reason)
        # urllib3's NewConnectionError (refused, unreachable, DNS) is a ConnectTimeoutError.
        return isinstance(reason, urllib3.exceptions.ConnectTimeoutError)
    return False


class WeChatAPI:
    """Async WeChat API client shared by the whole process (``app.settings["wechat_api"]``).

    Build it with :func:`make_api`. Public coroutines:

    - ``await send_reply(openid, reply)``: a ``service.wechat.Reply`` as a customer-service message
      (text → text, image → image, ``success`` → nothing sent).
    - ``await send_text(openid, text)``, ``await send_image(openid, media_id)``.
    - ``await upload_image(path, permanent=False) -> media_id``.
    - ``await create_menu(menu)``: validates (``validate_menu``) then creates the custom menu.
    - ``await access_token() -> str``: the shared token (refreshed through MongoDB as needed).
    - ``await close()``: stops the worker threads.

    Each raises ``WeChatAPIError`` when WeChat refuses for good or retries are exhausted; none of
    them blocks the event loop.
    """

    def __init__(
        self,
        db: Db,
        *,
        app_id: str,
        app_secret: str,
        base_url: str = "https://api.weixin.qq.com",
        timeout: float = 10.0,
        refresh_margin: float = 300.0,
        retry_delays: Sequence[float] = (0.5, 1.0, 2.0),
        lease_ttl: float | None = None,
        wait_timeout: float | None = None,
        max_workers: int = 4,
    ) -> None:
        if not app_id or not app_secret:
            raise ValueError("WeChatAPI needs an AppID and an AppSecret")
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"WeChat API base URL must be http(s)://host, got {base_url!r}")
        self.db = db
        self.app_id = app_id
        self._secret = app_secret
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.refresh_margin = refresh_margin
        self.retry_delays = tuple(retry_delays)
        # The lease outlives the longest refresh (every attempt timing out, with back-off), so a
        # slow refresh is never joined by a second one; a crashed holder blocks no longer than it.
        worst_refresh = timeout * (1 + len(self.retry_delays)) + 1.5 * sum(self.retry_delays)
        self.lease_ttl = lease_ttl if lease_ttl is not None else worst_refresh + 5
        self.wait_timeout = wait_timeout if wait_timeout is not None else self.lease_ttl + 10
        # Who holds the refresh lease: one id per WeChatAPI object (one per process in production).
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.session = TokenSession()
        self._max_workers = max_workers
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._clients: list[_Client] = []
        self._clients_lock = threading.Lock()
        self._token: tokens.Token | None = None
        self._refresh_lock = asyncio.Lock()
        self._closed = False
        self.token_fetches = 0  # tokens this object fetched from WeChat (tests, metrics)

    # -- public API -----------------------------------------------------------------------------

    async def access_token(self) -> str:
        """The current access_token, shared by every process through MongoDB."""
        token = self._token
        if token is not None and token.fresh(self.refresh_margin):
            return token.value
        return (await self._obtain(stale=None)).value

    async def send_reply(self, openid: str, reply: Reply) -> None:
        """Deliver a bot ``Reply`` as a customer-service message (nothing for ``success``)."""
        if reply.kind == "text":
            await self.send_text(openid, reply.content)
        elif reply.kind == "image":
            await self.send_image(openid, reply.media_id)
        elif reply.kind != "success":
            await self._send_other(openid, reply)

    async def _send_other(self, openid: str, reply: Reply) -> None:
        """Voice, video, music and news as customer-service messages (wechatpy's senders)."""
        if not openid:
            raise ValueError("openid is empty")
        send: Callable[[_Client], Any]
        match reply.kind:
            case "voice":
                send = lambda c: c.message.send_voice(openid, reply.media_id)  # noqa: E731
            case "video":
                send = lambda c: c.message.send_video(  # noqa: E731
                    openid, reply.media_id, reply.title, reply.description
                )
            case "music":
                send = lambda c: c.message.send_music(  # noqa: E731
                    openid,
                    reply.music_url,
                    reply.hq_music_url,
                    reply.thumb_media_id,
                    reply.title,
                    reply.description,
                )
            case "news":
                # A customer-service news message carries one article (WeChat's rule since 2018).
                first = reply.articles[0]
                article = {
                    "title": first.title,
                    "description": first.description,
                    "url": first.url,
                    "image": first.picurl,
                }
                send = lambda c: c.message.send_articles(openid, [article])  # noqa: E731
            case _:
                raise ValueError(
                    f"cannot send a {reply.kind!r} reply as a customer-service message"
                )
        await self._call("message/custom/send", send, idempotent=False)

    async def send_text(self, openid: str, text: str) -> None:
        """A customer-service text message (cut to WeChat's limit on a character boundary)."""
        if not openid:
            raise ValueError("openid is empty")
        if not text:
            raise ValueError("text is empty")
        content = truncate_utf8(text, TEXT_LIMIT_BYTES)
        await self._call(
            "message/custom/send",
            lambda c: c.message.send_text(openid, content),
            idempotent=False,
        )

    async def send_image(self, openid: str, media_id: str) -> None:
        """A customer-service image message (``media_id`` from :meth:`upload_image`)."""
        if not openid:
            raise ValueError("openid is empty")
        if not media_id:
            raise ValueError("media_id is empty")
        await self._call(
            "message/custom/send",
            lambda c: c.message.send_image(openid, media_id),
            idempotent=False,
        )

    async def upload_image(self, path: str | os.PathLike[str], *, permanent: bool = False) -> str:
        """Upload an image and return its media_id.

        Temporary media (``media/upload``, the default) expire after 3 days on WeChat's side;
        ``permanent=True`` adds it to the permanent material library (``material/add_material``).
        """
        image, size = await asyncio.to_thread(_check_image, Path(path))

        def upload(client: _Client) -> dict[str, Any]:
            with image.open("rb") as f:
                if permanent:
                    result: dict[str, Any] = client.material.add("image", f)
                else:
                    result = client.media.upload("image", f)
            return result

        api = "material/add_material" if permanent else "media/upload"
        result = await self._call(api, upload, idempotent=True)
        media_id = result.get("media_id") if isinstance(result, dict) else None
        if not media_id:
            raise WeChatAPIError(None, f"no media_id in the answer: {result!r}", api=api)
        kind = "permanent" if permanent else "temporary"
        log.info("uploaded %s (%d bytes) as %s media", image.name, size, kind)
        return str(media_id)

    async def create_menu(self, menu: dict[str, Any]) -> None:
        """Validate ``menu`` (WeChat's JSON shape, ``{"button": [...]}``) and create it."""
        checked = validate_menu(menu)
        await self._call("menu/create", lambda c: c.menu.create(checked), idempotent=True)

    async def get_menu(self) -> dict[str, Any] | None:
        """The menu WeChat has (``menu/get``), as ``{"button": [...]}`` in the shape
        ``create_menu`` takes (the empty ``sub_button`` of leaves left out); ``None``: no menu."""
        result = await self._call("menu/get", lambda c: c.menu.get(), idempotent=True)
        if not isinstance(result, dict):
            return None
        return menu_from_wechat(result.get("menu") or {})

    async def add_material(
        self, kind: str, name: str, data: bytes, *, title: str = "", introduction: str = ""
    ) -> dict[str, Any]:
        """Add permanent material (``material/add_material``): ``{"media_id", "url"?}``.
        Check sizes and formats first (``service.media.check_upload``)."""

        def upload(client: _Client) -> dict[str, Any]:
            f = io.BytesIO(data)
            f.name = name
            # A video needs a title and an introduction (wechatpy asserts both): the title
            # stands in for a missing introduction.
            result: dict[str, Any] = client.material.add(
                kind, f, title=title or None, introduction=introduction or title or None
            )
            return result

        result = await self._call("material/add_material", upload, idempotent=False)
        if not isinstance(result, dict) or not result.get("media_id"):
            raise WeChatAPIError(
                None, f"no media_id in the answer: {result!r}", api="material/add_material"
            )
        log.info("added %s (%d bytes) as permanent %s material", name, len(data), kind)
        return result

    async def list_material(self, kind: str, offset: int = 0, count: int = 20) -> dict[str, Any]:
        """One page of permanent material (``material/batchget_material``)."""
        result: dict[str, Any] = await self._call(
            "material/batchget_material",
            lambda c: c.material.batchget(kind, offset, count),
            idempotent=True,
        )
        return result

    async def material_count(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "material/get_materialcount", lambda c: c.material.get_count(), idempotent=True
        )
        return result

    async def create_qrcode(
        self, scene: str, *, expire_seconds: int | None = None
    ) -> dict[str, Any]:
        """A parametric QR code for ``scene`` (``qrcode/create``): permanent
        (``QR_LIMIT_STR_SCENE``) without ``expire_seconds``, else temporary (``QR_STR_SCENE``,
        60 s to 30 days). Returns WeChat's answer: ``ticket``, ``url``, ``expire_seconds``."""
        data: dict[str, Any] = {"action_info": {"scene": {"scene_str": scene}}}
        if expire_seconds is None:
            data["action_name"] = "QR_LIMIT_STR_SCENE"
        else:
            data["action_name"] = "QR_STR_SCENE"
            data["expire_seconds"] = int(expire_seconds)
        # Not idempotent: a retry after an uncertain send would make a second code (harmless but
        # permanent codes are limited to 100,000 per account).
        result: dict[str, Any] = await self._call(
            "qrcode/create", lambda c: c.qrcode.create(data), idempotent=False
        )
        if not isinstance(result, dict) or not result.get("ticket"):
            raise WeChatAPIError(None, f"no ticket in the answer: {result!r}", api="qrcode/create")
        return result

    async def qrcode_image(self, ticket: str) -> bytes:
        """The PNG of a QR code (``showqrcode?ticket=``, through the configured API base; on
        WeChat itself it is served by mp.weixin.qq.com, which the base then names)."""
        url = f"{self.base_url}/cgi-bin/showqrcode"

        def fetch(_client: _Client) -> bytes:
            http: requests.Session = _client._http  # wechatpy's own requests.Session
            response = http.get(url, params={"ticket": ticket}, timeout=self.timeout)
            response.raise_for_status()
            if not response.content.startswith(b"\x89PNG"):
                raise WeChatAPIError(None, "showqrcode did not answer a PNG", api="showqrcode")
            return bytes(response.content)

        return await self._with_retries("showqrcode", fetch, token=None, idempotent=True)

    async def close(self) -> None:
        """Stop the worker threads and close their HTTP sessions (idempotent)."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        with self._clients_lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client._http.close()

    # -- the access token -----------------------------------------------------------------------

    def _adopt(self, token: tokens.Token) -> tokens.Token:
        self._token = token
        self.session.load(f"{self.app_id}_access_token", token.value)
        return token

    def _usable(self, token: tokens.Token | None, stale: str | None) -> tokens.Token | None:
        """``token`` if it is fresh and not the one WeChat just rejected, else None."""
        if token is None or token.value == stale or not token.fresh(self.refresh_margin):
            return None
        return token

    async def _obtain(self, stale: str | None) -> tokens.Token:
        """A usable token: ours, MongoDB's, or a new one fetched under the refresh lease.

        ``stale`` is a token WeChat just rejected: it is not usable even if not yet expired.
        """
        async with self._refresh_lock:
            usable = self._usable(self._token, stale)
            if usable is not None:
                return usable
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.wait_timeout
            pause = 0.05
            lease = f"token:{self.app_id}"
            while True:
                stored = self._usable(await tokens.load_token(self.db, self.app_id), stale)
                if stored is not None:
                    return self._adopt(stored)
                if await tokens.acquire_lease(self.db, lease, self.holder, self.lease_ttl):
                    try:
                        # The previous holder may have stored a new token just before we got in.
                        stored = self._usable(await tokens.load_token(self.db, self.app_id), stale)
                        if stored is not None:
                            return self._adopt(stored)
                        return self._adopt(await self._fetch_token())
                    finally:
                        await tokens.release_lease(self.db, lease, self.holder)
                if loop.time() >= deadline:
                    raise WeChatAPIError(
                        None,
                        f"no new access_token from the process holding the lease in "
                        f"{self.wait_timeout:.0f} s",
                        api="token",
                        retryable=True,
                    )
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.5)

    async def _fetch_token(self) -> tokens.Token:
        """Ask WeChat for a new token (we hold the lease) and store it for every process."""
        result = await self._with_retries(
            "token", lambda c: c.fetch_access_token(), token=None, idempotent=True
        )
        value = result.get("access_token") if isinstance(result, dict) else None
        if not value:
            raise WeChatAPIError(None, "no access_token in WeChat's answer", api="token")
        self.token_fetches += 1
        expires_in = float(result.get("expires_in") or 7200)
        log.info("fetched a new access_token (expires in %.0f s)", expires_in)
        return await tokens.save_token(
            self.db, self.app_id, str(value), expires_in, fetched_by=self.holder
        )

    # -- calls ----------------------------------------------------------------------------------

    async def _call(self, api: str, fn: Callable[[_Client], T], *, idempotent: bool) -> T:
        """Run ``fn(client)`` with the current token; one refresh-and-retry on a token error."""
        token = await self.access_token()
        try:
            return await self._with_retries(api, fn, token=token, idempotent=idempotent)
        except WeChatAPIError as e:
            if e.errcode not in TOKEN_ERRCODES:
                raise
            log.info("WeChat rejected the access_token (%s) on %s: refreshing", e.errcode, api)
        token = (await self._obtain(stale=token)).value
        return await self._with_retries(api, fn, token=token, idempotent=idempotent)

    async def _with_retries(
        self, api: str, fn: Callable[[_Client], T], *, token: str | None, idempotent: bool
    ) -> T:
        """Run ``fn`` in a worker thread; back off and retry where WeChat says it is safe."""
        delays = iter(self.retry_delays)
        while True:
            try:
                return await self._run(fn, token)
            except WeChatClientException as e:
                errcode = e.errcode
                status = getattr(e.response, "status_code", None)
                if errcode is None:  # an HTTP error status (e.g. a 502 from a proxy)
                    retry = idempotent
                    error = WeChatAPIError(
                        None, f"HTTP {status}", api=api, retryable=retry, uncertain=not retry
                    )
                else:
                    retry = errcode in RETRYABLE_ERRCODES
                    error = WeChatAPIError(errcode, str(e.errmsg), api=api, retryable=retry)
            except requests.RequestException as e:
                # A send that may have reached WeChat is not repeated: it may have been delivered.
                retry = idempotent or _sent_nothing(e)
                error = WeChatAPIError(
                    None,
                    f"{type(e).__name__}: {e}",
                    api=api,
                    retryable=retry,
                    uncertain=not retry,
                )
            if not retry:
                raise error
            delay = next(delays, None)
            if delay is None:
                raise error
            delay *= 0.5 + random.random()  # noqa: S311 - jitter, not a secret
            log.warning("%s; retrying in %.2f s", error, delay)
            await asyncio.sleep(delay)

    async def _run(self, fn: Callable[[_Client], T], token: str | None) -> T:
        if self._closed:
            raise RuntimeError("WeChatAPI is closed")
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=self._max_workers, thread_name_prefix="wechat-api"
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._in_thread, fn, token)

    def _in_thread(self, fn: Callable[[_Client], T], token: str | None) -> T:
        client: _Client | None = getattr(self._local, "client", None)
        if client is None:
            # One client (one requests.Session) per worker thread: Session is not thread-safe.
            client = _Client(
                self.app_id,
                self._secret,
                base_url=self.base_url,
                session=self.session,
                timeout=self.timeout,
            )
            self._local.client = client
            with self._clients_lock:
                self._clients.append(client)
        self.session.pin(client.access_token_key, token)
        try:
            return fn(client)
        finally:
            self.session.unpin()


def make_api(settings: Settings, db: Db, **options: Any) -> WeChatAPI | None:
    """The process's WeChat API client, or None when WECHAT_APP_ID/WECHAT_APP_SECRET are unset.

    Creating it is cheap (no network, no threads until the first call).
    """
    if not settings.app_id or not settings.app_secret:
        return None
    return WeChatAPI(
        db,
        app_id=settings.app_id,
        app_secret=settings.app_secret,
        base_url=settings.wechat_api_base,
        **options,
    )
