"""One inbound message, end to end: bot reply, stored once, user counters.

Exactly once: the message key is the ``_id`` of the stored message. The bot runs first (its own
side effects, survey answers, are guarded by conditional updates); then the message and its reply
are inserted. A retry that loses the insert race answers with the reply stored by the winner, so
all tries of one message get the same reply and count once. An ordinary text message costs two
round trips: the survey-state lookup and the insert.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import os
import time
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from .bot import UNKNOWN_TEXT, Bot
from .store import messages
from .store.users import UserStats
from .wechat import Message, Reply, render_reply

__all__ = ["TEST_OPENID_PREFIX", "Inbox", "Outcome", "user_hash"]

log = logging.getLogger(__name__)

# The dashboard simulator's fake users; their data is marked and can be wiped.
TEST_OPENID_PREFIX = "sim-"
BUSY_TEXT = "系统有点忙，请稍后再试。"


def user_hash(openid: str) -> str:
    """A short, stable pseudonym for logs: openids are personal data."""
    return hashlib.sha256(openid.encode("utf-8")).hexdigest()[:10]


@dataclasses.dataclass
class Outcome:
    """What the endpoint sends back (plaintext XML or ``success``) and how it came about."""

    xml: str
    reply: Reply
    duplicate: bool = False
    doc: dict[str, Any] | None = None


class Inbox:
    def __init__(
        self,
        db: AsyncDatabase[dict[str, Any]],
        bot: Bot,
        users: UserStats,
        *,
        store_messages: bool = True,
    ) -> None:
        self.db = db
        self.bot = bot
        self.users = users
        # False only under `serve --no-store` (benchmarks): no message insert, no user counters,
        # hence no exactly-once either.
        self.store_messages = store_messages
        self.process_tag = f"{os.uname().nodename}:{os.getpid()}"

    def document(
        self, message: Message, reply: Reply, xml: str, *, mode: str, started: float
    ) -> dict[str, Any]:
        received = dt.datetime.now(dt.UTC)
        return {
            "_id": message.key,
            "msg_id": message.msg_id or None,
            "openid": message.openid,
            "account": message.account,
            "type": message.msg_type,
            "event": message.event or None,
            "kind": message.kind,
            "text": message.summary(),
            "fields": message.fields,
            "raw": message.raw,
            "created_at": dt.datetime.fromtimestamp(message.create_time, dt.UTC),
            "received_at": received,
            "reply": {"kind": reply.kind, "content": reply.content, "media_id": reply.media_id},
            "reply_text": reply.describe(),
            "reply_xml": xml,
            "latency_ms": round((time.perf_counter() - started) * 1000, 2),
            "mode": mode,
            "test_user": message.openid.startswith(TEST_OPENID_PREFIX),
            "process": self.process_tag,
        }

    async def compute(self, message: Message) -> Reply:
        """The bot's reply; a bug in a bot path is logged and answered politely, never a 500."""
        try:
            return await self.bot.reply(message)
        except Exception:  # boundary: WeChat must get an answer
            log.exception("bot failed on %s from %s", message.kind, user_hash(message.openid))
            return Reply.text(BUSY_TEXT if message.msg_type == "text" else UNKNOWN_TEXT)

    async def process(self, message: Message, *, mode: str = "plain") -> Outcome:
        started = time.perf_counter()
        reply = await self.compute(message)
        xml = render_reply(reply, message)
        doc = self.document(message, reply, xml, mode=mode, started=started)
        return await self.store(message, doc, reply)

    async def store(self, message: Message, doc: dict[str, Any], reply: Reply) -> Outcome:
        """Insert the message once; a retry gets the reply the first try stored."""
        if not self.store_messages:
            return Outcome(doc["reply_xml"], reply, doc=doc)
        existing = await messages.insert_once(self.db, doc)
        if existing is not None:
            stored = existing.get("reply") or {}
            first = Reply(
                stored.get("kind", "success"), stored.get("content", ""), stored.get("media_id", "")
            )
            return Outcome(
                existing.get("reply_xml", "success"), first, duplicate=True, doc=existing
            )
        subscribed: bool | None = None
        if message.event in ("subscribe", "subscribe_scan"):
            subscribed = True
        elif message.event == "unsubscribe":
            subscribed = False
        self.users.seen(
            message.openid,
            doc["received_at"],
            test_user=doc["test_user"],
            subscribed=subscribed,
        )
        return Outcome(doc["reply_xml"], reply, doc=doc)
