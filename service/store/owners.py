"""Dashboard owners (collection ``owners``) and the login throttle (collection ``login_failures``).

Passwords are hashed with argon2id (argon2-cffi) in a worker thread: a hash takes tens of
milliseconds of CPU and must not stall the event loop that answers WeChat.

The throttle keeps one document per login attempt and counter, keyed ``account:<name>`` and
``ip:<address>``, with a TTL index so MongoDB removes them after the window. An attempt is written
*before* its password is checked (``open_attempt``) and counted together with every other attempt
in the window; a refused attempt is taken back (``drop_attempt``), a failed one stays as the
failure, a successful one is taken back and clears the account. Because each attempt is stored
before it counts, the last of any set of attempts allowed through sees them all: at most
``MAX_FAILURES`` passwords are checked per counter and window, however many requests arrive at
once. Every process reads the same documents, so the limit holds across the processes supervisord
runs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import secrets
import unicodedata
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from . import Db

__all__ = [
    "COLLECTION",
    "FAILURES",
    "MAX_FAILURES",
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "PREFERENCES",
    "WINDOW",
    "OwnerError",
    "authenticate",
    "blocked_until",
    "check_password",
    "clear_failures",
    "count",
    "create",
    "drop_attempt",
    "ensure_indexes",
    "generate_password",
    "get",
    "normalize_name",
    "open_attempt",
    "password_problem",
    "preference",
    "record_failure",
    "set_password",
    "set_preference",
    "throttle_keys",
]

# What an owner can set once and have on every page (``preferences.<name>`` in the owner's
# document), with the value it has until they do.
PREFERENCES: dict[str, bool] = {"include_test": False}

log = logging.getLogger(__name__)

COLLECTION = "owners"
FAILURES = "login_failures"
MAX_FAILURES = 5
WINDOW = dt.timedelta(minutes=15)
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the account does not exist, so that a wrong name costs as much time
    as a wrong password and the response time does not tell which names exist.

    Made on first use, not at import: an argon2 hash holds 64 MiB for a moment, and a process
    that never sees a login (most of them answer WeChat only) should not carry that peak.
    """
    return _hasher.hash(secrets.token_urlsafe(16))


class OwnerError(ValueError):
    """A name or password that cannot be used; the message is meant for the person typing it."""


async def ensure_indexes(db: Db) -> None:
    failures = db[FAILURES]
    await failures.create_index([("key", ASCENDING), ("at", ASCENDING)], name="key_at")
    await failures.create_index("expires_at", expireAfterSeconds=0, name="expires_at_ttl")
    await failures.create_index("attempt", sparse=True, name="attempt")


def normalize_name(name: str) -> str:
    """Owner names are case-insensitive: ``Admin`` and ``admin`` are one account."""
    cleaned = unicodedata.normalize("NFKC", name).strip().lower()
    if not cleaned or len(cleaned) > 64:
        raise OwnerError("name must be 1 to 64 characters")
    if any(ch.isspace() or unicodedata.category(ch).startswith("C") for ch in cleaned):
        raise OwnerError("name must not contain spaces or control characters")
    return cleaned


def password_problem(password: str) -> str | None:
    """What is wrong with a new password (``"too_short"``, ``"too_long"``), or ``None``."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return "too_short"
    if len(password) > MAX_PASSWORD_LENGTH:
        return "too_long"
    return None


def check_password(password: str) -> None:
    problem = password_problem(password)
    if problem == "too_short":
        raise OwnerError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    if problem == "too_long":
        raise OwnerError(f"password must be at most {MAX_PASSWORD_LENGTH} characters")


def generate_password() -> str:
    return secrets.token_urlsafe(12)


async def _hash(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def _verify(hashed: str, password: str) -> bool:
    def verify() -> bool:
        try:
            return _hasher.verify(hashed, password)
        except VerifyMismatchError:
            return False
        except (InvalidHashError, VerificationError):
            log.warning("an owner's stored password hash is unreadable")
            return False

    return await asyncio.to_thread(verify)


async def get(db: Db, name: str) -> dict[str, Any] | None:
    try:
        key = normalize_name(name)
    except OwnerError:
        return None
    return await db[COLLECTION].find_one({"_id": key})


async def count(db: Db) -> int:
    return await db[COLLECTION].count_documents({})


async def create(
    db: Db, name: str, password: str, *, must_change_password: bool = False
) -> dict[str, Any]:
    """Create an owner; ``OwnerError`` if the name is taken or the password too short."""
    key = normalize_name(name)
    check_password(password)
    now = dt.datetime.now(dt.UTC)
    doc = {
        "_id": key,
        "password_hash": await _hash(password),
        "created_at": now,
        "password_changed_at": now,
        "must_change_password": must_change_password,
        # Part of the session cookie: changing the password bumps it and ends every other session.
        "session_version": 1,
        "last_login_at": None,
    }
    try:
        await db[COLLECTION].insert_one(doc)
    except DuplicateKeyError as e:
        raise OwnerError(f"owner {key!r} already exists") from e
    log.info("owner %s created", key)
    return doc


async def set_password(db: Db, name: str, password: str) -> int:
    """Set a new password; return the new session version (older sessions stop working)."""
    key = normalize_name(name)
    check_password(password)
    hashed = await _hash(password)
    result = await db[COLLECTION].update_one(
        {"_id": key},
        {
            "$set": {
                "password_hash": hashed,
                "password_changed_at": dt.datetime.now(dt.UTC),
                "must_change_password": False,
            },
            "$inc": {"session_version": 1},
        },
    )
    if result.matched_count == 0:
        raise OwnerError(f"owner {key!r} does not exist")
    doc = await db[COLLECTION].find_one({"_id": key}, {"session_version": 1})
    return int((doc or {}).get("session_version", 1))


def preference(owner: dict[str, Any] | None, name: str) -> bool:
    """An owner's preference ``name``, or its default."""
    value = ((owner or {}).get("preferences") or {}).get(name)
    return bool(value) if value is not None else PREFERENCES[name]


async def set_preference(db: Db, name: str, key: str, value: bool) -> None:
    """Remember ``key`` (one of ``PREFERENCES``) for the owner ``name``."""
    if key not in PREFERENCES:
        raise OwnerError(f"unknown preference {key!r}")
    await db[COLLECTION].update_one(
        {"_id": normalize_name(name)}, {"$set": {f"preferences.{key}": bool(value)}}
    )


async def authenticate(db: Db, name: str, password: str) -> dict[str, Any] | None:
    """The owner if ``password`` is right, else ``None`` (same cost whether the name exists)."""
    doc = await get(db, name)
    if doc is None or not password or len(password) > MAX_PASSWORD_LENGTH:
        dummy = await asyncio.to_thread(_dummy_hash)
        await _verify(dummy, password[:MAX_PASSWORD_LENGTH] or "-")
        return None
    if not await _verify(doc["password_hash"], password):
        return None
    updates: dict[str, Any] = {"last_login_at": dt.datetime.now(dt.UTC)}
    if _hasher.check_needs_rehash(doc["password_hash"]):
        updates["password_hash"] = await _hash(password)
    await db[COLLECTION].update_one({"_id": doc["_id"]}, {"$set": updates})
    doc.update(updates)
    return doc


# -- throttle -----------------------------------------------------------------------------------


def throttle_keys(name: str, ip: str) -> list[str]:
    """The counters a login attempt touches: its account and its client address."""
    try:
        account = normalize_name(name)
    except OwnerError:
        account = name.strip().lower()[:64] or "-"
    return [f"account:{account}", f"ip:{ip or '-'}"]


async def record_failure(db: Db, keys: list[str], now: dt.datetime | None = None) -> None:
    now = now or dt.datetime.now(dt.UTC)
    docs = [{"key": key, "at": now, "expires_at": now + WINDOW} for key in keys]
    await db[FAILURES].insert_many(docs, ordered=False)


async def open_attempt(
    db: Db, keys: list[str], now: dt.datetime | None = None
) -> tuple[str, dict[str, int]]:
    """Store a login attempt under every key, then count each key's attempts in the window.

    Returns the attempt's id (for ``drop_attempt``) and, per key, how many attempts the window
    holds now, this one included. Call it before checking the password: the count is what lets
    the password be checked at all.
    """
    now = now or dt.datetime.now(dt.UTC)
    attempt = secrets.token_hex(12)
    docs = [{"key": key, "at": now, "expires_at": now + WINDOW, "attempt": attempt} for key in keys]
    await db[FAILURES].insert_many(docs, ordered=False)
    cursor = await db[FAILURES].aggregate(
        [
            {"$match": {"key": {"$in": keys}, "at": {"$gt": now - WINDOW}}},
            {"$group": {"_id": "$key", "n": {"$sum": 1}}},
        ]
    )
    counts = {key: 0 for key in keys}
    async for row in cursor:
        counts[row["_id"]] = int(row["n"])
    return attempt, counts


async def drop_attempt(db: Db, attempt: str) -> None:
    """Take back an attempt stored by ``open_attempt`` (it was refused, or it succeeded)."""
    await db[FAILURES].delete_many({"attempt": attempt})


async def clear_failures(db: Db, key: str) -> None:
    await db[FAILURES].delete_many({"key": key})


async def blocked_until(
    db: Db, keys: list[str], now: dt.datetime | None = None
) -> dt.datetime | None:
    """When the next attempt is allowed, if any of ``keys`` has ``MAX_FAILURES`` in ``WINDOW``."""
    now = now or dt.datetime.now(dt.UTC)
    cursor = (
        db[FAILURES]
        .find({"key": {"$in": keys}, "at": {"$gt": now - WINDOW}}, {"key": 1, "at": 1})
        .sort("at", ASCENDING)
    )
    by_key: dict[str, list[dt.datetime]] = {}
    async for doc in cursor:
        by_key.setdefault(doc["key"], []).append(doc["at"])
    until: dt.datetime | None = None
    for times in by_key.values():
        if len(times) >= MAX_FAILURES:
            # Allowed again once fewer than MAX_FAILURES remain inside the window.
            lifted = times[len(times) - MAX_FAILURES] + WINDOW
            until = lifted if until is None else max(until, lifted)
    return until
