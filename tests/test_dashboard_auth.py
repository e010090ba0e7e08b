"""Who gets into the dashboard: login, throttle, XSRF, sessions, the route-auth walk, headers."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
import tornado.web
import tornado.websocket
from tornado.httpclient import HTTPClientError, HTTPRequest

import dashboard
from dashboard.i18n import Translations, js_strings, label_strings, template_strings
from service.store import owners
from tests.dashboard_fixtures import OWNER, PASSWORD, Session

# Routes anyone may call: WeChat proves itself by signature, the login page is the way in,
# static files are public, health and metrics do their own checks.
# Keys are the routes' exact patterns (as Tornado compiles them, with the trailing "$").
ALLOW_ANONYMOUS = {
    "/wechat/?$": {"GET", "POST"},
    "/dashboard/login$": {"GET", "POST"},
    "/healthz$": {"GET", "HEAD"},
    "/metrics$": {"GET"},
}
_AUTH_CODE = tornado.web.authenticated(lambda self: None).__code__


def _routes(app):
    """Every (pattern, handler class) of the application, static routes included."""
    found = []
    for rule in app.wildcard_router.rules:
        pattern = rule.matcher.regex.pattern
        found.append((pattern, rule.target))
    return found


def _defined_methods(handler_class):
    """The HTTP methods the handler class implements itself (not RequestHandler's 405 stubs)."""
    methods = []
    for name in handler_class.SUPPORTED_METHODS:
        impl = getattr(handler_class, name.lower(), None)
        base = getattr(tornado.web.RequestHandler, name.lower(), None)
        if impl is None or impl is base:
            continue
        methods.append((name, impl))
    return methods


def session_cookie(response) -> str:
    return next(c for c in response.headers.get_list("Set-Cookie") if c.startswith("wsv_session="))


def _sample_path(pattern: str) -> str:
    path = pattern.rstrip("$")
    path = re.sub(r"\([^)]*\)", "x", path)
    return path.replace("\\.", ".").replace("/?", "/").replace("\\", "")


def test_every_route_is_authenticated_or_allow_listed(app):
    unprotected = []
    checked = 0
    for pattern, target in _routes(app):
        if isinstance(target, type) and issubclass(target, tornado.web.StaticFileHandler):
            continue
        for method, impl in _defined_methods(target):
            checked += 1
            if getattr(impl, "__code__", None) is _AUTH_CODE:
                continue
            if method in ALLOW_ANONYMOUS.get(pattern, set()):
                continue
            unprotected.append(f"{method} {pattern} ({target.__name__})")
    assert checked > 20
    assert not unprotected, "neither @authenticated nor allow-listed:\n" + "\n".join(unprotected)


@pytest.mark.gen_test
async def test_every_protected_route_refuses_anonymous_requests(app, session, owner):
    """Behaviour, not just decoration: pages redirect to the login, API and socket answer 403."""
    seen = 0
    for pattern, target in _routes(app):
        if isinstance(target, type) and issubclass(target, tornado.web.StaticFileHandler):
            continue
        path = _sample_path(pattern)
        if pattern in ALLOW_ANONYMOUS:
            continue
        for method, _impl in _defined_methods(target):
            seen += 1
            body = b"{}" if method in ("POST", "PUT", "PATCH") else None
            response = await session.fetch(path, method=method, body=body)
            if path.startswith("/api/") or path == "/dashboard/ws" or method != "GET":
                assert response.code == 403, (method, path, response.code)
            else:
                assert response.code == 302, (method, path, response.code)
                assert response.headers["Location"].startswith("/dashboard/login?next="), path
    assert seen > 20


@pytest.mark.gen_test
async def test_api_refuses_anonymous_with_json_403(session):
    response = await session.get("/api/overview")
    assert response.code == 403
    assert response.headers["Content-Type"].startswith("application/json")
    assert b"login required" in response.body


@pytest.mark.gen_test
async def test_websocket_refuses_anonymous_before_upgrade(base_url, http_server):
    url = base_url.replace("http://", "ws://") + "/dashboard/ws"
    with pytest.raises(HTTPClientError) as info:
        await tornado.websocket.websocket_connect(HTTPRequest(url))
    assert info.value.code == 403


@pytest.mark.gen_test
async def test_websocket_refuses_a_forged_cookie(base_url, http_server):
    url = base_url.replace("http://", "ws://") + "/dashboard/ws"
    forged = 'wsv_session="2|1:0|10:1700000000|11:wsv_session|24:eyJuIjoiYm9zcyIsInYiOjF9|00"'
    with pytest.raises(HTTPClientError) as info:
        await tornado.websocket.websocket_connect(HTTPRequest(url, headers={"Cookie": forged}))
    assert info.value.code == 403


# -- login ------------------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_login_success_sets_a_signed_httponly_lax_cookie(session, owner):
    await session.get("/dashboard/login")
    response = await session.post_form(
        "/dashboard/login", {"name": "BOSS", "password": PASSWORD, "next": "/dashboard/users"}
    )
    assert response.code == 302
    assert response.headers["Location"] == "/dashboard/users"
    cookie = session_cookie(response)
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # plain HTTP on loopback
    page = await session.get("/dashboard/")
    assert page.code == 200
    assert OWNER.encode() in page.body


@pytest.mark.gen_test
async def test_login_cookie_is_secure_behind_an_https_proxy(session, owner):
    await session.get("/dashboard/login")
    response = await session.fetch(
        "/dashboard/login",
        method="POST",
        body=f"name={OWNER}&password={PASSWORD.replace(' ', '+')}&_xsrf={session.xsrf}",
        headers={"X-Forwarded-Proto": "https", "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.code == 302
    cookie = session_cookie(response)
    assert "Secure" in cookie


@pytest.mark.gen_test
async def test_login_never_redirects_off_site(session, owner):
    await session.get("/dashboard/login")
    response = await session.post_form(
        "/dashboard/login", {"name": OWNER, "password": PASSWORD, "next": "//evil.example/x"}
    )
    assert response.headers["Location"] == "/dashboard/"


@pytest.mark.gen_test
@pytest.mark.parametrize("name,password", [(OWNER, "wrong password"), ("nobody", PASSWORD)])
async def test_login_failure_is_401_with_a_message(session, owner, name, password):
    response = await session.login(name, password)
    assert response.code == 401
    assert "用户名或密码错误" in response.body.decode()
    assert "wsv_session" not in session.cookies


@pytest.mark.gen_test
async def test_login_without_xsrf_is_rejected(session, owner):
    response = await session.post_form(
        "/dashboard/login", {"name": OWNER, "password": PASSWORD}, xsrf=False
    )
    assert response.code == 403
    assert "wsv_session" not in session.cookies


@pytest.mark.gen_test
async def test_api_post_without_xsrf_header_is_rejected(logged_in, db):
    response = await logged_in.post_json("/api/simulator/wipe", {}, xsrf=False)
    assert response.code == 403
    response = await logged_in.post_json("/api/simulator/wipe", {})
    assert response.code == 200


@pytest.mark.gen_test
async def test_five_failures_throttle_the_account_and_say_when_to_retry(session, owner, db):
    for _ in range(4):
        assert (await session.login(OWNER, "nope")).code == 401
    fifth = await session.login(OWNER, "nope")
    assert fifth.code == 429
    # Now even the right password is refused, and the page says when to try again.
    refused = await session.login(OWNER, PASSWORD)
    assert refused.code == 429
    assert int(refused.headers["Retry-After"]) > 14 * 60
    text = refused.body.decode()
    assert "登录失败次数过多" in text
    assert re.search(r"请在 \d\d:\d\d:\d\d 之后（约 15 分钟后）再试", text), text
    assert "wsv_session" not in session.cookies
    # The counters live in MongoDB (so every process sees them) and expire by themselves.
    until = await owners.blocked_until(db, [f"account:{OWNER}"])
    assert until is not None
    index = await db[owners.FAILURES].index_information()
    assert index["expires_at_ttl"]["expireAfterSeconds"] == 0


@pytest.mark.gen_test
async def test_throttle_per_ip_covers_every_account(session, owner, db):
    for i in range(5):
        await session.login(f"guess{i}", "nope")
    refused = await session.login(OWNER, PASSWORD)
    assert refused.code == 429


@pytest.mark.gen_test
async def test_throttle_per_account_holds_across_addresses(session, owner, db):
    """Failures recorded by other processes / from other addresses count for the account."""
    now = dt.datetime.now(dt.UTC)
    for i in range(5):
        await owners.record_failure(db, [f"account:{OWNER}", f"ip:10.0.0.{i}"], now)
    refused = await session.login(OWNER, PASSWORD)
    assert refused.code == 429


@pytest.mark.gen_test
async def test_failures_older_than_the_window_do_not_count(session, owner, db):
    old = dt.datetime.now(dt.UTC) - owners.WINDOW - dt.timedelta(seconds=5)
    for _ in range(5):
        await owners.record_failure(db, [f"account:{OWNER}"], old)
    assert (await session.login(OWNER, PASSWORD)).code == 302


@pytest.mark.gen_test
async def test_logout_ends_the_session(logged_in):
    response = await logged_in.post_form("/dashboard/logout", {})
    assert response.code == 302
    assert response.headers["Location"] == "/dashboard/login"
    assert "wsv_session" not in logged_in.cookies
    assert (await logged_in.get("/dashboard/")).code == 302


@pytest.mark.gen_test
async def test_change_password_ends_other_sessions(logged_in, http_client, base_url, db):
    other = Session(http_client, base_url)
    assert (await other.login()).code == 302
    await logged_in.get("/dashboard/password")
    wrong = await logged_in.post_form(
        "/dashboard/password", {"current": "nope", "new": "n3w password", "repeat": "n3w password"}
    )
    assert wrong.code == 400
    assert "当前密码不正确" in wrong.body.decode()
    mismatch = await logged_in.post_form(
        "/dashboard/password", {"current": PASSWORD, "new": "n3w password", "repeat": "other one"}
    )
    assert mismatch.code == 400
    done = await logged_in.post_form(
        "/dashboard/password",
        {"current": PASSWORD, "new": "n3w password", "repeat": "n3w password"},
    )
    assert done.code == 200
    assert "密码已修改" in done.body.decode()
    assert (await logged_in.get("/dashboard/")).code == 200  # this session got a fresh cookie
    assert (await other.get("/dashboard/")).code == 302  # the other one is over
    fresh = Session(http_client, base_url)
    assert (await fresh.login(OWNER, PASSWORD)).code == 401
    assert (await fresh.login(OWNER, "n3w password")).code == 302


@pytest.mark.gen_test
async def test_an_over_long_new_password_is_a_400_that_says_why(logged_in):
    """It was an uncaught OwnerError (a 500) before."""
    await logged_in.get("/dashboard/password")
    long = "x" * 1100
    form = {"current": PASSWORD, "new": long, "repeat": long}
    response = await logged_in.post_form("/dashboard/password", form)
    assert response.code == 400
    assert "新密码最多只能有 1024 个字符" in response.body.decode()
    english = await logged_in.post_form("/dashboard/password?lang=en", form)
    assert english.code == 400
    assert "The new password must have at most 1024 characters." in english.body.decode()
    fresh = await logged_in.login(OWNER, PASSWORD)  # the password did not change
    assert fresh.code == 302


@pytest.mark.gen_test
async def test_one_time_password_must_be_changed_first(session, db):
    await owners.create(db, "admin", "one-time-pass", must_change_password=True)
    response = await session.login("admin", "one-time-pass")
    assert response.headers["Location"] == "/dashboard/password"
    page = await session.get("/dashboard/")
    assert page.code == 302 and page.headers["Location"] == "/dashboard/password"
    api = await session.get("/api/overview")
    assert api.code == 403 and b"password change required" in api.body
    form = await session.get("/dashboard/password")
    assert "一次性密码" in form.body.decode()
    await session.post_form(
        "/dashboard/password",
        {"current": "one-time-pass", "new": "mine-at-last", "repeat": "mine-at-last"},
    )
    assert (await session.get("/api/overview")).code == 200


# -- headers and languages ----------------------------------------------------------------------


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/login",
        "/dashboard/",
        "/api/overview",
        "/dashboard/nope",
        "/api/users/none",
        "/static/css/dashboard.css",
        "/",
    ],
)
async def test_security_headers_on_every_dashboard_response(logged_in, path):
    response = await logged_in.get(path)
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.gen_test
async def test_pages_have_no_inline_script_and_only_local_assets(logged_in):
    for path in [
        "/dashboard/",
        "/dashboard/live",
        "/dashboard/users",
        "/dashboard/surveys",
        "/dashboard/surveys/baogan",
        "/dashboard/messages",
        "/dashboard/simulator",
        "/dashboard/password",
    ]:
        response = await logged_in.get(path)
        assert response.code == 200, path
        html = response.body.decode()
        for tag in re.findall(r"<script[^>]*>", html):
            assert re.search(r'src="/static/[^"]+\?v=[0-9a-f]+"', tag), (path, tag)
        assert not re.search(r"<script[^>]*>\s*[^<\s]", html), path  # no inline code
        assert "http://" not in html and "https://" not in html, path  # no CDN


@pytest.mark.gen_test
async def test_static_assets_are_served_with_version_hashes(logged_in):
    html = (await logged_in.get("/dashboard/surveys/baogan")).body.decode()
    found = re.search(
        r'src="(/static/vendor/echarts-6\.0\.0-dashboard\.min\.js\?v=[0-9a-f]+)"', html
    )
    assert found is not None
    src = found.group(1)
    response = await logged_in.get(src)
    assert response.code == 200
    assert "max-age=31536000" in response.headers["Cache-Control"]
    assert b"Apache" in response.body[:2000] or len(response.body) > 500_000


@pytest.mark.gen_test
async def test_both_languages_render(logged_in):
    zh = (await logged_in.get("/dashboard/")).body.decode()
    assert '<html lang="zh-CN">' in zh
    assert "概览" in zh and "实时消息" in zh and "模拟器" in zh
    en = await logged_in.get("/dashboard/", lang="en")
    text = en.body.decode()
    assert '<html lang="en">' in text
    assert "Overview" in text and "Live traffic" in text and "Simulator" in text
    assert "概览" not in text
    assert logged_in.cookies["lang"] == "en"
    # The choice sticks (cookie), for pages and the scripts' strings alike.
    again = (await logged_in.get("/dashboard/live")).body.decode()
    assert "Pause" in again and "暂停" not in again
    back = (await logged_in.get("/dashboard/live", lang="zh")).body.decode()
    assert "暂停" in back


@pytest.mark.gen_test
async def test_login_page_in_english(session):
    page = (await session.get("/dashboard/login", lang="en")).body.decode()
    assert "Log in" in page and "Password" in page


def test_every_text_has_a_chinese_translation():
    templates = Path(dashboard.TEMPLATE_DIR)
    static = Path(dashboard.STATIC_DIR)
    translations = Translations(Path(dashboard.__file__).parent / "translations", static)
    keys = template_strings(templates) + js_strings(static) + label_strings()
    assert len(keys) > 100
    assert translations.missing(keys) == []
    zh = translations.get("zh")
    assert zh.translate("Overview") == "概览"
    assert translations.get("en").translate("Overview") == "Overview"
