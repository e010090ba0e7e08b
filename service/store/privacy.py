"""Respondents' data: what we keep of one person, a copy of it, deleting it, and pseudonyms.

China's Personal Information Protection Law gives a respondent the right to know, copy and delete
what we keep. Everything personal is keyed by the openid: ``messages`` (``openid``),
``survey_sessions`` (``openid``), ``users`` (``_id``), and the pending deletion request here
(``privacy_requests``). The owner's actions are logged in ``privacy_log`` with the owner's name
and time and the person's pseudonym, never the content.

Pseudonyms: ``HMAC-SHA256(secret, openid)``, the secret generated once and kept in the database
(``wechat_api`` ``setting:pseudonym_secret``): the same person gets the same pseudonym in every
export, and nobody can reverse it without the secret.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import secrets
from typing import Any

from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from . import Db
from . import messages as messages_store
from . import surveys as surveys_store
from . import tokens as tokens_store
from . import users as users_store

__all__ = [
    "CONFIRM_WINDOW",
    "ask_to_delete",
    "confirm_delete",
    "delete_user",
    "ensure_indexes",
    "export_user",
    "log_action",
    "pseudonym_key",
    "pseudonymize",
]

REQUESTS = "privacy_requests"
LOG = "privacy_log"
PSEUDONYM_SECRET = "pseudonym_secret"  # noqa: S105 - the name of a setting, not a secret
# How long 「确认删除」 may follow 「删除我的数据」.
CONFIRM_WINDOW = dt.timedelta(minutes=5)


async def ensure_indexes(db: Db) -> None:
    # Expired requests are swept by the server (about once a minute); the code checks the time.
    await db[REQUESTS].create_index("expires_at", expireAfterSeconds=0, name="expires_at")
    await db[LOG].create_index([("at", ASCENDING)], name="at")


async def ask_to_delete(db: Db, openid: str, now: dt.datetime) -> None:
    """Record that ``openid`` asked to delete their data (「确认删除」 may follow in 5 minutes)."""
    await db[REQUESTS].replace_one(
        {"_id": openid}, {"asked_at": now, "expires_at": now + CONFIRM_WINDOW}, upsert=True
    )


async def confirm_delete(db: Db, openid: str, now: dt.datetime) -> bool:
    """Take the pending request of ``openid`` if it has not expired (once: a second confirmation,
    or one in another process, finds nothing)."""
    result = await db[REQUESTS].delete_one({"_id": openid, "expires_at": {"$gt": now}})
    return result.deleted_count == 1


async def delete_user(db: Db, openid: str) -> dict[str, int]:
    """Delete everything kept about ``openid``; the number of documents per collection.

    The survey charts and counts are computed from the sessions that remain, so they follow.
    """
    deleted = {
        "messages": (
            await db[messages_store.COLLECTION].delete_many({"openid": openid})
        ).deleted_count,
        "survey_sessions": (
            await db[surveys_store.COLLECTION].delete_many({"openid": openid})
        ).deleted_count,
        "users": (await db[users_store.COLLECTION].delete_many({"_id": openid})).deleted_count,
    }
    await db[REQUESTS].delete_many({"_id": openid})
    if deleted["survey_sessions"]:
        await surveys_store.note_deletion(db)
    return deleted


async def export_user(db: Db, openid: str) -> dict[str, Any]:
    """A copy of everything kept about ``openid`` (JSON-ready through ``bson.json_util``)."""
    user = await db[users_store.COLLECTION].find_one({"_id": openid}, {"counted": 0})
    messages = (
        await db[messages_store.COLLECTION]
        .find({"openid": openid}, {"uncounted": 0, "cb": 0, "signed": 0})
        .sort("received_at", ASCENDING)
        .to_list()
    )
    sessions = (
        await db[surveys_store.COLLECTION]
        .find({"openid": openid})
        .sort("started_at", ASCENDING)
        .to_list()
    )
    return {"openid": openid, "user": user, "messages": messages, "survey_sessions": sessions}


async def pseudonym_key(db: Db) -> bytes:
    """The secret behind every pseudonym, created on first use (one for all processes)."""
    doc = await tokens_store.get_setting(db, PSEUDONYM_SECRET)
    if doc is None:
        # Another process may make it first: then its secret is the one.
        with contextlib.suppress(DuplicateKeyError):
            await db[tokens_store.COLLECTION].insert_one(
                {
                    "_id": f"setting:{PSEUDONYM_SECRET}",
                    "value": secrets.token_hex(32),
                    "updated_at": dt.datetime.now(dt.UTC),
                }
            )
        doc = await tokens_store.get_setting(db, PSEUDONYM_SECRET)
    assert doc is not None  # noqa: S101 - inserted above
    return bytes.fromhex(str(doc["value"]))


def pseudonymize(key: bytes, openid: str) -> str:
    """A stable pseudonym for ``openid`` (``p-`` and 20 hex digits)."""
    return "p-" + hmac.new(key, openid.encode("utf-8"), hashlib.sha256).hexdigest()[:20]


async def log_action(db: Db, *, owner: str, action: str, person: str, counts: Any = None) -> None:
    """Record an owner's privacy action: who, when, what, whose (a pseudonym), how much."""
    entry: dict[str, Any] = {
        "at": dt.datetime.now(dt.UTC),
        "owner": owner,
        "action": action,
        "person": person,
    }
    if counts is not None:
        entry["counts"] = counts
    await db[LOG].insert_one(entry)
