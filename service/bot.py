"""Message -> reply: the one router every inbound message goes through.

Order: an active survey session, then the survey keywords (both ``service.surveys``), then the
owner's reply rules top to bottom (``service.replies``, in memory), then the default reply
(the seed's "你好" in one of six languages unless the owner set another). An image → the owner's
image reply, by default the configured image (or a text saying it arrived); subscribe → the
welcome, with the hint of how to start the open surveys; CLICK menu keys → like a typed keyword
(surveys, then rules); a voice message WeChat has recognized (its ``Recognition`` text) → like
typed text; unsubscribe and other silent events → ``success``; anything else → the
"unknown" reply (「对不起，不能识别您发的内容！」 by default).
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import zoneinfo
from typing import Any, Protocol

from . import qr
from .clock import now as _now
from .config import DEFAULT_TIMEZONE
from .privacy import PrivacyDesk
from .replies import DEFAULT_UNKNOWN, DEFAULT_WELCOME, ReplyBook, ReplySpec
from .store import Db
from .wechat import Message, Reply

__all__ = [
    "GREETINGS",
    "UNKNOWN_TEXT",
    "Bot",
    "FixedImage",
    "ImageSource",
    "RepliesSource",
    "SurveyHook",
]

log = logging.getLogger(__name__)

GREETINGS = ("你好！", "Hello!", "こんにちは！", "안녕하세요!", "Bonjour !", "¡Hola!")
UNKNOWN_TEXT = DEFAULT_UNKNOWN
IMAGE_RECEIVED_TEXT = "图片已收到，谢谢分享！"
WELCOME_TEXT = DEFAULT_WELCOME
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

    def might_claim(self, openid: str, text: str) -> bool: ...
    def get(self, survey_id: str) -> Any: ...

    async def handle_text(self, db: Db, message: Message, text: str) -> Reply | None: ...

    async def handle_survey(self, db: Db, message: Message, survey_id: str) -> Reply | None: ...


class RepliesSource(Protocol):
    """Where the router gets the owner's replies (``service.replies.ReplyRules``)."""

    snapshot: ReplyBook

    @property
    def loaded(self) -> bool: ...

    async def ready(self) -> None: ...


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
        replies: RepliesSource | None = None,
        image: ImageSource | None = None,
        image_media_id: str = "",
        tz: dt.tzinfo | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """``image`` gives the image reply; without it, ``image_media_id`` is a fixed one.
        ``replies``: the owner's rules (without: the built-in replies). ``tz``: the zone of the
        rules' time windows (``Settings.tzinfo``)."""
        self.db = db
        self.privacy = PrivacyDesk()
        self.surveys = surveys
        self.replies = replies
        self.image: ImageSource = image if image is not None else FixedImage(image_media_id)
        self.tz = tz if tz is not None else zoneinfo.ZoneInfo(DEFAULT_TIMEZONE)
        self._rng = rng or random.Random()  # noqa: S311 - greetings, not secrets
        self._builtin = ReplyBook()

    async def book(self) -> ReplyBook:
        """The replies in force (in memory; the first call of a process waits for the load)."""
        if self.replies is None:
            return self._builtin
        if not self.replies.loaded:
            await self.replies.ready()  # once per process, bounded by the inbox's deadline
        return self.replies.snapshot

    async def reply(self, message: Message) -> Reply:
        book = await self.book()
        if message.msg_type == "text":
            return await self._text(book, message, message.content)
        if message.msg_type == "voice" and message.recognition:
            # 语音识别 on: what was heard is answered like typed text (surveys, keywords, rules).
            return await self._text(book, message, message.recognition)
        if message.msg_type == "image":
            if book.image is not None:
                return await self._spec(book, book.image, message)
            media_id = await self.image.current()
            if media_id:
                return Reply.image(media_id)
            return Reply.text(IMAGE_RECEIVED_TEXT)
        if message.is_event:
            return await self._event(book, message)
        return await self._spec(book, book.unknown, message)

    async def _text(self, book: ReplyBook, message: Message, text: str) -> Reply:
        if self.privacy.claims(text):  # before surveys: it works in the middle of one too
            handled = await self.privacy.handle_text(self.db, message, text)
            if handled is not None:
                return handled
        if self.surveys is not None:
            claimed = await self.surveys.handle_text(self.db, message, text.strip())
            if claimed is not None:
                return claimed
        answer = await self._rules(book, message, text)
        if answer is not None:
            return answer
        if book.default is not None:
            return await self._spec(book, book.default, message)
        return Reply.text(self.greeting())

    async def _rules(self, book: ReplyBook, message: Message, text: str) -> Reply | None:
        rule = book.match(text, _now().astimezone(self.tz))
        if rule is None:
            return None
        return await self._resolve(rule.reply, message)

    async def _resolve(self, spec: ReplySpec, message: Message) -> Reply | None:
        """A spec's reply; a ``survey`` one goes to the engine (``None`` if it declines: the
        survey is no longer published)."""
        if spec.reply is not None:
            return spec.reply
        if self.surveys is not None:
            claimed = await self.surveys.handle_survey(self.db, message, spec.survey)
            if claimed is not None:
                return claimed
        log.warning("a reply names survey %r, which is not published; skipped", spec.survey)
        return None

    async def _spec(self, book: ReplyBook, spec: ReplySpec, message: Message) -> Reply:
        return await self._resolve(spec, message) or Reply.text(self.greeting())

    async def offline_reply(self, message: Message) -> Reply | None:
        """The reply while the database is unavailable, or ``None`` when only the database
        can give it (a survey step, 删除我的数据: the caller apologises). Greetings, the rules,
        the welcome and the image are in memory and go on as usual."""
        if self.replies is not None and not self.replies.loaded:
            return None  # the owner's replies never loaded: do not guess
        book = self.replies.snapshot if self.replies is not None else self._builtin
        heard = message.msg_type == "voice" and message.recognition
        if message.msg_type == "text" or heard or (message.event == "click" and message.event_key):
            if message.msg_type == "text":
                text = message.content
            elif heard:
                text = message.recognition
            else:
                text = message.event_key
            if self.privacy.claims(text):
                return None
            if self.surveys is not None and self.surveys.might_claim(message.openid, text.strip()):
                return None
            rule = book.match(text, _now().astimezone(self.tz))
            fallback = book.unknown if message.is_event else book.default
            spec = rule.reply if rule is not None else fallback
            if spec is None:
                return Reply.text(self.greeting())
            return spec.reply  # None for a survey reply: it needs the database
        return await self.reply(message)

    def greeting(self) -> str:
        return self._rng.choice(GREETINGS)

    async def _event(self, book: ReplyBook, message: Message) -> Reply:
        event = message.event
        scene = qr.scene_of(message) if self.surveys is not None else ""
        if scene and self.surveys is not None:
            # One of our QR codes (service.qr): its survey starts; for subscribe, welcomed first.
            started = await qr.start_from_scene(self.db, self.surveys, message, scene)
            if started is not None and started.kind == "text":
                if event == "scan":
                    return started
                return Reply.text(WELCOME_TEXT + "\n" + started.content)
        if event in ("subscribe", "subscribe_scan"):
            return self.welcome(book)
        if event == "click" and message.event_key:
            key = message.event_key
            if self.surveys is not None:
                claimed = await self.surveys.handle_text(self.db, message, key)
                if claimed is not None:
                    return claimed
            answer = await self._rules(book, message, key)
            if answer is not None:
                return answer
            return await self._spec(book, book.unknown, message)
        if event == "scan" or event in SILENT_EVENTS:
            return Reply.nothing()
        return await self._spec(book, book.unknown, message)

    def welcome(self, book: ReplyBook | None = None) -> Reply:
        book = book or (self.replies.snapshot if self.replies is not None else self._builtin)
        reply = book.welcome.reply or Reply.text(WELCOME_TEXT)
        hint = self.surveys.start_hint() if self.surveys is not None and book.welcome_hint else ""
        if reply.kind == "text" and hint:
            return Reply.text(reply.content + "\n" + hint)
        return reply
