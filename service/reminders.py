"""Survey reminders and expiry: a background scan, one process at a time, off the hot path.

Per survey (its newest published version's ``remind_after``, ``expire_after``, ``on_expire``):

- A session answering (``in_progress``, not paused) and idle ``remind_after`` since the user's
  last step gets **one** customer-service message: the question it is at and 「回复「退出」不再
  提醒」 (``SurveyEngine.reminder_text``). Only while WeChat allows it (the user's last message to
  us, ``users.last_seen`` or the session's last step, within 48 hours, less a margin), never in
  ``QUIET_HOURS`` (the scan waits for the morning, when it is still allowed), never to test users,
  never to a user who paused (退出) or unsubscribed.
- A session in progress (paused or not) idle ``expire_after`` becomes ``expired``; the engine's
  next keyword starts over or resumes (``on_expire``).

Exactly once: every ``REMINDER_INTERVAL`` seconds each process tries to take the ``reminders``
lease (``service.store.tokens``, the access-token refresher's mechanism); the holder scans, in
batches through the ``state_survey_updated`` index, renewing the lease before each batch. A
reminder is claimed on the session by a conditional update (as read, answering, not reminded this
attempt) before it is sent, so a second process, or this one after a restart, never sends it
again. What became of it is written after the send: ``sent``; ``uncertain`` (the answer was lost
after sending: perhaps delivered, never resent; the API client's rule); ``failed`` with WeChat's
``errcode`` (45015 outside the 48-hour window, 43004 unsubscribed, 40003 bad openid, ...: not
retried); a temporary failure that never reached WeChat gives the claim back, tried again at the
next scans up to ``MAX_TRIES`` times. A claim left ``sending`` by a process that died mid-send
stays so: perhaps delivered, never resent.

These writes leave the session's version and ``updated_at`` alone, so a user's own step never
loses a race to a reminder; expiry moves the version on (an in-flight step reads again).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import os
import secrets
import socket
from typing import TYPE_CHECKING, Any

from pymongo.errors import PyMongoError

from .clock import now as _now
from .config import in_window
from .store import TEST_OPENID_PREFIX, Db, is_outage, tokens
from .store import surveys as store
from .store import users as users_store
from .wechat_api import WeChatAPIError

if TYPE_CHECKING:
    from .surveys import SurveyEngine
    from .wechat_api import WeChatAPI

__all__ = ["BATCH", "LEASE", "MAX_TRIES", "WINDOW", "Reminders", "ScanResult"]

log = logging.getLogger(__name__)

LEASE = "reminders"
BATCH = 100  # sessions read (and reminded) per round trip of the scan
CLOSE_WAIT = 5.0  # seconds close() lets the reminder being sent finish
MAX_TRIES = 3  # temporary failures (never reached WeChat) before a reminder is given up
# WeChat's customer-service window, less a margin so a send never races its end.
WINDOW = dt.timedelta(hours=48) - dt.timedelta(minutes=10)


@dataclasses.dataclass
class ScanResult:
    """What one scan did (tests, the log)."""

    sent: int = 0
    failed: int = 0
    skipped: int = 0
    expired: int = 0
    quiet: bool = False
    leased: bool = False


class Reminders:
    """The scan's loop (``start``/``close``) and one scan (``scan``), for one process."""

    def __init__(
        self,
        db: Db,
        engine: SurveyEngine,
        api: WeChatAPI | None,
        *,
        interval: float,
        quiet: tuple[dt.time, dt.time] | None,
        tz: dt.tzinfo,
        batch: int = BATCH,
        test_prefix: str = TEST_OPENID_PREFIX,
    ) -> None:
        self.db = db
        self.engine = engine
        self.api = api  # None without AppID/AppSecret: expiry only, no reminders
        self.interval = interval
        self.quiet = quiet
        self.tz = tz
        self.batch = batch
        self.test_prefix = test_prefix
        # Outlives a scan's batch (each renews it); a holder that died blocks no longer than this.
        self.lease_ttl = 2 * interval + 60
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.scans = 0  # scans this process ran (held the lease)
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def start(self) -> None:
        if self._task is None and not self._stop.is_set():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Stop after the reminder being sent (bounded by ``CLOSE_WAIT``), give the lease back."""
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), CLOSE_WAIT)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        with contextlib.suppress(PyMongoError):
            await tokens.release_lease(self.db, LEASE, self.holder)

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.scan()
            except PyMongoError as e:
                log.warning(
                    "reminder scan failed (%s); next try in %.0f s",
                    type(e).__name__,
                    self.interval,
                    exc_info=not is_outage(e),
                )
            except Exception:  # boundary: a background task must not die of one bad session
                log.exception("reminder scan failed; next try in %.0f s", self.interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)

    async def scan(self) -> ScanResult:
        """One scan if this process holds (or takes) the lease: expire, then remind."""
        result = ScanResult()
        if not await tokens.acquire_lease(self.db, LEASE, self.holder, self.lease_ttl):
            return result
        result.leased = True
        self.scans += 1
        now = _now()
        surveys = list(self.engine.surveys.values())
        for survey in surveys:
            if survey.expire_after is not None:
                idle = now - dt.timedelta(seconds=survey.expire_after)
                result.expired += await store.expire_idle(self.db, survey.id, idle, now)
        if self.api is not None and self.quiet is not None:
            result.quiet = in_window(
                self.quiet, now.astimezone(self.tz).time().replace(tzinfo=None)
            )
        if self.api is not None and not result.quiet:
            for survey in surveys:
                if survey.remind_after is None or survey.availability(now) != "open":
                    continue
                await self._remind(survey.id, survey.remind_after, result)
        if result.sent or result.failed or result.expired:
            log.info(
                "reminders: %d sent, %d refused, %d skipped; %d session(s) expired",
                result.sent,
                result.failed,
                result.skipped,
                result.expired,
            )
        return result

    async def _remind(self, survey_id: str, remind_after: int, result: ScanResult) -> None:
        while not self._stop.is_set():
            now = _now()
            idle = now - dt.timedelta(seconds=remind_after)
            docs = await store.remind_candidates(self.db, survey_id, idle, self.batch)
            if not docs:
                return
            # The scan may outlast the lease: renew it; lost to another process: stop here.
            if not await tokens.acquire_lease(self.db, LEASE, self.holder, self.lease_ttl):
                return
            reach = await users_store.reach(self.db, [doc["openid"] for doc in docs])
            progress = False
            for doc in docs:
                if self._stop.is_set():
                    return
                progress = await self._one(doc, reach.get(doc["openid"]), now, result) or progress
            if not progress or len(docs) < self.batch:
                return

    async def _one(
        self,
        doc: dict[str, Any],
        user: dict[str, Any] | None,
        now: dt.datetime,
        result: ScanResult,
    ) -> bool:
        """Remind one session (or set it aside for good); True when its reminder is settled."""
        if int(doc.get("reminder_retries") or 0) >= MAX_TRIES:
            return await self._skip(doc, "retries", now, result)
        openid = str(doc["openid"])
        if openid.startswith(self.test_prefix) or (user or {}).get("test_user"):
            return await self._skip(doc, "test", now, result)
        if (user or {}).get("subscribed") is False:
            return await self._skip(doc, "unsubscribed", now, result)
        moments = [m for m in ((user or {}).get("last_seen"), doc.get("updated_at")) if m]
        last = max(_aware(m) for m in moments) if moments else None
        if last is None or now - last > WINDOW:
            return await self._skip(doc, "window", now, result)
        text = self.engine.reminder_text(doc)
        if text is None:
            return await self._skip(doc, "gone", now, result)
        attempt = int(doc.get("attempt", 1))
        claim = {"status": "sending", "at": now, "attempt": attempt, "q": doc.get("current")}
        if not await store.claim_reminder(self.db, doc, claim):
            return False  # the user moved on meanwhile, or another process claimed it
        assert self.api is not None  # noqa: S101 - _remind runs only with an API client
        try:
            await self.api.send_text(openid, text)
        except WeChatAPIError as e:
            if e.retryable:
                log.warning("reminder to a user not sent (%s); will try again", e)
                await store.release_reminder(self.db, doc["_id"])
                return True
            status = "uncertain" if e.uncertain else "failed"
            outcome: dict[str, Any] = {"status": status, "done_at": _now()}
            if e.errcode is not None:
                outcome["errcode"] = e.errcode
            await store.settle_reminder(self.db, doc["_id"], outcome)
            if status == "failed":
                result.failed += 1
                log.info("reminder refused by WeChat (errcode %s); not retried", e.errcode)
            else:
                result.sent += 1
                log.warning("%s", e)
            return True
        await store.settle_reminder(self.db, doc["_id"], {"status": "sent", "done_at": _now()})
        result.sent += 1
        return True

    async def _skip(
        self, doc: dict[str, Any], reason: str, now: dt.datetime, result: ScanResult
    ) -> bool:
        """No reminder for this attempt, for good (``reason``), so no scan reads it again."""
        fields = {"status": "skipped", "reason": reason, "at": now}
        fields["attempt"] = int(doc.get("attempt", 1))
        if await store.claim_reminder(self.db, doc, fields):
            result.skipped += 1
            return True
        return False


def _aware(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)
