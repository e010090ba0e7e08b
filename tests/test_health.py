"""``/healthz`` (database ping, spool, version; 503 without a database) and ``/metrics``
(Prometheus text, bearer token or loopback only, the numbers the service promises)."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service import __version__
from service.app import make_app
from service.db import connect
from service.embedded import free_port
from tests.ops_helpers import close_app, serve_app


@pytest.fixture
def app_extra(db_counter: Any) -> dict[str, Any]:
    return {"db_counter": db_counter}  # as `serve` passes it: database round trips as a metric


def samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse the exposition text the way Prometheus does."""
    found = {}
    for family in text_string_to_metric_families(body.decode("utf-8")):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


@pytest.mark.gen_test
async def test_healthz_reports_database_spool_and_version(http_client, base_url, app):
    response = await http_client.fetch(f"{base_url}/healthz")
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    body = json.loads(response.body)
    assert body["status"] == "ok"
    assert body["version"] == __version__
    assert body["database"]["ok"] is True
    assert body["database"]["ping_ms"] >= 0
    assert body["database"]["spooling"] is False
    assert body["spool"] == {"backlog": 0, "dropped": 0}

    head = await http_client.fetch(f"{base_url}/healthz", method="HEAD")
    assert head.code == 200
    assert head.body == b""


@pytest.mark.gen_test
# PyMongo's async connect (pool_shared._async_create_connection) closes its socket on OSError and
# TimeoutError but not when cancelled: client.close() cancels the monitor's connect in flight.
@pytest.mark.leaks_sockets
async def test_healthz_is_503_when_the_database_is_unreachable(http_client, settings):
    # Nothing listens on this port: the ping fails (bounded), the process still answers.
    client, unreachable = connect(settings, f"mongodb://127.0.0.1:{free_port()}/?retryWrites=false")
    app = make_app(settings, db=unreachable)
    server, url = serve_app(app)
    try:
        response = await http_client.fetch(f"{url}/healthz", raise_error=False)
    finally:
        server.stop()
        await close_app(app)
        await client.close()
    assert response.code == 503
    body = json.loads(response.body)
    assert body["status"] == "unavailable"
    assert body["database"]["ok"] is False
    assert body["database"]["error"] == "ServerSelectionTimeoutError"
    assert body["version"] == __version__


@pytest.mark.gen_test
async def test_metrics_count_requests_messages_duplicates_and_round_trips(
    http_client, base_url, app, send, wechat
):
    xml = wechat.text("user-m", "hello")
    await send(xml)
    await send(xml)  # WeChat's retry
    await send(wechat.event("user-m", "subscribe"))
    forged = wechat.sign(wechat.text("user-m", "x"))
    forged.query["signature"] = "0" * 40
    await http_client.fetch(
        forged.url(base_url), method="POST", body=forged.body, raise_error=False
    )
    hub = app.settings["hub"]

    def listener(event: Any) -> None:  # a dashboard WebSocket, as the live hub sees it
        pass

    hub.subscribe(listener)

    response = await http_client.fetch(f"{base_url}/metrics")
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    found = samples(response.body)
    assert found[("wechat_survey_requests_total", (("outcome", "ok"),))] == 2
    assert found[("wechat_survey_requests_total", (("outcome", "duplicate"),))] == 1
    assert found[("wechat_survey_requests_total", (("outcome", "forbidden"),))] == 1
    assert found[("wechat_survey_messages_total", (("type", "text"),))] == 1
    assert found[("wechat_survey_messages_total", (("type", "event:subscribe"),))] == 1
    assert found[("wechat_survey_duplicates_absorbed_total", ())] == 1
    assert found[("wechat_survey_reply_latency_seconds_count", ())] == 3
    assert found[("wechat_survey_spool_backlog", ())] == 0
    assert found[("wechat_survey_database_up", ())] == 1
    assert found[("wechat_survey_websocket_clients", ())] == 1
    hub.unsubscribe(listener)
    assert found[("wechat_survey_database_commands_total", (("command", "insert"),))] >= 2
    assert ("wechat_survey_database_errors_total", (("operation", "insert"),)) not in found
    assert found[("wechat_survey_info", (("version", __version__),))] == 1


@pytest.mark.gen_test
async def test_metrics_registries_are_per_app(app, settings, db):
    other = make_app(settings, db=db)
    try:
        app.settings["metrics"].duplicates.inc()
        assert other.settings["metrics"].value("wechat_survey_duplicates_absorbed_total") == 0
    finally:
        await close_app(other)


@pytest.fixture
def token_app(io_loop: Any, settings: Any, db: Any) -> Any:
    application = make_app(settings.replace(metrics_token="s3cret-metrics"), db=db)
    yield application
    io_loop.run_sync(lambda: close_app(application))


@pytest.mark.gen_test
async def test_metrics_token_is_required_when_set(http_client, token_app):
    server, url = serve_app(token_app)
    try:
        missing = await http_client.fetch(f"{url}/metrics", raise_error=False)
        wrong = await http_client.fetch(
            f"{url}/metrics", headers={"Authorization": "Bearer nope"}, raise_error=False
        )
        right = await http_client.fetch(
            f"{url}/metrics", headers={"Authorization": "Bearer s3cret-metrics"}
        )
    finally:
        server.stop()
    assert missing.code == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert wrong.code == 401
    assert right.code == 200
    assert b"wechat_survey_requests_total" in right.body


@pytest.mark.gen_test
async def test_metrics_without_token_refuse_clients_relayed_by_a_proxy(http_client, app):
    # Behind nginx with xheaders: the peer is loopback (nginx), the client is not.
    server, url = serve_app(app, xheaders=True)
    try:
        relayed = await http_client.fetch(
            f"{url}/metrics", headers={"X-Real-IP": "203.0.113.9"}, raise_error=False
        )
        local = await http_client.fetch(f"{url}/metrics", headers={"X-Forwarded-For": "127.0.0.1"})
    finally:
        server.stop()
    assert relayed.code == 403
    assert local.code == 200


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent; this only picks a route
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") else address


@pytest.mark.gen_test
async def test_metrics_without_token_refuse_a_remote_peer_even_if_it_claims_loopback(
    http_client, app
):
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to connect from")
    server, url = serve_app(app, host=address, xheaders=True)
    try:
        spoofed = await http_client.fetch(
            f"{url}/metrics", headers={"X-Real-IP": "127.0.0.1"}, raise_error=False
        )
        health = await http_client.fetch(f"{url}/healthz")
    finally:
        server.stop()
    assert spoofed.code == 403  # the TCP peer decides, not a header
    assert health.code == 200  # health is public
