"""No 500s, ever: every dashboard and public route, fed hostile paths, queries and forms.

GET and POST on every route of ``dashboard.routes`` and ``handlers.health.routes`` (and the
static files), anonymous and logged in, with NUL, CR/LF, 10,000 characters and invalid UTF-8
percent-escapes in path segments, query values and form fields. Any 5xx fails, and so does any
error logged with a traceback (the conftest fixture covers ``tornado.application``; this module
checks every logger). ``/wechat`` is hardened and tested elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import Counter
from typing import Any

import pytest
from tornado.httpclient import HTTPResponse

import dashboard
import handlers.health
from tests.dashboard_fixtures import Session

# Percent-encoded, as they travel in a URL or a form body.
HOSTILE = [
    "%00",
    "a%00b",
    "%0d%0aX-Injected:%201",
    "%ff%fe",
    "%c0%af",
    "..%2f..%2fetc%2fpasswd",
    "%3Cscript%3E",
    "a" * 10_000,
]
# The same kinds as JSON values: the JSON body is parsed, not percent-decoded.
HOSTILE_JSON: list[bytes] = [
    json.dumps({"user": "\x00", "content": "\x00", "type": "\r\n"}).encode(),
    json.dumps({"user": "a" * 10_000, "content": "a" * 10_000}).encode(),
    b'{"user": "\xff\xfe", "content": "\xff"}',
    b"\xff\xfe",
    b"[]",
]
FIELDS = ["name", "password", "next", "current", "new", "repeat", "user", "content", "type"]
QUERY = [
    "next",
    "lang",
    "q",
    "user",
    "type",
    "test",
    "page",
    "per_page",
    "since",
    "until",
    "before",
    "limit",
    "minutes",
    "subscribed",
    "finished",
]
STATIC = [
    "/static/js/common.js%00.png",
    "/static/%00",
    "/static/js/%ff%fe.js",
    "/static/..%2f..%2fservice%2fconfig.py",
    "/static/" + "a" * 10_000,
    "/static/js/common.js?v=%00%0d%0a",
]
_GROUP = re.compile(r"\([^)]*\)")


def _sample(pattern: str, segment: str) -> str:
    path = _GROUP.sub(segment, pattern.rstrip("$"))
    return path.replace("/?", "/").replace("\\.", ".").replace("\\", "")


def _paths() -> list[tuple[str, bool]]:
    """(path, is the plain sample) for every route; routes with a parameter get hostile ones."""
    found: list[tuple[str, bool]] = []
    for spec in [*dashboard.routes, *handlers.health.routes]:
        pattern = spec[0]
        if pattern.startswith("/wechat"):
            continue
        found.append((_sample(pattern, "x"), True))
        if _GROUP.search(pattern):
            found += [(_sample(pattern, value), False) for value in HOSTILE]
        else:
            found += [(_sample(pattern, "") + value, False) for value in HOSTILE[:4]]
    return found


@pytest.fixture
def errors_logged(caplog: pytest.LogCaptureFixture) -> Any:
    def found() -> list[str]:
        return [
            f"{r.name}: {r.getMessage()}"
            for r in caplog.get_records("call")
            if r.levelno >= logging.ERROR or r.exc_info
        ]

    return found


async def _walk(session: Session, cookie: str) -> tuple[list[str], Counter[int]]:
    """Every request of the walk; returns the ones answered with a 5xx, and all status codes."""
    headers = {"Cookie": cookie} if cookie else {}
    form_headers = {**headers, "Content-Type": "application/x-www-form-urlencoded"}
    json_headers = {**headers, "Content-Type": "application/json", "X-XSRFToken": session.xsrf}
    requests: list[tuple[str, str, bytes | None, dict[str, str]]] = []
    for path, plain in _paths():
        requests.append(("GET", path, None, headers))
        requests.append(("POST", path, f"_xsrf={session.xsrf}".encode(), form_headers))
        if not plain:
            continue
        for value in HOSTILE:
            # Several names per request, but under Tornado's 64 KiB header limit (a longer
            # request line is refused by closing the connection: no response at all).
            per_request = max(1, 40_000 // len(value))
            for i in range(0, len(QUERY), per_request):
                query = "&".join(f"{name}={value}" for name in QUERY[i : i + per_request])
                requests.append(("GET", f"{path}?{query}", None, headers))
            body = "&".join(f"{name}={value}" for name in FIELDS) + f"&_xsrf={session.xsrf}"
            requests.append(("POST", path, body.encode(), form_headers))
        if path.startswith("/api/"):
            requests += [("POST", path, body, json_headers) for body in HOSTILE_JSON]
    requests += [("GET", path, None, headers) for path in STATIC]
    requests += [("POST", path, b"", form_headers) for path in STATIC]

    codes: Counter[int] = Counter()

    async def one(method: str, path: str, body: bytes | None, hdrs: dict[str, str]) -> str:
        response: HTTPResponse = await session.client.fetch(
            session.base_url + path,
            method=method,
            body=body,
            headers=hdrs,
            follow_redirects=False,
            raise_error=False,
            request_timeout=20,
        )
        codes[response.code] += 1
        if response.code >= 500:
            return f"{method} {path[:120]} -> {response.code}"
        return ""

    failures: list[str] = []
    for start in range(0, len(requests), 16):
        batch = requests[start : start + 16]
        failures += [f for f in await asyncio.gather(*(one(*r) for r in batch)) if f]
    assert len(requests) > 300
    return failures, codes


@pytest.mark.gen_test(timeout=60)
async def test_hostile_requests_never_get_a_5xx_anonymous(session, owner, errors_logged):
    await session.get("/dashboard/login")  # the XSRF cookie and token, as a browser has them
    failures, codes = await _walk(session, session.cookie_header())
    assert not failures, "\n".join(failures)
    assert not errors_logged(), "\n".join(errors_logged())
    assert codes[302] > 50 and codes[403] > 50  # pages send to the login, the API refuses


@pytest.mark.gen_test(timeout=60)
async def test_hostile_requests_never_get_a_5xx_logged_in(logged_in, errors_logged):
    await logged_in.get("/dashboard/")
    # The same cookie throughout: logout only clears the browser's copy, so the walk stays in.
    failures, codes = await _walk(logged_in, logged_in.cookie_header())
    assert not failures, "\n".join(failures)
    assert not errors_logged(), "\n".join(errors_logged())
    assert codes[200] > 50 and codes[400] > 50, codes  # pages render, bad input is refused


@pytest.mark.gen_test
async def test_a_crlf_in_next_redirects_safely(session, owner):
    """It was ``ValueError: Unsafe header value`` (a 500)."""
    await session.get("/dashboard/login")
    response = await session.post_form(
        "/dashboard/login",
        {"name": "boss", "password": "correct horse battery", "next": "/x\r\nSet-Cookie: a=b"},
    )
    assert response.code == 302
    assert response.headers["Location"] == "/dashboard/"
    again = await session.get("/dashboard/login", next="/dashboard/users\r\nX-A: b")
    assert again.code == 302 and again.headers["Location"] == "/dashboard/"
    unicode = await session.get("/dashboard/login", next="/dashboard/users/用户")
    assert unicode.code == 302
    assert unicode.headers["Location"] == "/dashboard/users/%E7%94%A8%E6%88%B7"


@pytest.mark.gen_test
async def test_a_nul_in_a_static_path_is_a_404(session):
    """It was ``ValueError: embedded null byte`` (a 500)."""
    response = await session.get("/static/js/common.js%00.png")
    assert response.code == 404
    assert (await session.get("/static/js/common.js")).code == 200
