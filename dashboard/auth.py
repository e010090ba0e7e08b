"""Login, logout and change of password.

Failed logins are counted per account and per client address in MongoDB (``login_failures``);
after ``MAX_FAILURES`` within ``WINDOW`` the login answers 429 and says when to try again, without
checking the password, so guessing stops being useful.
"""

from __future__ import annotations

import datetime as dt
import logging
import urllib.parse
import zoneinfo

import tornado.web

from service.clock import now as _now
from service.inbox import user_hash
from service.store import owners

from .base import DashboardHandler

log = logging.getLogger(__name__)


def safe_next(value: str) -> str:
    """Only local paths under the site: never an absolute URL or ``//host``."""
    parts = urllib.parse.urlsplit(value)
    if parts.scheme or parts.netloc or not value.startswith("/") or value.startswith("//"):
        return "/dashboard/"
    if "\\" in value:
        return "/dashboard/"
    return value


class LoginHandler(DashboardHandler):
    """Anonymous by design (it is the way in); on the route-auth allow-list."""

    allowed_during_password_change = True

    def get(self) -> None:
        if self.owner is not None:
            self.redirect(safe_next(self.get_query_argument("next", "/dashboard/")))
            return
        self.show()

    def show(self, *, error: str = "", name: str = "", retry_at: dt.datetime | None = None) -> None:
        retry_local = ""
        minutes = 0
        if retry_at is not None:
            zone = zoneinfo.ZoneInfo(self.config.timezone)
            retry_local = retry_at.astimezone(zone).strftime("%H:%M:%S")
            remaining = (retry_at - dt.datetime.now(dt.UTC)).total_seconds()
            minutes = max(1, int((remaining + 59) // 60))
        self.render_page(
            "login.html",
            error=error,
            name=name,
            retry_at=retry_local,
            retry_minutes=minutes,
            next=safe_next(self.get_argument("next", "/dashboard/")),
        )

    async def post(self) -> None:
        name = self.get_body_argument("name", "").strip()
        password = self.get_body_argument("password", "")
        keys = owners.throttle_keys(name, self.request.remote_ip or "")
        until = await owners.blocked_until(self.db, keys)
        if until is not None:
            log.warning("login throttled for user %s", user_hash(name.lower()))
            self.set_status(429)
            self.set_header("Retry-After", str(max(1, int((until - _now()).total_seconds()))))
            self.show(error="throttled", name=name, retry_at=until)
            return
        owner = await owners.authenticate(self.db, name, password) if name else None
        if owner is None:
            await owners.record_failure(self.db, keys)
            until = await owners.blocked_until(self.db, keys)
            log.warning("failed login for user %s", user_hash(name.lower()))
            self.set_status(429 if until is not None else 401)
            if until is not None:
                self.set_header("Retry-After", str(max(1, int((until - _now()).total_seconds()))))
            self.show(error="throttled" if until else "invalid", name=name, retry_at=until)
            return
        await owners.clear_failures(self.db, keys[0])
        self.start_session(owner)
        log.info("owner %s logged in", owner["_id"])
        if owner.get("must_change_password"):
            self.redirect("/dashboard/password")
            return
        self.redirect(safe_next(self.get_body_argument("next", "/dashboard/")))


class LogoutHandler(DashboardHandler):
    allowed_during_password_change = True

    @tornado.web.authenticated
    def post(self) -> None:
        self.end_session()
        self.redirect("/dashboard/login")


class PasswordHandler(DashboardHandler):
    allowed_during_password_change = True

    @tornado.web.authenticated
    def get(self) -> None:
        self.render_page("password.html", error="", done=False)

    @tornado.web.authenticated
    async def post(self) -> None:
        assert self.owner is not None  # noqa: S101 - guaranteed by @authenticated
        current = self.get_body_argument("current", "")
        new = self.get_body_argument("new", "")
        repeat = self.get_body_argument("repeat", "")
        error = ""
        if await owners.authenticate(self.db, self.owner["_id"], current) is None:
            error = "wrong_current"
        elif new != repeat:
            error = "mismatch"
        elif len(new) < owners.MIN_PASSWORD_LENGTH:
            error = "too_short"
        elif new == current:
            error = "same"
        if error:
            self.set_status(400)
            self.render_page("password.html", error=error, done=False)
            return
        version = await owners.set_password(self.db, self.owner["_id"], new)
        self.owner.update(session_version=version, must_change_password=False)
        self.start_session(self.owner)  # other sessions end: their version is now stale
        log.info("owner %s changed the password", self.owner["_id"])
        self.render_page("password.html", error="", done=True)


routes = [
    (r"/dashboard/login", LoginHandler),
    (r"/dashboard/logout", LogoutHandler),
    (r"/dashboard/password", PasswordHandler),
]
