"""Message -> reply: the one router every inbound message goes through.

Order, as in the seed tutorial, with the survey engine in front of the greeting:
text (and a voice message WeChat has recognized: its ``Recognition`` text) → a survey when it
claims the message, else "你好" in one of six languages; image → the
configured image (or a text saying it arrived); subscribe → a welcome that says how to start the
survey; CLICK menu keys → like a typed keyword; unsubscribe and other silent events → ``success``;
anything else → "对不起，不能识别您发的内容！".
"""

from __future__ import annotations

import logging
import random
from typing import Protocol

from .store import Db
from .wechat import Message, Reply

__all__ = ["GREETINGS", "UNKNOWN_TEXT", "Bot", "FixedImage", "ImageSource", "SurveyHook"]

log = logging.getLogger(__name__)

GREETINGS = ("你好！", "Hello!", "こんにちは！", "안녕하세요!", "Bonjour !", "¡Hola!")
UNKNOWN_TEXT = "对不起，不能识别您发的内容！"
IMAGE_RECEIVED_TEXT = "图片已收到，谢谢分享！"
WELCOME_TEXT = "欢迎关注！"
# Events WeChat sends that need no answer: the body "success" tells WeChat so.
SILENT_EVENTS = frozenset(
    {
        "unsubscribe",
        "location",
        "view",
        "view_miniprogram",
        "templatesendjobfinish",
        "masssendjobfinish",
        "scancode_push",
        "scancode_waitmsg",
        "pic_sysphoto",
        "pic_photo_or_album",
        "pic_weixin",
        "location_select",
    }
)


class SurveyHook(Protocol):
    """What the router needs from the survey engine (``service.surveys``)."""

    def start_hint(self) -> str: ...

    async def handle_text(self, db: Db, message: Message, text: str) -> Reply | None: ...


class ImageSource(Protocol):
    """Where the router gets the media_id to answer an image with ("" means: answer with a text).

    The service uses ``service.image_reply.ImageReply``, which follows ``media upload``.
    """

    async def current(self) -> str: ...


class FixedImage:
    """An ``ImageSource`` that always answers with the same media_id."""

    def __init__(self, media_id: str = "") -> None:
        self.media_id = media_id

    async def current(self) -> str:
        return self.media_id


class Bot:
    def __init__(
        self,
        db: Db,
        *,
        surveys: SurveyHook | None = None,
        image: ImageSource | None = None,
        image_media_id: str = "",
        rng: random.Random | None = None,
    ) -> None:
        """``image`` gives the image reply; without it, ``image_media_id`` is a fixed one."""
        self.db = db
        self.surveys = surveys
        self.image: ImageSource = image if image is not None else FixedImage(image_media_id)
        self._rng = rng or random.Random()  # noqa: S311 - greetings, not secrets

    async def reply(self, message: Message) -> Reply:
        if message.msg_type == "text":
            return await self._text(message, message.content)
        if message.msg_type == "voice" and message.recognition:
            # 语音识别 on: what was heard is answered like typed text (surveys, keywords).
            return await self._text(message, message.recognition)
        if message.msg_type == "image":
            media_id = await self.image.current()
            if media_id:
                return Reply.image(media_id)
            return Reply.text(IMAGE_RECEIVED_TEXT)
        if message.is_event:
            return await self._event(message)
        return Reply.text(UNKNOWN_TEXT)

    async def _text(self, message: Message, text: str) -> Reply:
        if self.surveys is not None:
            claimed = await self.surveys.handle_text(self.db, message, text.strip())
            if claimed is not None:
                return claimed
        return Reply.text(self.greeting())

    def greeting(self) -> str:
        return self._rng.choice(GREETINGS)

    async def _event(self, message: Message) -> Reply:
        event = message.event
        if event in ("subscribe", "subscribe_scan"):
            return Reply.text(self.welcome())
        if event == "click" and message.event_key and self.surveys is not None:
            claimed = await self.surveys.handle_text(self.db, message, message.event_key)
            if claimed is not None:
                return claimed
            return Reply.text(UNKNOWN_TEXT)
        if event == "scan" or event in SILENT_EVENTS:
            return Reply.nothing()
        return Reply.text(UNKNOWN_TEXT)

    def welcome(self) -> str:
        hint = self.surveys.start_hint() if self.surveys is not None else ""
        return WELCOME_TEXT + ("\n" + hint if hint else "")
