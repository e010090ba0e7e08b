"""Prometheus metrics, served at ``/metrics``: one registry per application.

Each ``make_app`` builds its own ``Metrics`` (never prometheus-client's global default registry), so
every test starts from zero and two applications in one process do not mix their numbers. Other
parts of the service reach it through ``app.settings["metrics"]``. Gauges that mirror state kept
elsewhere (spool backlog, WebSocket clients) read it at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from . import __version__
from .db import CommandCounter

__all__ = ["CONTENT_TYPE", "MESSAGE_TYPES", "REFUSAL_REASONS", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
PREFIX = "wechat_survey"
# Seconds; WeChat gives up after 5 s, the reply budget is 4 s by default.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 10.0)
# Label values of wechat_survey_messages_total; anything else is counted as "other" so a stream of
# unknown event names cannot blow up the number of time series.
MESSAGE_TYPES = frozenset(
    {
        "text", "image", "voice", "video", "shortvideo", "location", "link", "file",
        "event:subscribe", "event:unsubscribe", "event:scan", "event:location", "event:click",
        "event:view", "event:view_miniprogram", "event:templatesendjobfinish",
        "event:masssendjobfinish",
    }
)  # fmt: skip


# Label values of wechat_survey_refused_total: why /wechat refused a request before anything ran.
# Anything else is counted as "other" (bounded, like MESSAGE_TYPES).
REFUSAL_REASONS = (
    "missing-parameter",  # 400: no signature, timestamp, nonce (or echostr)
    "signature",  # 403: signature does not match the Token
    "bad-timestamp",  # 403: timestamp is not a number
    "stale-timestamp",  # 403: timestamp outside SIGNATURE_MAX_AGE of our clock (a replay?)
    "reused-signature",  # 403: this timestamp and nonce came with another message first
    "plaintext-refused",  # 403: a plaintext request in safe mode
    "encrypted-refused",  # 400: an encrypted request in plain mode (or without an AES key)
    "missing-encrypt",  # 400: encrypt_type=aes without Encrypt or msg_signature
    "msg-signature",  # 403: msg_signature does not match
    "decrypt",  # 400: Encrypt cannot be decrypted, or the AppID inside is not ours
    "malformed-xml",  # 400: empty, not UTF-8, not XML, root is not <xml>
    "forbidden-xml",  # 400: DTD, entity, external reference
    "xml-limits",  # 400: too deep, too many elements, too much text, odd element names
    "bad-field",  # 400: a missing or malformed field (CreateTime, MsgId, coordinates, ...)
    "too-large",  # 413: body over MAX_BODY_BYTES (Content-Length or chunked)
)


class _DatabaseCommands(Collector):
    """Database round trips, read from the client's ``CommandCounter`` at scrape time."""

    def __init__(self, counter: CommandCounter) -> None:
        self.counter = counter

    def collect(self) -> Iterator[Metric]:
        snapshot = self.counter.snapshot()
        commands = CounterMetricFamily(
            f"{PREFIX}_database_commands",
            "Commands (round trips) sent to the database, by command name.",
            labels=["command"],
        )
        for name, count in sorted(snapshot["by_command"].items()):
            commands.add_metric([name], count)
        yield commands
        failed = CounterMetricFamily(
            f"{PREFIX}_database_commands_failed", "Database commands that failed (any reason)."
        )
        failed.add_metric([], snapshot["failed"])
        yield failed


class Metrics:
    """The service's metrics; attributes are prometheus-client metrics bound to ``registry``."""

    def __init__(self, *, db_counter: CommandCounter | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            f"{PREFIX}_requests",
            "Requests to /wechat by outcome (ok, duplicate, late, spooled, handshake, "
            "bad-request, forbidden, too-large, error).",
            ["outcome"],
            registry=r,
        )
        self.refused = Counter(
            f"{PREFIX}_refused",
            "Requests to /wechat refused before anything ran, by reason (see REFUSAL_REASONS "
            "in service/metrics.py: signature, stale-timestamp, plaintext-refused, ...).",
            ["reason"],
            registry=r,
        )
        self.reply_latency = Histogram(
            f"{PREFIX}_reply_latency_seconds",
            "Time from a message's arrival to the end of our answer to WeChat.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.messages = Counter(
            f"{PREFIX}_messages",
            "New inbound messages (retries not counted) by type, events as event:<name>.",
            ["type"],
            registry=r,
        )
        self.duplicates = Counter(
            f"{PREFIX}_duplicates_absorbed",
            "WeChat retries answered without running the bot or storing again.",
            registry=r,
        )
        self.late_replies = Counter(
            f"{PREFIX}_late_replies",
            "Replies that missed the reply budget and went out as customer-service messages, "
            "by result (sent, failed, undeliverable).",
            ["result"],
            registry=r,
        )
        self.spool_backlog = Gauge(
            f"{PREFIX}_spool_backlog",
            "Messages in the local spool waiting to be written to the database.",
            registry=r,
        )
        self.spooled = Counter(
            f"{PREFIX}_spooled_messages",
            "Messages written to the local spool because the database was unavailable.",
            registry=r,
        )
        self.replayed = Counter(
            f"{PREFIX}_replayed_messages",
            "Spooled messages replayed into the database, by result (inserted, duplicate).",
            ["result"],
            registry=r,
        )
        self.spool_dropped = Counter(
            f"{PREFIX}_spool_dropped",
            "Messages that could not be spooled (spool full or disk error): lost.",
            registry=r,
        )
        self.database_errors = Counter(
            f"{PREFIX}_database_errors",
            "Database failures seen by the service, by operation.",
            ["operation"],
            registry=r,
        )
        self.database_up = Gauge(
            f"{PREFIX}_database_up",
            "1 while the database is considered reachable, 0 while messages are being spooled.",
            registry=r,
        )
        self.database_up.set(1)
        self.websocket_clients = Gauge(
            f"{PREFIX}_websocket_clients",
            "Dashboard WebSocket connections open in this process.",
            registry=r,
        )
        self.info = Gauge(
            f"{PREFIX}_info", "Constant 1, labelled with the version.", ["version"], registry=r
        )
        self.info.labels(version=__version__).set(1)
        if db_counter is not None:
            r.register(_DatabaseCommands(db_counter))
        # Children of the per-request counters by label value (``labels()`` costs a lock and a
        # tuple each time; these are on the hot path).
        self._requests: dict[str, Counter] = {}
        self._messages: dict[str, Counter] = {}
        self._refused: dict[str, Counter] = {}
        # Known label values start at 0, so rates and alerts work before the first event.
        for outcome in ("ok", "duplicate", "late", "spooled"):
            self.requests.labels(outcome=outcome)
        for reason in (*REFUSAL_REASONS, "other"):
            self._refused[reason] = self.refused.labels(reason=reason)
        for result in ("sent", "failed", "undeliverable"):
            self.late_replies.labels(result=result)
        for result in ("inserted", "duplicate"):
            self.replayed.labels(result=result)

    def track_spool(self, backlog: Callable[[], int]) -> None:
        """Read the spool backlog at scrape time."""
        self.spool_backlog.set_function(lambda: float(backlog()))

    def track_websockets(self, clients: Callable[[], int]) -> None:
        """Read the number of dashboard WebSocket clients at scrape time (the live hub's)."""
        self.websocket_clients.set_function(lambda: float(clients()))

    def request(self, outcome: str) -> None:
        """Count one /wechat request (the labelled child is looked up once per outcome)."""
        child = self._requests.get(outcome)
        if child is None:
            child = self._requests[outcome] = self.requests.labels(outcome=outcome)
        child.inc()

    def refuse(self, reason: str) -> None:
        """Count one refused /wechat request (``reason`` outside REFUSAL_REASONS is "other")."""
        self._refused.get(reason, self._refused["other"]).inc()

    def message(self, kind: str) -> None:
        label = kind if kind in MESSAGE_TYPES else "other"  # bounded: kinds come from outside
        child = self._messages.get(label)
        if child is None:
            child = self._messages[label] = self.messages.labels(type=label)
        child.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def value(self, name: str, **labels: Any) -> float:
        """One sample's current value (0 when absent); for tests and the health page."""
        found = self.registry.get_sample_value(name, {k: str(v) for k, v in labels.items()})
        return float(found) if found is not None else 0.0
