"""Fixtures for the dashboard tests: an owner account and a logged-in HTTP session.

``Session`` keeps cookies the way a browser does (Tornado's HTTP client does not), reads the XSRF
token from the page like the dashboard's scripts do, and opens the live WebSocket.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pymongo
import pytest
import tornado.websocket
from tornado.httpclient import AsyncHTTPClient, HTTPRequest, HTTPResponse

from service.embedded import free_port
from service.store import owners
from tests.conftest import AES_KEY, APP_ID, TOKEN
from tests.ops_helpers import wait_until

OWNER = "boss"
PASSWORD = "correct horse battery"

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
_XSRF_META = re.compile(r'<meta name="xsrf-token" content="([^"]+)"')


class Session:
    """A browser-like client: cookies, XSRF token, JSON helpers, the WebSocket."""

    def __init__(self, client: AsyncHTTPClient, base_url: str) -> None:
        self.client = client
        self.base_url = base_url
        self.cookies: dict[str, str] = {}
        self.xsrf = ""

    def _remember(self, response: HTTPResponse) -> None:
        for header in response.headers.get_list("Set-Cookie"):
            jar: SimpleCookie = SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                if (morsel["expires"] and "1970" in morsel["expires"]) or morsel.value == "":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        text = response.body.decode("utf-8", "replace") if response.body else ""
        match = _XSRF_META.search(text)
        if match:
            self.xsrf = match.group(1)

    def cookie_header(self) -> str:
        return "; ".join(f"{k}={v}" for k, v in self.cookies.items())

    async def fetch(
        self,
        path: str,
        *,
        method: str = "GET",
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> HTTPResponse:
        all_headers = dict(headers or {})
        if self.cookies:
            all_headers["Cookie"] = self.cookie_header()
        response = await self.client.fetch(
            self.base_url + path,
            method=method,
            body=body,
            headers=all_headers,
            follow_redirects=False,
            raise_error=False,
        )
        self._remember(response)
        return response

    async def get(self, path: str, **params: Any) -> HTTPResponse:
        query = ("?" + urlencode(params)) if params else ""
        return await self.fetch(path + query)

    async def get_json(self, path: str, **params: Any) -> Any:
        response = await self.get(path, **params)
        assert response.code == 200, (response.code, response.body[:300])
        return json.loads(response.body)

    async def post_form(
        self, path: str, data: dict[str, str], *, xsrf: bool = True
    ) -> HTTPResponse:
        fields = dict(data)
        if xsrf:
            if not self.xsrf:
                await self.get("/dashboard/login")
            fields["_xsrf"] = self.xsrf
        return await self.fetch(
            path,
            method="POST",
            body=urlencode(fields),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )

    async def post_json(self, path: str, data: Any = None, *, xsrf: bool = True) -> HTTPResponse:
        headers = {"Content-Type": "application/json"}
        if xsrf:
            headers["X-XSRFToken"] = self.xsrf
        return await self.fetch(path, method="POST", body=json.dumps(data or {}), headers=headers)

    async def login(self, name: str = OWNER, password: str = PASSWORD) -> HTTPResponse:
        await self.get("/dashboard/login")
        return await self.post_form("/dashboard/login", {"name": name, "password": password})

    async def websocket(self, query: str = "") -> tornado.websocket.WebSocketClientConnection:
        url = self.base_url.replace("http://", "ws://") + "/dashboard/ws" + query
        headers = {"Cookie": self.cookie_header()} if self.cookies else {}
        request = HTTPRequest(url, headers=headers)
        return await tornado.websocket.websocket_connect(request)


async def next_event(
    ws: tornado.websocket.WebSocketClientConnection, *, kind: str | None = None, timeout: float = 20
) -> dict[str, Any]:
    """The next event (of ``kind``) from the live socket; fails after ``timeout`` seconds."""
    import asyncio

    async def read() -> dict[str, Any]:
        while True:
            raw = await ws.read_message()
            assert raw is not None, "the socket closed"
            event = json.loads(raw)
            if kind is None or event["type"] == kind:
                return event

    return await asyncio.wait_for(read(), timeout)


@pytest.fixture
def owner(io_loop: Any, db: Any) -> dict[str, Any]:
    """The owner ``boss`` (password ``PASSWORD``)."""
    return io_loop.run_sync(lambda: owners.create(db, OWNER, PASSWORD))


@pytest.fixture
def session(http_client: AsyncHTTPClient, base_url: str, app: Any) -> Session:
    """An anonymous browser-like session against the test server."""
    return Session(http_client, base_url)


@pytest.fixture
def logged_in(io_loop: Any, session: Session, owner: dict[str, Any]) -> Session:
    """A session logged in as the owner."""
    response = io_loop.run_sync(session.login)
    assert response.code == 302, response.body
    return session


@pytest.fixture
def service_process(settings: Any, tmp_path: Path) -> Iterator[str]:
    """``python -m service serve`` as a subprocess on the test database; yields its base URL.

    Its log is copied to ``test-artifacts/service-process.log`` (``service-process.gw0.log`` on
    pytest-xdist's worker ``gw0``); the database is dropped after
    (with a synchronous client: a synchronous test holds no idle event-loop client).
    """
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TZ")},
        "WECHAT_TOKEN": TOKEN,
        "WECHAT_APP_ID": APP_ID,
        "WECHAT_ENCODING_AES_KEY": AES_KEY,
        "WECHAT_MESSAGE_MODE": "compat",  # the simulator sends all three modes
        "MONGODB_URI": settings.mongodb_uri,
        "MONGODB_DB": settings.mongodb_db,
        "COOKIE_SECRET": "browser-test-secret",
        "DATA_DIR": str(tmp_path / "data"),
        "PORT": str(port),
        "HOST": "127.0.0.1",
    }
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "serve"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:

        def login_page() -> bool:
            if process.poll() is not None:
                raise AssertionError("service exited:\n" + log_path.read_text())
            try:
                with urllib.request.urlopen(base + "/dashboard/login", timeout=2) as r:  # noqa: S310
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_until(login_page, timeout=60, every=0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log_text = log_path.read_text(errors="replace")
        ARTIFACTS.mkdir(exist_ok=True)
        # One file per pytest-xdist worker ("gw0", ...): two workers never write the same file.
        worker = os.environ.get("PYTEST_XDIST_WORKER", "")
        name = f"service-process.{worker}.log" if worker else "service-process.log"
        (ARTIFACTS / name).write_text(log_text)
        client: pymongo.MongoClient[dict[str, Any]]
        with pymongo.MongoClient(settings.mongodb_uri, serverSelectionTimeoutMS=5000) as client:
            client.drop_database(settings.mongodb_db)
