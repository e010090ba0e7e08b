"""One inbound message, end to end: bot reply, stored once, user counters.

Exactly once: the message key is the ``_id`` of the stored message. The bot runs first (its own
side effects, survey answers, are guarded by conditional updates); then the message and its reply
are inserted. A retry that loses the insert race answers with the reply stored by the winner, so
all tries of one message get the same reply and count once. An ordinary text message costs two
round trips: the survey-state lookup and the insert.

Outages (see ``service/spool.py``): every database call here is bounded (``db_timeout``). When
the database is unreachable, the bot still answers what it can without it (a greeting, the
welcome, an image; a survey step gets the short apology ``BUSY_TEXT``), and the message document
goes to the local spool, fsynced before the answer, to be replayed into MongoDB when the database
is back. While the database is known to be down, no call waits for it.

The reply budget (WeChat's 5 seconds) is enforced one level up, by ``service.guard.ReplyGuard``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import logging
import os
import time
from typing import TYPE_CHECKING, Any

import pymongo
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from .bot import UNKNOWN_TEXT, Bot
from .dbstate import DatabaseState
from .spool import Spool, is_outage
from .store import TEST_OPENID_PREFIX, messages
from .store.users import UserStats
from .wechat import Message, Reply, render_reply

if TYPE_CHECKING:
    from .metrics import Metrics

__all__ = ["TEST_OPENID_PREFIX", "Inbox", "Outcome", "user_hash"]

log = logging.getLogger(__name__)

BUSY_TEXT = "系统繁忙，请稍后再试。"
# While the database is known to be down, a bot path that needs it fails after this long (seconds)
# instead of waiting for server selection; paths that do not touch the database are unaffected.
OFFLINE_DB_TIMEOUT = 0.1


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
    # The reply budget ran out: WeChat got "success"; the reply follows as a customer-service
    # message.
    late: bool = False
    # The database was unavailable: the message is in the local spool, not in MongoDB yet.
    spooled: bool = False
    # The request's signed timestamp and nonce came with another message first (its key):
    # refused (403).
    signature_holder: str = ""

    @property
    def reused_signature(self) -> bool:
        return bool(self.signature_holder)

    @property
    def label(self) -> str:
        """The request's outcome for logs and metrics."""
        if self.reused_signature:
            return "reused-signature"
        if self.late:
            return "late"
        if self.duplicate:
            return "duplicate"
        return "spooled" if self.spooled else "ok"


class Inbox:
    def __init__(
        self,
        db: AsyncDatabase[dict[str, Any]],
        bot: Bot,
        users: UserStats,
        *,
        database: DatabaseState | None = None,
        store_messages: bool = True,
        spool: Spool | None = None,
        metrics: Metrics | None = None,
        db_timeout: float = 4.0,
        writer: messages.MessageWriter | None = None,
    ) -> None:
        self.db = db
        self.bot = bot
        self.users = users
        # Shared with the spool replayer and /healthz (``service.process.Process`` builds one).
        self.database = database or DatabaseState(metrics=metrics)
        # False only under `serve --no-store` (benchmarks): no message insert, no user counters,
        # hence no exactly-once either (and the process leaves surveys out of the bot).
        self.store_messages = store_messages
        self.process_tag = f"{os.uname().nodename}:{os.getpid()}"
        self.metrics = metrics
        # Upper bound of each database phase (bot, insert) on the hot path, in seconds.
        self.db_timeout = db_timeout
        # Without a spool (tests that build an Inbox by hand) a database failure is raised.
        self.spool = spool
        # The message inserts, batched while several messages are in flight together.
        self.writer = writer or messages.MessageWriter(db, timeout=db_timeout)

    @property
    def db_up(self) -> bool:
        return self.spool is None or self.database.up

    def _db_failed(self, error: BaseException, operation: str) -> None:
        self.database.failed(error, operation)

    def document(
        self,
        message: Message,
        reply: Reply,
        xml: str,
        *,
        mode: str,
        started: float,
        delivery: str = "passive",
        signed: str = "",
    ) -> dict[str, Any]:
        """The stored form of a message. ``delivery``: ``passive`` (the reply was the answer to
        WeChat's request), ``custom`` (sent later as a customer-service message), or ``none``.
        ``signed``: the request's ``timestamp:nonce``, bound to this message by the insert."""
        received = dt.datetime.now(dt.UTC)
        doc = {
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
            "reply": reply.document(),
            "reply_text": reply.describe(),
            "reply_xml": xml,
            "latency_ms": round((time.perf_counter() - started) * 1000, 2),
            "mode": mode,
            "test_user": message.openid.startswith(TEST_OPENID_PREFIX),
            "process": self.process_tag,
            "delivery": "none" if reply.kind == "success" else delivery,
        }
        if doc["delivery"] == "custom":
            doc["delivery_status"] = "pending"
        if signed:
            doc["signed"] = signed
        if reply.forget:
            # Its sender's data was just deleted: stored without them (``messages._as_stored``).
            doc["forgotten"] = True
        return doc

    async def compute(self, message: Message) -> Reply:
        """The bot's reply; a bug in a bot path is logged and answered politely, never a 500.

        Database calls of the bot share one deadline (``db_timeout``; a tiny one while the
        database is known to be down), so an outage costs an apology, not a hang.
        """
        try:
            if not self.db_up:
                offline = await self._offline(message)
                if offline is not None:
                    return offline
            with pymongo.timeout(self.db_timeout if self.db_up else OFFLINE_DB_TIMEOUT):
                return await self.bot.reply(message)
        except PyMongoError as e:
            if is_outage(e):
                if self.db_up:
                    self._db_failed(e, "bot")
                offline = await self._offline(message)
                if offline is not None:
                    return offline
                log.warning(
                    "database unavailable for %s from %s: apologising (%s)",
                    message.kind,
                    user_hash(message.openid),
                    type(e).__name__,
                )
            else:
                log.exception("bot failed on %s from %s", message.kind, user_hash(message.openid))
                if self.metrics is not None:
                    self.metrics.database_errors.labels(operation="bot").inc()
            return Reply.text(BUSY_TEXT)
        except Exception:  # boundary: WeChat must get an answer
            log.exception("bot failed on %s from %s", message.kind, user_hash(message.openid))
            return Reply.text(BUSY_TEXT if message.msg_type == "text" else UNKNOWN_TEXT)

    async def _offline(self, message: Message) -> Reply | None:
        """``Bot.offline_reply``, kept off the database (a tiny deadline for anything that asks)."""
        try:
            with pymongo.timeout(OFFLINE_DB_TIMEOUT):
                return await self.bot.offline_reply(message)
        except PyMongoError:
            return None

    async def store(self, message: Message, doc: dict[str, Any], reply: Reply) -> Outcome:
        """Insert the message once; a retry gets the reply the first try stored.

        Database unavailable: the document goes to the spool and is inserted on replay.
        """
        if not self.store_messages:
            return Outcome(doc["reply_xml"], reply, doc=doc)
        if self.spool is not None and not self.db_up:
            return await self._spool(doc, reply)
        # The counting batch it joins from its insert on (None: counted by a claim afterwards).
        batch = self.users.join() if not doc.get("forgotten") else None
        try:
            with pymongo.timeout(self.db_timeout):
                existing = await self.writer.insert_once(doc, batch.id if batch else None)
        except messages.SignatureReused as e:
            log.warning(
                "signed URL of %s reused for %s from %s: refused",
                e.key,
                message.key,
                user_hash(message.openid),
            )
            return Outcome("success", reply, doc=doc, signature_holder=e.key)
        except PyMongoError as e:
            if batch is not None:
                # Inserted again before its batch is counted (and then counted there once).
                self.users.settle(batch, uncertain=dict(doc))
                batch = None
            if self.spool is None:
                raise
            # The insert may have landed anyway (a timeout after the write): the replay finds out.
            doc["insert_uncertain"] = True
            if is_outage(e):
                self._db_failed(e, "insert")
            else:  # not an outage, but the message must not be lost: the replay sets it aside
                log.exception("storing %s failed; spooling it", message.key)
                if self.metrics is not None:
                    self.metrics.database_errors.labels(operation="insert").inc()
            return await self._spool(doc, reply)
        except asyncio.CancelledError:
            if batch is not None:  # it may have landed: settled like a timeout
                self.users.settle(batch, uncertain=dict(doc))
                batch = None
            raise
        finally:
            if batch is not None:
                self.users.settle(batch)
        if existing is not None:
            return self.retry_outcome(existing, message)
        if batch is None:
            self.count_user(doc)
        return Outcome(doc["reply_xml"], reply, doc=doc)

    @staticmethod
    def retry_outcome(existing: dict[str, Any], message: Message | None = None) -> Outcome:
        """The answer to a retry of a stored message: the stored reply, or ``success`` when that
        reply went out as a customer-service message (it must not arrive twice)."""
        stored = existing.get("reply") or {}
        first = Reply.from_document(stored)
        xml = existing.get("reply_xml", "success")
        if existing.get("forgotten"):
            # Stored without its addressee (``service.privacy``): addressed to this retry's sender.
            xml = render_reply(first, message) if message is not None else "success"
        if existing.get("delivery") == "custom":
            xml = "success"
        return Outcome(xml, first, duplicate=True, doc=existing)

    def count_user(self, doc: dict[str, Any]) -> None:
        """Count a newly stored message in its user's record (batched, exactly once: see
        ``service.store.users``)."""
        if not doc.get("forgotten"):
            self.users.seen(doc["_id"], doc)

    async def _spool(self, doc: dict[str, Any], reply: Reply) -> Outcome:
        assert self.spool is not None  # noqa: S101 - callers check
        doc["spooled"] = True
        if await self.spool.append(doc):
            if self.metrics is not None:
                self.metrics.spooled.inc()
        elif self.metrics is not None:
            self.metrics.spool_dropped.inc()
        return Outcome(doc["reply_xml"], reply, doc=doc, spooled=True)

    async def save_unanswered(self, message: Message, *, mode: str, started: float) -> None:
        """Keep a message whose processing was cut short (shutdown): spooled, no reply."""
        reply = Reply.nothing()
        doc = self.document(message, reply, "success", mode=mode, started=started)
        doc["interrupted"] = True
        if self.spool is not None:
            await self._spool(doc, reply)

    async def replay_one(self, doc: dict[str, Any]) -> bool:
        """Insert one spooled document; True if it was new (and then counted for its user)."""
        with pymongo.timeout(max(self.db_timeout, 5.0)):
            new = await messages.insert_new(self.db, doc)
        if new or doc.get("insert_uncertain"):
            # An insert that "failed" may have landed: counting it is safe either way (a message
            # is counted once, by whichever batch claims it first).
            self.count_user(doc)
        return new

    async def mark_delivery(self, key: str, status: str, error: str = "") -> None:
        """Record how a late reply's customer-service message went (off the hot path)."""
        try:
            with pymongo.timeout(max(self.db_timeout, 5.0)):
                await messages.set_delivery(self.db, key, status, error)
        except PyMongoError as e:
            log.warning("could not record delivery %s of %s: %s", status, key, type(e).__name__)
