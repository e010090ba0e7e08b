"""The composition root: everything one process holds, built once, closed once.

``Process`` builds every collaborator of a process in dependency order, each handed what it needs
at construction (nothing is patched in afterwards), and ``close()`` tears them down in the reverse
order, once, each step bounded:

=====================  ==========================================================================
built (in this order)  closed (in this order, by ``close()``)
=====================  ==========================================================================
metrics                1. reminders: the reminder being sent is settled, the scan's lease
database state            given back
spool                  2. guard: messages in progress finish, late replies are sent
users (counters)       3. hub: the live feed's watcher stops
WeChat API client      4. surveys, then reply rules: their definitions' watchers stop
image reply            5. replayer: last replay if the database is up; the spool file is closed
surveys, replies, bot  6. users: the counters are flushed (those of step 5's replays included)
inbox, replayer        7. image reply: its background refresh stops
guard, hub, crypto     8. WeChat API client: its HTTP connections close
reminders              then ``Process.open`` (``service.db.open_database``) closes the
                       database client and stops the embedded database it started
=====================  ==========================================================================

``Process.open(settings)`` (``serve``) also starts the embedded database when ``MONGODB_URI`` is
unset and connects (``service.db.open_database``, as the command-line tools do), and creates the
indexes (tolerating an outage if asked). Tests and developers
build one on a database they already have: ``Process(settings, db=db)``; ``service.app.make_app``
does exactly that and returns the Tornado application of it (``app.settings["process"]``).

Only this module and ``service.app`` / ``service.server`` import ``handlers`` and ``dashboard``
(see ARCHITECTURE.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from .bot import Bot, SurveyHook
from .config import Settings
from .db import CommandCounter, ensure_indexes, open_database
from .dbstate import DatabaseState
from .guard import ReplyGuard
from .image_reply import ImageReply
from .inbox import Inbox
from .inflight import RequestCount
from .live import Hub
from .metrics import Metrics
from .reminders import Reminders
from .replies import ReplyRules
from .spool import Replayer, Spool, is_outage
from .store.users import UserStats
from .survey_index import SurveyIndex
from .surveys import SurveyEngine, live_engine
from .wechat import Crypto
from .wechat_api import WeChatAPI, make_api

__all__ = ["CLOSE_STEP_TIMEOUT", "FLIGHT_TIMEOUT", "Process"]

log = logging.getLogger(__name__)

FLIGHT_TIMEOUT = 10.0  # seconds for messages in progress, late customer-service replies included
CLOSE_STEP_TIMEOUT = 10.0  # seconds for any other step of close()

_UNSET: Any = object()


class Process:
    """The collaborators of one process (see the module docstring for the order)."""

    def __init__(
        self,
        settings: Settings,
        *,
        db: AsyncDatabase[dict[str, Any]],
        counter: CommandCounter | None = None,
        surveys: SurveyHook | None = None,
        wechat_api: WeChatAPI | None = _UNSET,
        indexes_pending: BaseException | None = None,
    ) -> None:
        """``surveys``/``wechat_api`` replace the ones built from the settings (tests).
        ``indexes_pending``: the outage that kept the indexes from being created at start-up;
        they are once the database is back."""
        self.settings = settings
        self.db = db
        self.counter = counter  # the client's command listener: database round trips
        self.metrics = Metrics(db_counter=counter)
        self.database = DatabaseState(metrics=self.metrics)
        self.spool = (
            Spool(settings.data_dir / "spool", max_bytes=settings.spool_max_bytes)
            if settings.store_messages
            else None
        )
        spool = self.spool
        self.metrics.track_spool(lambda: spool.backlog if spool is not None else 0)
        self.users = UserStats(db, recover_after=settings.user_count_recovery)
        # None without AppID/AppSecret: no late replies as customer-service messages then.
        self.wechat_api = make_api(settings, db) if wechat_api is _UNSET else wechat_api
        # The published surveys, followed live; an invalid survey file (shipped or SURVEYS_DIR,
        # imported at the first load) raises SurveyLoadError here, listing every mistake.
        self.surveys = surveys or live_engine(settings, db)
        # Keeps the image reply in step with `python -m service media upload`.
        self.image_reply = ImageReply(db, settings.image_media_id)
        # `serve --no-store` (benchmark only) keeps the database off the message path entirely:
        # survey state lives in the database, so the bot answers without surveys there.
        # The owner's reply rules and special replies, followed live (the surveys' watcher).
        self.replies = ReplyRules(
            db, surveys=self.surveys if isinstance(self.surveys, SurveyEngine) else None
        )
        self.bot = Bot(
            db,
            surveys=self.surveys if settings.store_messages else None,
            replies=self.replies if settings.store_messages else None,
            image=self.image_reply,
            tz=settings.tzinfo,
        )
        self.inbox = Inbox(
            db,
            self.bot,
            self.users,
            database=self.database,
            store_messages=settings.store_messages,
            spool=self.spool,
            metrics=self.metrics,
            db_timeout=max(0.75 * settings.reply_budget, 1.0),
        )
        self.replayer = (
            Replayer(
                db,
                self.spool,
                self.inbox.replay_one,
                state=self.database,
                metrics=self.metrics,
                prepare=functools.partial(ensure_indexes, db) if indexes_pending else None,
            )
            if self.spool is not None
            else None
        )
        self.guard = ReplyGuard(
            self.inbox,
            budget=settings.reply_budget,
            api=self.wechat_api,
            metrics=self.metrics,
            signature_window=2.0 * settings.signature_max_age,
        )
        self.hub = Hub(db)
        # The dashboard's survey numbers, counted in memory (read on demand, nothing to close).
        self.survey_index = SurveyIndex()
        hub = self.hub
        self.metrics.track_websockets(lambda: int(hub.subscribers))
        self.crypto = (
            Crypto(settings.wechat_token, settings.encoding_aes_key, settings.app_id)
            if settings.aes_enabled
            else None
        )
        # Survey reminders and expiry: a background scan, one process at a time (a lease).
        self.reminders = (
            Reminders(
                db,
                self.surveys,
                self.wechat_api,
                interval=settings.reminder_interval,
                quiet=settings.quiet_window,
                tz=settings.tzinfo,
            )
            if settings.store_messages and isinstance(self.surveys, SurveyEngine)
            else None
        )
        # HTTP requests in progress: `serve` counts them, shutdown and /healthz read the count.
        self.requests = RequestCount()
        if indexes_pending is not None:
            self.database.failed(indexes_pending, "start-up")
        self._closing: asyncio.Task[None] | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        settings: Settings,
        *,
        attach: bool = False,
        tolerate_db_outage: bool = False,
        **parts: Any,
    ) -> AsyncIterator[Process]:
        """Start the embedded database if needed, connect, create the indexes, build, ``start()``;
        ``close()`` on the way out.

        ``attach``: use the embedded database of a ``serve`` already running on ``DATA_DIR``
        (command-line tools); ``serve`` owns its own. ``tolerate_db_outage`` (``serve``): an
        unreachable database does not stop the start-up; the service answers and spools.
        """
        counter = parts.pop("counter", None) or CommandCounter()
        # open_database starts (or attaches to) the embedded database and connects; it closes
        # the client and stops the embedded database after this process has been closed.
        async with open_database(settings, attach=attach, counter=counter, indexes=False) as (
            _client,
            db,
        ):
            outage: PyMongoError | None = None
            try:
                await ensure_indexes(db)
            except PyMongoError as e:
                if not (tolerate_db_outage and is_outage(e)):
                    raise
                outage = e
                log.warning(
                    "database unavailable at start-up (%s); answering anyway and spooling "
                    "messages until it is back",
                    type(e).__name__,
                )
            process = cls(settings, db=db, counter=counter, indexes_pending=outage, **parts)
            try:
                await process.start()
                yield process
            finally:
                await process.close()

    async def start(self) -> None:
        """Start the background work: the spool replayer (it first replays what an earlier run
        left behind), the sweep that counts messages an earlier process stored but did not count,
        the survey definitions' watcher (it imports the survey files first) and the reminder
        scan. The live hub
        starts on first use; the survey watcher too when the process is not started (tests)."""
        if self.replayer is not None:
            self.replayer.start()
        if self.settings.store_messages:
            self.users.start()
        surveys = self.surveys
        if self.settings.store_messages and isinstance(surveys, SurveyEngine) and surveys.catalog:
            surveys.catalog.start()  # (`--no-store` answers without surveys: nothing to follow)
        if self.settings.store_messages:
            self.replies.start()
        if self.reminders is not None:
            self.reminders.start()

    async def close(self) -> None:
        """Tear everything down in the reverse order of construction, once (a second call waits
        for the first), each step bounded and logged if it fails."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        steps: list[tuple[str, Callable[[], Awaitable[Any]], float]] = []
        if self.reminders is not None:
            steps.append(("reminders", self.reminders.close, CLOSE_STEP_TIMEOUT))
        steps += [
            ("messages in progress", lambda: self.guard.close(FLIGHT_TIMEOUT), FLIGHT_TIMEOUT + 6),
            ("live feed", self.hub.stop, CLOSE_STEP_TIMEOUT),
        ]
        if isinstance(self.surveys, SurveyEngine):
            steps.append(("survey definitions", self.surveys.close, CLOSE_STEP_TIMEOUT))
        steps.append(("reply rules", self.replies.close, CLOSE_STEP_TIMEOUT))
        if self.replayer is not None:
            steps.append(("spool", self.replayer.close, CLOSE_STEP_TIMEOUT))
        steps.append(("user counters", self.users.close, CLOSE_STEP_TIMEOUT))
        steps.append(("image reply", self.image_reply.close, CLOSE_STEP_TIMEOUT))
        if self.wechat_api is not None:
            steps.append(("WeChat API client", self.wechat_api.close, CLOSE_STEP_TIMEOUT))
        for name, step, limit in steps:
            try:
                await asyncio.wait_for(step(), limit)
            except TimeoutError:
                log.error("shutdown: %s did not finish within %.0f s; going on", name, limit)
            except Exception:  # boundary: one failing step must not keep the others from running
                log.exception("shutdown: closing the %s failed; going on", name)
