"""The reply budget: WeChat waits 5 seconds for an answer, then retries (three times in all).

``ReplyGuard.handle(message)`` is what ``/wechat`` awaits. It runs the inbox (bot, then store) as a
task and waits for it at most ``budget`` seconds (``REPLY_BUDGET``, 4 s by default) from the
request's arrival. If the reply is not ready by then, WeChat gets ``success`` at once; the task
carries on, stores the message marked ``delivery: "custom"`` and sends the reply as a
customer-service message through the WeChat API client it was built with.

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

One answer per message, settled exactly once, either by the task (the reply, a passive answer) or
by the budget timer (``success``, a late answer); both run as plain callbacks on the event loop, so
there is no race between "ready" and "too late". Each request waiting for it has its own future,
so a waiting request that is cancelled (shutdown) cannot cancel the answer the others wait for.

The hot path costs one task and one timer per message: the budget timer also arms the compute
limit (``compute_limit``, a bound on the bot that matters only once the reply is late), so a
message answered in time never schedules a second one.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
from typing import TYPE_CHECKING

from .inbox import BUSY_TEXT, Inbox, Outcome, user_hash
from .wechat import Message, Reply, render_reply

if TYPE_CHECKING:
    from .metrics import Metrics
    from .wechat_api import WeChatAPI

__all__ = ["ReplyGuard"]

log = logging.getLogger(__name__)


def _late() -> Outcome:
    return Outcome("success", Reply.nothing(), late=True)


class _Flight:
    """One message being processed in this process."""

    __slots__ = ("compute", "deadline", "key", "outcome", "started", "task", "timer", "waiters")

    def __init__(self, key: str, started: float, deadline: float) -> None:
        self.key = key
        self.started = started  # time.perf_counter() at the request's arrival
        self.deadline = deadline  # loop time at which the bot is given up (compute limit)
        self.outcome: Outcome | None = None  # the answer, once settled
        self.waiters: list[asyncio.Future[Outcome]] = []
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        # The compute-limit scope while the bot runs; armed by ``expire``.
        self.compute: asyncio.Timeout | None = None

    def settle(self, outcome: Outcome) -> None:
        """The answer (the first one wins); every request waiting for it gets it."""
        if self.outcome is not None:
            return
        self.outcome = outcome
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():  # a waiting request cancelled at shutdown
                waiter.set_result(outcome)

    def expire(self) -> None:
        """The budget ran out: ``success`` now, and the bot is bounded from here on."""
        self.settle(_late())
        if self.compute is not None:
            self.compute.reschedule(self.deadline)

    async def wait(self) -> Outcome:
        if self.outcome is not None:
            return self.outcome
        waiter: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        return await waiter


class ReplyGuard:
    def __init__(
        self,
        inbox: Inbox,
        *,
        budget: float,
        api: WeChatAPI | None = None,
        metrics: Metrics | None = None,
        compute_limit: float = 60.0,
        remember_for: float = 120.0,
        remember_max: int = 10_000,
        signature_window: float = 600.0,
    ) -> None:
        self.inbox = inbox
        self.budget = budget
        # Sends late replies as customer-service messages; None without AppID/AppSecret.
        self.api = api
        self.metrics = metrics
        self.compute_limit = compute_limit
        self.remember_for = remember_for
        self.remember_max = remember_max
        self._flights: dict[str, _Flight] = {}
        self._recent: collections.OrderedDict[str, tuple[float, Outcome]] = (
            collections.OrderedDict()
        )
        # The ``timestamp:nonce`` pairs of recent requests and the message each came with: a
        # reused signed URL with another message is refused here, before its bot runs, when it
        # reaches the same process (the stored document's unique ``signed`` decides across
        # processes). Kept as long as such a URL's timestamp is accepted (2 x SIGNATURE_MAX_AGE).
        self.signature_window = signature_window
        self._signed: collections.OrderedDict[str, tuple[float, str]] = collections.OrderedDict()

    @property
    def in_flight(self) -> int:
        """Messages being processed now (including late ones whose request already ended)."""
        return len(self._flights)

    async def handle(
        self,
        message: Message,
        *,
        mode: str = "plain",
        received: float | None = None,
        signed: str = "",
    ) -> Outcome:
        """The answer to one request carrying ``message`` (``received``: its ``perf_counter``;
        ``signed``: its ``timestamp:nonce``)."""
        now = time.monotonic()
        holder = self._bind(signed, message.key, now) if signed else message.key
        if holder != message.key:
            return Outcome("success", Reply.nothing(), signature_holder=holder)
        remembered = self._recent.get(message.key)
        if remembered is not None and remembered[0] > now:
            return remembered[1]
        flight = self._flights.get(message.key)
        if flight is None:
            return await self._launch(message, mode, received, signed).wait()
        # A retry while the first try is still being processed: same answer, no second run.
        outcome = await flight.wait()
        if outcome.late:
            return Outcome("success", Reply.nothing(), duplicate=True)
        return dataclasses.replace(outcome, duplicate=True)

    def _bind(self, signed: str, key: str, now: float) -> str:
        """Bind ``signed`` to ``key`` unless it is bound already; return the key it is bound to."""
        bound = self._signed.get(signed)
        if bound is not None and bound[0] > now:
            return bound[1]
        pairs = self._signed
        pairs[signed] = (now + self.signature_window, key)
        pairs.move_to_end(signed)
        while pairs and (len(pairs) > self.remember_max or next(iter(pairs.values()))[0] <= now):
            pairs.popitem(last=False)
        return key

    def _launch(
        self, message: Message, mode: str, received: float | None, signed: str = ""
    ) -> _Flight:
        loop = asyncio.get_running_loop()
        started = received if received is not None else time.perf_counter()
        flight = _Flight(message.key, started, loop.time() + self.compute_limit)
        remaining = self.budget - (time.perf_counter() - started)
        flight.timer = loop.call_later(max(remaining, 0.0), flight.expire)
        self._flights[message.key] = flight
        flight.task = loop.create_task(self._run(message, mode, flight, signed))
        return flight

    async def _run(self, message: Message, mode: str, flight: _Flight, signed: str) -> None:
        try:
            await self._process(message, mode, flight, signed)
        except Exception:  # boundary: a background task; the request still gets its answer
            log.exception("processing %s failed", flight.key)
        finally:
            self._landed(flight)

    async def _process(self, message: Message, mode: str, flight: _Flight, signed: str) -> None:
        stored = False
        try:
            # Unbounded while the reply can still be passive (the budget timer arms it later),
            # unless the compute limit is the shorter of the two.
            late = flight.outcome is not None or self.compute_limit <= self.budget
            try:
                async with asyncio.timeout_at(flight.deadline if late else None) as scope:
                    flight.compute = scope
                    reply = await self.inbox.compute(message)
            except TimeoutError:
                log.error(
                    "no reply to %s from %s after %.0f s; apologising",
                    message.kind,
                    user_hash(message.openid),
                    self.compute_limit,
                )
                reply = Reply.text(BUSY_TEXT)
            finally:
                flight.compute = None
            xml = render_reply(reply, message)
            delivery = "custom" if flight.outcome is not None else "passive"
            doc = self.inbox.document(
                message,
                reply,
                xml,
                mode=mode,
                started=flight.started,
                delivery=delivery,
                signed=signed,
            )
            outcome = await self.inbox.store(message, doc, reply)
            stored = True
        except asyncio.CancelledError:
            # Shutdown ran out of patience: keep the message (spooled, no reply) and move on.
            flight.settle(_late())
            if not stored:
                await self.inbox.save_unanswered(message, mode=mode, started=flight.started)
            raise
        if outcome.signature_holder:
            # Another process stored the pair's first message: that is the one it is bound to.
            self._signed[signed] = (
                time.monotonic() + self.signature_window,
                outcome.signature_holder,
            )
        if outcome.duplicate or outcome.reused_signature or flight.outcome is None:
            # In time (a passive reply), or an earlier try elsewhere stored it first: its answer
            # stands, and it is that try's business to deliver it.
            flight.settle(outcome)
            return
        await self._deliver_late(message, reply, outcome, flight)

    async def _deliver_late(
        self, message: Message, reply: Reply, outcome: Outcome, flight: _Flight
    ) -> None:
        if reply.kind == "success":
            return  # nothing to say, nothing to send
        user = user_hash(message.openid)
        waited = time.perf_counter() - flight.started
        api = self.api
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

    def _landed(self, flight: _Flight) -> None:
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]
        if flight.timer is not None:
            flight.timer.cancel()
        flight.settle(_late())  # whatever happened, nobody waits forever
        result = flight.outcome
        if result is not None and result.reused_signature:
            return  # not this message's answer: a later request with a fresh URL must run it
        if result is None or result.late:
            final = Outcome("success", Reply.nothing(), duplicate=True)
        else:
            final = Outcome(
                result.xml, result.reply, duplicate=True, late=False, spooled=result.spooled
            )
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
