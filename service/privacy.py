"""「删除我的数据」 in the chat: a respondent deletes what we keep about them (PIPL).

「删除我的数据」 (or ``delete my data``) asks for confirmation; 「确认删除」 (``confirm delete``)
within 5 minutes deletes the person's messages, survey sessions and user record, and says so. The
confirming message itself is stored without who sent it (a retry must still get its reply).
Checked before the survey engine, so it works in the middle of a survey too.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Callable
from typing import Any

from .store import Db
from .store import privacy as store
from .surveys.loader import normalize_keyword
from .wechat import Message, Reply

__all__ = [
    "ASK_TEXT",
    "DONE_TEXT",
    "NOTHING_PENDING_TEXT",
    "PrivacyDesk",
    "delete_for_owner",
    "export_for_owner",
    "pseudonymizer",
]

log = logging.getLogger(__name__)

DELETE_WORDS = frozenset(normalize_keyword(w) for w in ("删除我的数据", "delete my data"))
CONFIRM_WORDS = frozenset(normalize_keyword(w) for w in ("确认删除", "confirm delete"))
ASK_TEXT = (
    "确定要删除我们保存的你的全部数据吗（消息记录、问卷回答、用户信息）？删除后无法恢复。\n"
    "请在 5 分钟内回复「确认删除」。\n"
    'Reply "confirm delete" within 5 minutes to delete all your data (messages, answers, profile).'
)
DONE_TEXT = (
    "已删除我们保存的你的全部数据（{messages} 条消息、{sessions} 份问卷）。\n"
    "All your data has been deleted (messages: {messages}, surveys: {sessions})."
)
NOTHING_PENDING_TEXT = (
    "没有待确认的删除请求。要删除你的数据，请先回复「删除我的数据」。\n"
    'Nothing to confirm: send "delete my data" first.'
)


class PrivacyDesk:
    """The chat side of respondents' data rights; the bot asks it first about every text."""

    @staticmethod
    def claims(text: str) -> bool:
        folded = normalize_keyword(text)
        return folded in DELETE_WORDS or folded in CONFIRM_WORDS

    async def handle_text(self, db: Db, message: Message, text: str) -> Reply | None:
        folded = normalize_keyword(text)
        now = dt.datetime.now(dt.UTC)
        if folded in DELETE_WORDS:
            await store.ask_to_delete(db, message.openid, now)
            return Reply.text(ASK_TEXT)
        if folded not in CONFIRM_WORDS:
            return None
        if not await store.confirm_delete(db, message.openid, now):
            return Reply.text(NOTHING_PENDING_TEXT)
        counts = await store.delete_user(db, message.openid)
        log.info("deleted a respondent's data at their request: %s", counts)
        done = DONE_TEXT.format(messages=counts["messages"], sessions=counts["survey_sessions"])
        return Reply("text", Reply.text(done).content, forget=True)


async def pseudonymizer(db: Db) -> Callable[[str], str]:
    """``openid -> pseudonym`` for the exports' ``pseudonymous`` option: a keyed hash (HMAC-SHA256
    with the secret kept in the database), the same for one person in every export and every
    process, irreversible without that secret."""
    return functools.partial(store.pseudonymize, await store.pseudonym_key(db))


async def export_for_owner(db: Db, openid: str, owner: str) -> dict[str, Any] | None:
    """Everything kept about ``openid``, for the owner to hand over; ``None`` if nothing is.
    Logged with the owner's name and the person's pseudonym."""
    data = await store.export_user(db, openid)
    if data["user"] is None and not data["messages"] and not data["survey_sessions"]:
        return None
    person = store.pseudonymize(await store.pseudonym_key(db), openid)
    await store.log_action(db, owner=owner, action="export", person=person)
    log.info("owner %s exported the data of %s", owner, person)
    data["exported_at"] = dt.datetime.now(dt.UTC)
    return data


async def delete_for_owner(db: Db, openid: str, owner: str) -> dict[str, int]:
    """Delete everything kept about ``openid`` at the owner's request (the person asked them);
    logged with the owner's name, the time, the person's pseudonym and the counts, not the
    content."""
    person = store.pseudonymize(await store.pseudonym_key(db), openid)
    counts = await store.delete_user(db, openid)
    await store.log_action(db, owner=owner, action="delete", person=person, counts=counts)
    log.info("owner %s deleted the data of %s: %s", owner, person, counts)
    return counts
