"""The reply budget: WeChat waits 5 seconds for an answer, then retries (three times in all).

``ReplyGuard.handle(message)`` is what ``/wechat`` awaits. It runs the inbox (bot, then store) as a
task and waits for it at most ``budget`` seconds (``REPLY_BUDGET``, 4 s by default) from the
request's arrival. If the reply is not ready by then, WeChat gets ``success`` at once; the task
carries on, stores the message marked ``delivery: "custom"`` and sends the reply as a
customer-service message through ``app.settings["wechat_api"]``.

Exactly once:

- Within a process, a retry of a message still being processed joins the same task instead of
  running the bot again: it gets the same answer, or ``success`` once the budget has run out (the
  reply is then on its way as a customer-service message, never as a second passive one).
  Finished messages are remembered for a couple of minutes, so a later retry is answered from
  memory without a database round trip.
- Across processes, the unique message key decides: the late reply is stored *before* it is sent,
  and only the process whose insert created the document sends it. A retry that finds the stored
  document answers with its reply, or ``success`` when that reply went out as a customer-service
  message.

One future per message holds the answer. It is resolved exactly once, either by the task (the
reply, a passive answer) or by the budget timer (``success``, a late answer); both run as plain
callbacks on the event loop, so there is no race between "ready" and "too late".
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .inbox import BUSY_TEXT, Inbox, Outcome, user_hash
from .wechat import Message, Reply, render_reply

if TYPE_CHECKING:
    from .metrics import Metrics

__all__ = ["ReplyGuard"]

log = logging.getLogger(__name__)


def _late() -> Outcome:
    return Outcome("success", Reply.nothing(), late=True)


@dataclasses.dataclass(eq=False)
class _Flight:
    """One message being processed in this process."""

    key: str
    started: float  # time.perf_counter() at the request's arrival
    answer: asyncio.Future[Outcome]
    task: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle | None = None

    def expire(self) -> None:
        if not self.answer.done():
            self.answer.set_result(_late())


class ReplyGuard:
    def __init__(
        self,
        inbox: Inbox,
        *,
        budget: float,
        api: Callable[[], Any] | None = None,
        metrics: Metrics | None = None,
        compute_limit: float = 60.0,
        remember_for: float = 120.0,
        remember_max: int = 10_000,
    ) -> None:
        self.inbox = inbox
        self.budget = budget
        # Returns the WeChat API client (``service.wechat_api.WeChatAPI``) or None; looked up at
        # delivery time, so tests and the application may set it after construction.
        self.api = api
        self.metrics = metrics
        self.compute_limit = compute_limit
        self.remember_for = remember_for
        self.remember_max = remember_max
        self._flights: dict[str, _Flight] = {}
        self._recent: collections.OrderedDict[str, tuple[float, Outcome]] = (
            collections.OrderedDict()
        )

    @property
    def in_flight(self) -> int:
        """Messages being processed now (including late ones whose request already ended)."""
        return len(self._flights)

    async def handle(
        self, message: Message, *, mode: str = "plain", received: float | None = None
    ) -> Outcome:
        """The answer to one request carrying ``message`` (``received``: its ``perf_counter``)."""
        now = time.monotonic()
        remembered = self._recent.get(message.key)
        if remembered is not None and remembered[0] > now:
            return remembered[1]
        flight = self._flights.get(message.key)
        if flight is None:
            flight = self._launch(message, mode, received)
            return await asyncio.shield(flight.answer)
        # A retry while the first try is still being processed: same answer, no second run.
        outcome = await asyncio.shield(flight.answer)
        if outcome.late:
            return Outcome("success", Reply.nothing(), duplicate=True)
        return dataclasses.replace(outcome, duplicate=True)

    def _launch(self, message: Message, mode: str, received: float | None) -> _Flight:
        loop = asyncio.get_running_loop()
        started = received if received is not None else time.perf_counter()
        flight = _Flight(message.key, started, loop.create_future())
        remaining = self.budget - (time.perf_counter() - started)
        flight.timer = loop.call_later(max(remaining, 0.0), flight.expire)
        self._flights[message.key] = flight
        if self.inbox.replayer is not None:
            self.inbox.replayer.start()
        flight.task = loop.create_task(self._run(message, mode, flight))
        flight.task.add_done_callback(functools.partial(self._landed, flight))
        return flight

    async def _run(self, message: Message, mode: str, flight: _Flight) -> None:
        stored = False
        try:
            try:
                async with asyncio.timeout(self.compute_limit):
                    reply = await self.inbox.compute(message)
            except TimeoutError:
                log.error(
                    "no reply to %s from %s after %.0f s; apologising",
                    message.kind,
                    user_hash(message.openid),
                    self.compute_limit,
                )
                reply = Reply.text(BUSY_TEXT)
            xml = render_reply(reply, message)
            delivery = "custom" if flight.answer.done() else "passive"
            doc = self.inbox.document(
                message, reply, xml, mode=mode, started=flight.started, delivery=delivery
            )
            outcome = await self.inbox.store(message, doc, reply)
            stored = True
        except asyncio.CancelledError:
            # Shutdown ran out of patience: keep the message (spooled, no reply) and move on.
            flight.expire()
            if not stored:
                await self.inbox.save_unanswered(message, mode=mode, started=flight.started)
            raise
        if outcome.duplicate or not flight.answer.done():
            # In time (a passive reply), or an earlier try elsewhere stored it first: its answer
            # stands, and it is that try's business to deliver it.
            if not flight.answer.done():
                flight.answer.set_result(outcome)
            return
        await self._deliver_late(message, reply, outcome, flight)

    async def _deliver_late(
        self, message: Message, reply: Reply, outcome: Outcome, flight: _Flight
    ) -> None:
        if reply.kind == "success":
            return  # nothing to say, nothing to send
        user = user_hash(message.openid)
        waited = time.perf_counter() - flight.started
        api = self.api() if self.api is not None else None
        error = ""
        if api is None:
            status = "undeliverable"
            log.warning(
                "late reply to %s (%s, ready after %.1f s) cannot be delivered: customer-service "
                "messages need WECHAT_APP_ID and WECHAT_APP_SECRET",
                user,
                message.key,
                waited,
            )
        else:
            try:
                await api.send_reply(message.openid, reply)
            except Exception as e:  # boundary: a background delivery must not crash anything
                status, error = "failed", str(e)
                log.warning("late reply to %s (%s) could not be sent: %s", user, message.key, e)
            else:
                status = "sent"
                log.info(
                    "late reply to %s (%s) sent as a customer-service message after %.1f s",
                    user,
                    message.key,
                    waited,
                )
        if self.metrics is not None:
            self.metrics.late_replies.labels(result=status).inc()
        if not outcome.spooled:
            await self.inbox.mark_delivery(message.key, status, error)

    def _landed(self, flight: _Flight, task: asyncio.Task[None]) -> None:
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]
        if flight.timer is not None:
            flight.timer.cancel()
        if not task.cancelled() and task.exception() is not None:
            log.error("processing %s failed", flight.key, exc_info=task.exception())
        flight.expire()  # whatever happened, nobody waits forever
        result = flight.answer.result()
        if result.late:
            final = Outcome("success", Reply.nothing(), duplicate=True)
        else:
            final = dataclasses.replace(result, duplicate=True, doc=None)
        self._remember(flight.key, final)

    def _remember(self, key: str, outcome: Outcome) -> None:
        now = time.monotonic()
        recent = self._recent
        recent[key] = (now + self.remember_for, outcome)
        recent.move_to_end(key)
        while recent and (len(recent) > self.remember_max or next(iter(recent.values()))[0] <= now):
            recent.popitem(last=False)

    async def close(self, grace: float = 10.0) -> None:
        """Let messages in progress finish (late replies included), at most ``grace`` seconds;
        then cancel the rest, which keeps each of them in the spool without a reply."""
        tasks = [f.task for f in self._flights.values() if f.task is not None]
        if not tasks:
            return
        log.info("waiting up to %.0f s for %d message(s) in progress", grace, len(tasks))
        _, pending = await asyncio.wait(tasks, timeout=grace)
        if pending:
            log.warning("cancelling %d message(s) still in progress at shutdown", len(pending))
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=5.0)
