"""Parametric QR codes, one per survey and channel: where each respondent came from.

A code's scene string names its survey and channel, ``"<survey>:<channel>"`` (at most 64 bytes,
WeChat's limit for ``scene_str``). ``create`` asks WeChat for the code (``qrcode/create``:
permanent, or temporary for up to 30 days), saves its PNG (``showqrcode``, through the
configured API base) under ``DATA_DIR/qr/`` and stores it (``service.store.qr_codes``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from pathlib import Path
from typing import Any, Protocol

from .clock import now as _now
from .store import Db, users
from .store import qr_codes as store
from .store import surveys as sessions
from .wechat import Message, Reply

__all__ = [
    "MAX_TEMPORARY",
    "QrError",
    "create",
    "parse_duration",
    "scene_for",
    "scene_of",
    "start_from_scene",
]

MAX_TEMPORARY = dt.timedelta(days=30)
CHANNEL = re.compile(r"^[\w-]{1,40}$")  # letters (Chinese too), digits, _ -
_DURATION = re.compile(r"^(\d{1,7})([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class QrError(ValueError):
    pass


class _Api(Protocol):
    async def create_qrcode(
        self, scene: str, *, expire_seconds: int | None = None
    ) -> dict[str, Any]: ...

    async def qrcode_image(self, ticket: str) -> bytes: ...


class _Surveys(Protocol):
    def get(self, survey_id: str) -> Any: ...

    async def handle_text(self, db: Db, message: Message, text: str) -> Reply | None: ...


def scene_of(message: Message) -> str:
    """The scene of a QR code's event: ``qrscene_<scene>`` on subscribe, ``<scene>`` on SCAN;
    "" for anything else."""
    key = message.event_key
    if message.event in ("subscribe", "subscribe_scan"):
        return key.removeprefix("qrscene_") if key.startswith("qrscene_") else ""
    return key if message.event == "scan" else ""


async def start_from_scene(db: Db, surveys: _Surveys, message: Message, scene: str) -> Reply | None:
    """A scan of one of our codes: count it, start its survey (the survey's own reply: intro and
    first question) and record the channel on the session and the user (the first kept).
    ``None`` for a scene we did not make, an expired code, or a survey no longer there."""
    doc = await store.find(db, scene)
    now = _now()
    if doc is None:
        return None
    expires = doc.get("expires_at")
    if expires is not None and expires.replace(tzinfo=expires.tzinfo or dt.UTC) <= now:
        return None
    survey = surveys.get(str(doc["survey"]))
    await store.count_scan(db, scene, now)
    await users.record_channel(db, message.openid, str(doc["channel"]), now)
    if survey is None or not survey.keywords:
        return None
    reply = await surveys.handle_text(db, message, survey.keywords[0])
    if reply is not None:
        await sessions.set_channel(db, survey.id, message.openid, str(doc["channel"]))
    return reply


def parse_duration(text: str) -> dt.timedelta:
    """``30m``, ``6h``, ``2d``, ``90s`` → a timedelta (``QrError`` otherwise)."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise QrError(f"{text!r} is not a duration like 30m, 6h or 2d")
    return dt.timedelta(seconds=int(match[1]) * _UNITS[match[2]])


def scene_for(survey_id: str, channel: str) -> str:
    """The scene string of a survey's channel; ``QrError`` for a name WeChat or we refuse."""
    if not CHANNEL.match(channel):
        raise QrError("channel: 1-40 letters, digits, _ or - (no spaces, dots or colons)")
    scene = f"{survey_id}:{channel}"
    if len(scene.encode("utf-8")) > 64:
        raise QrError(f"survey id and channel together are over 64 bytes: {scene!r}")
    return scene


async def create(
    api: _Api,
    db: Db,
    *,
    survey_id: str,
    channel: str,
    data_dir: Path,
    expires: dt.timedelta | None = None,
) -> dict[str, Any]:
    """Create, save and store the code of a survey's channel; returns the stored document.

    ``QrError`` when the channel exists already (its code is still valid: reuse it), the name is
    refused, or ``expires`` is outside 1 minute .. 30 days.
    """
    scene = scene_for(survey_id, channel)
    if expires is not None and not dt.timedelta(minutes=1) <= expires <= MAX_TEMPORARY:
        raise QrError("expires: from 1 minute to 30 days (or none: a permanent code)")
    existing = await store.find(db, scene)
    if existing is not None:
        raise QrError(f"channel {channel!r} of {survey_id!r} has a code already")
    seconds = int(expires.total_seconds()) if expires is not None else None
    answer = await api.create_qrcode(scene, expire_seconds=seconds)
    ticket = str(answer["ticket"])
    png = await api.qrcode_image(ticket)
    folder = data_dir / "qr"
    name = f"{survey_id}-{channel}.png"
    await asyncio.to_thread(_save, folder / name, png)
    created = _now()
    doc: dict[str, Any] = {
        "_id": scene,
        "survey": survey_id,
        "channel": channel,
        "ticket": ticket,
        "url": answer.get("url", ""),
        "permanent": seconds is None,
        "created_at": created,
        "expires_at": None if seconds is None else created + dt.timedelta(seconds=seconds),
        "image": name,
        "scans": 0,
    }
    if not await store.insert(db, doc):
        raise QrError(f"channel {channel!r} of {survey_id!r} has a code already")
    return doc


def _save(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
