"""``python -m service serve`` as a real process: it answers, and on SIGTERM it stops accepting,
finishes the request in progress, flushes, closes the database client, stops the embedded database
and exits 0. Once with the embedded database (no ``MONGODB_URI``), once with ``MONGODB_URI``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from service.config import ENV_VARS
from service.embedded import EmbeddedDatabase, free_port
from service.wechat_client import WeChatSide
from tests.conftest import TOKEN
from tests.ops_helpers import pids_of, wait_gone, wait_until

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


class Service:
    """One ``python -m service serve`` child process and its log."""

    def __init__(self, tmp_path: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / "service.log"
        clean = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
        clean.pop("WECHAT_SURVEY_CONFIG", None)
        clean.update(
            WECHAT_TOKEN=TOKEN,
            COOKIE_SECRET="shutdown-test-cookie-secret",
            HOST="127.0.0.1",
            PORT=str(self.port),
            PYTHONUNBUFFERED="1",
            **env,
        )
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service", "serve"],
                cwd=ROOT,
                env=clean,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_ready(self, timeout: float = 90.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"service exited early:\n{self.log}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=5) as r:  # noqa: S310
                    return dict(json.load(r))
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        raise AssertionError(f"service did not become healthy in {timeout} s:\n{self.log}")

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/healthz", timeout=5) as r:  # noqa: S310
            return dict(json.load(r))

    def wait_log(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not logged in {timeout} s:\n{self.log}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


@pytest.fixture
def services() -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for service in started:  # a failed test must not leave a service behind
        service.stop()


def post(url: str, signed: Any) -> bytes:
    request = urllib.request.Request(signed.url(url), data=signed.body, method="POST")  # noqa: S310
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        assert response.status == 200
        return bytes(response.read())


def send_half(url_port: int, signed: Any) -> tuple[socket.socket, bytes]:
    """Start a POST whose body is not complete yet: a request in progress."""
    path = signed.url("http://x")[len("http://x") :]
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/xml\r\n"
        f"Content-Length: {len(signed.body)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", url_port), timeout=30)
    half = len(signed.body) // 2
    sock.sendall(head + signed.body[:half])
    return sock, signed.body[half:]


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    return status, body


def terminate_mid_request(service: Service, wechat: WeChatSide, openid: str) -> bytes:
    """SIGTERM while a request is half sent; the request must still get its reply."""
    signed = wechat.sign(wechat.text(openid, "in flight"))
    sock, rest = send_half(service.port, signed)
    with sock:
        # The server has read the headers once /healthz counts that request (besides itself).
        wait_until(lambda: service.health()["requests_in_progress"] >= 2)
        service.process.send_signal(signal.SIGTERM)
        service.wait_log("shutting down")
        # No new connections once shutdown began...
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", service.port), timeout=5).close()
        # ...but the request in progress finishes.
        sock.sendall(rest)
        status, body = read_response(sock)
    assert status == 200
    return body


def test_embedded_database_service_answers_and_stops_cleanly(tmp_path, services):
    service = Service(tmp_path, DATA_DIR=str(tmp_path / "data"))
    services.append(service)
    health = service.wait_ready()
    assert health["database"]["ok"] is True
    storage = tmp_path / "data" / "secantus"
    children = pids_of(str(storage))
    assert len(children) == 1, "the embedded SecantusDB runs as a child process"

    wechat = WeChatSide(TOKEN)
    reply = wechat.open_reply(post(service.url, wechat.sign(wechat.text("user-sd", "hello"))))
    assert reply["MsgType"] == "text"
    assert reply["ToUserName"] == "user-sd"

    in_flight = wechat.open_reply(terminate_mid_request(service, wechat, "user-sd"))
    assert in_flight["ToUserName"] == "user-sd"

    assert service.process.wait(60) == 0
    assert wait_gone(children) == [], "the embedded database was not stopped"
    log = service.log
    assert "stopped" in log
    assert "Traceback" not in log

    # What it stored survived, user counters flushed at shutdown included.
    with EmbeddedDatabase(storage) as database:
        client: MongoClient[dict[str, Any]] = MongoClient(database.uri, tz_aware=True)
        try:
            db = client["wechat_survey"]
            assert db.messages.count_documents({"openid": "user-sd"}) == 2
            user = db.users.find_one({"_id": "user-sd"})
            assert user is not None and user["messages"] == 2
        finally:
            client.close()


def test_mongodb_uri_service_answers_and_stops_cleanly(tmp_path, services, mongo_uri):
    name = f"test_{uuid.uuid4().hex[:12]}"
    service = Service(
        tmp_path, DATA_DIR=str(tmp_path / "data"), MONGODB_URI=mongo_uri, MONGODB_DB=name
    )
    services.append(service)
    service.wait_ready()
    assert pids_of(str(tmp_path / "data")) == [], "no embedded database with MONGODB_URI"

    wechat = WeChatSide(TOKEN)
    reply = wechat.open_reply(post(service.url, wechat.sign(wechat.event("user-uri", "subscribe"))))
    assert reply["Content"].startswith("欢迎关注")
    terminate_mid_request(service, wechat, "user-uri")
    assert service.process.wait(60) == 0
    assert "Traceback" not in service.log

    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
    try:
        db = client[name]
        assert db.messages.count_documents({"openid": "user-uri"}) == 2
        user = db.users.find_one({"_id": "user-uri"})
        assert user is not None
        assert user["messages"] == 2
        assert user["subscribed"] is True
    finally:
        client.drop_database(name)
        client.close()
