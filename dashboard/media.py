"""The media library: permanent material on WeChat, listed (``batchget_material``, thumbnails for
images) and uploaded (``add_material``) after the checks of ``service.media``. The AppSecret and
access_token never leave the server; without AppID/AppSecret the page says so.

``POST /api/media/upload?type=image&name=a.png[&title=&introduction=]`` takes the file itself as
the body (streamed, refused past the largest limit before it is all read).
"""

from __future__ import annotations

from typing import Any

import tornado.web
from tornado.http1connection import HTTP1Connection

from service.media import LIMITS, MEDIA_KINDS, check_upload
from service.wechat_api import WeChatAPIError

from .base import DashboardHandler, WeChatApiHandler

__all__ = ["routes"]

MAX_UPLOAD = max(limit.max_bytes for limit in LIMITS.values())


class MediaBase(WeChatApiHandler):
    def kind(self) -> str:
        kind = self.get_query_argument("type", "image")
        if kind not in MEDIA_KINDS:
            raise tornado.web.HTTPError(400, "type must be one of %s", ", ".join(MEDIA_KINDS))
        return kind


class MediaApi(MediaBase):
    """``GET ?type=image&offset=0``: the counts and one page (20) of that kind."""

    @tornado.web.authenticated
    async def get(self) -> None:
        kind = self.kind()
        offset = self.int_argument("offset", 0, 0, 100_000)
        limits = {k: v.describe() for k, v in LIMITS.items()}
        api = self.api
        if api is None:
            self.write_json({"configured": False, "limits": limits, "items": [], "total": 0})
            return
        try:
            counts = await api.material_count()
            page = await api.list_material(kind, offset, 20)
        except WeChatAPIError as e:
            self.wechat_failed(e)
            return
        items = [
            {
                "media_id": str(item.get("media_id", "")),
                "name": str(item.get("name", "")),
                "update_time": item.get("update_time"),
                "url": str(item.get("url") or "") if kind == "image" else "",
            }
            for item in page.get("item") or []
            if isinstance(item, dict)
        ]
        self.write_json(
            {
                "configured": True,
                "limits": limits,
                "counts": {k: counts.get(f"{k}_count", 0) for k in ("image", "voice", "video")},
                "type": kind,
                "offset": offset,
                "total": page.get("total_count", len(items)),
                "items": items,
            }
        )


@tornado.web.stream_request_body
class UploadApi(MediaBase):
    async def prepare(self) -> None:
        await super().prepare()  # the login first: nothing is read for an anonymous caller
        if self._finished:
            return
        self._chunks: list[bytes] = []
        self._size = 0
        self._over = False
        length = self.request.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > MAX_UPLOAD:
            raise tornado.web.HTTPError(413, "WeChat takes at most 10 MB")
        connection = self.request.connection
        if isinstance(connection, HTTP1Connection):
            connection.set_max_body_size(MAX_UPLOAD + 1)

    def data_received(self, chunk: bytes) -> None:
        if self._over:
            return
        self._size += len(chunk)
        if self._size > MAX_UPLOAD:
            self._over = True
            self._chunks.clear()
            return
        self._chunks.append(chunk)

    @tornado.web.authenticated
    async def post(self) -> None:
        if self._over:
            raise tornado.web.HTTPError(413, "WeChat takes at most 10 MB")
        kind = self.kind()
        name = self.get_query_argument("name", "")[:200]
        title = self.get_query_argument("title", "")
        introduction = self.get_query_argument("introduction", "")[:500]
        data = b"".join(self._chunks)
        problems = check_upload(kind, name, data, title=title)
        if problems:
            self.set_status(422)
            self.write_json({"error": "refused", "issues": problems})
            return
        api = self.require_api()
        try:
            result: dict[str, Any] = await api.add_material(
                kind, name, data, title=title, introduction=introduction
            )
        except WeChatAPIError as e:
            self.wechat_failed(e)
            return
        self.write_json({"media_id": result["media_id"], "url": result.get("url", "")})


class MediaPage(DashboardHandler):
    @tornado.web.authenticated
    def get(self) -> None:
        self.render_page("media.html", page="media")


routes = [
    (r"/api/media", MediaApi),
    (r"/api/media/upload", UploadApi),
    (r"/dashboard/media", MediaPage),
]
