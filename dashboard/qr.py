"""QR channels from the survey page: list a survey's codes with their scans, create one (through
the WeChat API, ``service.qr``), download its PNG. Handlers parse, call, write."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import tornado.web

from service import qr
from service.store import qr_codes

from .base import ApiHandler, DashboardHandler
from .surveys import attachment, find_survey

__all__ = ["routes"]


def _public(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "scene": doc["_id"],
        "channel": doc["channel"],
        "url": doc.get("url", ""),
        "permanent": bool(doc.get("permanent")),
        "created_at": doc.get("created_at"),
        "expires_at": doc.get("expires_at"),
        "scans": int(doc.get("scans", 0)),
        "image": f"/dashboard/surveys/{doc['survey']}/qr/{doc['channel']}.png",
    }


class QrApi(ApiHandler):
    """``GET``: the survey's codes with their scans; ``POST {channel, expires?}``: a new code
    (``expires`` like ``7d``, at most 30 days; none: permanent)."""

    @tornado.web.authenticated
    async def get(self, survey_id: str) -> None:
        survey = find_survey(self, survey_id)
        codes = await qr_codes.list_codes(self.db, survey.id)
        self.write_json({"items": [_public(d) for d in codes]})

    @tornado.web.authenticated
    async def post(self, survey_id: str) -> None:
        survey = find_survey(self, survey_id)
        body = self.json_body()
        channel = body.get("channel")
        expires_text = body.get("expires") or ""
        if not isinstance(channel, str) or not isinstance(expires_text, str):
            raise tornado.web.HTTPError(400, "channel (and expires) must be text")
        api = self.settings.get("wechat_api")
        if api is None:
            raise tornado.web.HTTPError(
                409, "QR codes need WECHAT_APP_ID and WECHAT_APP_SECRET (the WeChat API)"
            )
        try:
            expires: dt.timedelta | None = qr.parse_duration(expires_text) if expires_text else None
            doc = await qr.create(
                api,
                self.db,
                survey_id=survey.id,
                channel=channel.strip(),
                data_dir=self.config.data_dir,
                expires=expires,
            )
        except qr.QrError as e:
            raise tornado.web.HTTPError(400, "%s", str(e)) from e
        self.set_status(201)
        self.write_json(_public(doc))


class QrImage(DashboardHandler):
    """The saved PNG of a survey's channel code."""

    @tornado.web.authenticated
    async def get(self, survey_id: str, channel: str) -> None:
        survey = find_survey(self, survey_id)
        doc = await qr_codes.find(self.db, f"{survey.id}:{channel}")
        if doc is None:
            raise tornado.web.HTTPError(404, "no QR code for channel %s", channel)
        path = self.config.data_dir / "qr" / str(doc["image"])
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError as e:
            raise tornado.web.HTTPError(404, "the QR image is missing") from e
        self.set_header("Content-Type", "image/png")
        attachment(self, f"{survey.id}-qr.png", f"{survey.id}-{channel}.png")
        self.finish(data)


routes = [
    (r"/api/surveys/([^/]+)/qr", QrApi),
    (r"/dashboard/surveys/([^/]+)/qr/([^/]+)\.png", QrImage),
]
