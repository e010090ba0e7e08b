"""The dashboard owners' rules: logging in (with the throttle) and changing the password.

Handlers parse the form, call ``login`` or ``change_password`` and render what comes back; the
rules live here so they can be tested without HTTP. Storage is ``service.store.owners``.

The throttle counts before it verifies: ``owners.open_attempt`` stores the attempt and counts the
window in MongoDB, and only an attempt that finds at most ``owners.MAX_FAILURES`` (itself included)
under every one of its keys gets its password checked. A burst of concurrent guesses, in one
process or several, therefore checks at most ``MAX_FAILURES`` passwords per account and address in
any window, and a right password arriving after them is refused like the rest.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from typing import Any, Literal

from pymongo.asynchronous.database import AsyncDatabase

from service.inbox import user_hash
from service.store import owners

__all__ = [
    "LoginResult",
    "PasswordChanged",
    "PasswordRefused",
    "change_password",
    "login",
]

log = logging.getLogger(__name__)

Db = AsyncDatabase[dict[str, Any]]
LoginRefusal = Literal["", "invalid", "throttled"]
PasswordReason = Literal["wrong_current", "mismatch", "too_short", "too_long", "same"]

_PASSWORD_MESSAGES: dict[str, str] = {
    "wrong_current": "The current password is wrong.",
    "mismatch": "The two new passwords differ.",
    "too_short": f"The new password must have at least {owners.MIN_PASSWORD_LENGTH} characters.",
    "too_long": f"The new password must have at most {owners.MAX_PASSWORD_LENGTH} characters.",
    "same": "The new password must differ from the current one.",
}


@dataclasses.dataclass(frozen=True)
class LoginResult:
    """The owner when the login succeeded; else why not, and (throttled) when to try again.

    ``retry_after`` is whole seconds from the attempt until ``retry_at`` (at least 1), the value
    of the ``Retry-After`` header; 0 when there is nothing to wait for.
    """

    owner: dict[str, Any] | None = None
    refused: LoginRefusal = ""
    retry_at: dt.datetime | None = None
    retry_after: int = 0

    @property
    def ok(self) -> bool:
        return self.owner is not None


def _refused(reason: LoginRefusal, retry_at: dt.datetime | None, now: dt.datetime) -> LoginResult:
    if retry_at is None:
        return LoginResult(refused=reason)
    seconds = max(1, int((retry_at - now).total_seconds()))
    return LoginResult(refused=reason, retry_at=retry_at, retry_after=seconds)


async def login(
    db: Db, name: str, password: str, ip: str, *, now: dt.datetime | None = None
) -> LoginResult:
    """Check a login attempt from ``ip``; at most ``MAX_FAILURES`` per window are ever verified.

    A right password clears the account's failures. A refused attempt (over the limit) is not
    itself counted as a failure, so a blocked account opens again ``WINDOW`` after the failures
    that blocked it, however long someone keeps knocking.
    """
    now = now or dt.datetime.now(dt.UTC)
    name = name.strip()
    keys = owners.throttle_keys(name, ip)
    attempt, counts = await owners.open_attempt(db, keys, now)
    if max(counts.values()) > owners.MAX_FAILURES:
        await owners.drop_attempt(db, attempt)
        log.warning("login throttled for user %s", user_hash(name.lower()))
        # Refused because of attempts still being checked, not (yet) failures: try again soon.
        lifted = await owners.blocked_until(db, keys, now)
        return _refused("throttled", lifted or now, now)
    owner = await owners.authenticate(db, name, password) if name else None
    if owner is None:
        log.warning("failed login for user %s", user_hash(name.lower()))
        until = await owners.blocked_until(db, keys, now)
        return _refused("throttled" if until is not None else "invalid", until, now)
    await owners.clear_failures(db, keys[0])
    await owners.drop_attempt(db, attempt)
    log.info("owner %s logged in", owner["_id"])
    return LoginResult(owner=owner)


@dataclasses.dataclass(frozen=True)
class PasswordChanged:
    """The new session version: the cookie of the session that changed it must carry it."""

    session_version: int


class PasswordRefused(ValueError):
    """A password change that was not made; ``reason`` is a code the form shows translated."""

    def __init__(self, reason: PasswordReason) -> None:
        super().__init__(_PASSWORD_MESSAGES[reason])
        self.reason: PasswordReason = reason

    @property
    def message(self) -> str:
        """The reason in English, for the person who typed the password."""
        return str(self.args[0])


async def change_password(
    db: Db, name: str, current: str, new: str, *, repeat: str | None = None
) -> PasswordChanged:
    """Change ``name``'s password; ``PasswordRefused`` says why not.

    The checks, in the order the form reports them: the current password, the repetition (when
    given), the length rules of ``owners.password_problem``, and that something changes. Every
    other session of the owner ends (their session version is now stale).
    """
    if await owners.authenticate(db, name, current) is None:
        raise PasswordRefused("wrong_current")
    if repeat is not None and new != repeat:
        raise PasswordRefused("mismatch")
    problem = owners.password_problem(new)
    if problem == "too_short":
        raise PasswordRefused("too_short")
    if problem == "too_long":
        raise PasswordRefused("too_long")
    if new == current:
        raise PasswordRefused("same")
    version = await owners.set_password(db, name, new)
    log.info("owner %s changed the password", owners.normalize_name(name))
    return PasswordChanged(session_version=version)
