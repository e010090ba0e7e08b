"""Login, logout and change of password.

The rules are ``service.accounts``: failed logins are counted per account and per client address
in MongoDB; after ``MAX_FAILURES`` within ``WINDOW`` the login answers 429 and says when to try
again, without checking the password, so guessing stops being useful.
"""

from __future__ import annotations

import logging
import urllib.parse
import zoneinfo

import tornado.web

from service import accounts
from service.store import owners

from .base import DashboardHandler

log = logging.getLogger(__name__)


def safe_next(value: str) -> str:
    """Only local paths under the site: never an absolute URL or ``//host``.

    Control characters (CR/LF would split the ``Location`` header) send the owner to the
    dashboard; other characters outside printable ASCII are percent-encoded.
    """
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        return "/dashboard/"
    parts = urllib.parse.urlsplit(value)
    if parts.scheme or parts.netloc or not value.startswith("/") or value.startswith("//"):
        return "/dashboard/"
    if "\\" in value:
        return "/dashboard/"
    return urllib.parse.quote(value, safe="/?&=#%:@!$'()*+,;~-._[]")


class LoginHandler(DashboardHandler):
    """Anonymous by design (it is the way in); on the route-auth allow-list."""

    allowed_during_password_change = True

    def get(self) -> None:
        if self.owner is not None:
            self.redirect(safe_next(self.get_query_argument("next", "/dashboard/")))
            return
        self.show()

    def show(
        self, *, error: str = "", name: str = "", retry_at: str = "", minutes: int = 0
    ) -> None:
        self.render_page(
            "login.html",
            error=error,
            name=name,
            retry_at=retry_at,
            retry_minutes=minutes,
            next=safe_next(self.get_argument("next", "/dashboard/")),
        )

    async def post(self) -> None:
        result = await accounts.login(
            self.db,
            self.get_body_argument("name", ""),
            self.get_body_argument("password", ""),
            self.request.remote_ip or "",
        )
        if result.owner is None:
            self.set_status(429 if result.refused == "throttled" else 401)
            retry_local = ""
            if result.retry_at is not None:
                self.set_header("Retry-After", str(result.retry_after))
                zone = zoneinfo.ZoneInfo(self.config.timezone)
                retry_local = result.retry_at.astimezone(zone).strftime("%H:%M:%S")
            self.show(
                error=result.refused,
                name=self.get_body_argument("name", "").strip(),
                retry_at=retry_local,
                minutes=max(1, (result.retry_after + 59) // 60),
            )
            return
        self.start_session(result.owner)
        if result.owner.get("must_change_password"):
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
        self.show()

    def show(self, *, error: str = "", done: bool = False) -> None:
        self.render_page(
            "password.html",
            error=error,
            done=done,
            min_length=owners.MIN_PASSWORD_LENGTH,
            max_length=owners.MAX_PASSWORD_LENGTH,
        )

    @tornado.web.authenticated
    async def post(self) -> None:
        assert self.owner is not None  # noqa: S101 - guaranteed by @authenticated
        try:
            changed = await accounts.change_password(
                self.db,
                self.owner["_id"],
                self.get_body_argument("current", ""),
                self.get_body_argument("new", ""),
                repeat=self.get_body_argument("repeat", ""),
            )
        except accounts.PasswordRefused as e:
            self.set_status(400)
            self.show(error=e.reason)
            return
        self.owner.update(session_version=changed.session_version, must_change_password=False)
        self.start_session(self.owner)  # other sessions end: their version is now stale
        log.info("owner %s changed the password", self.owner["_id"])
        self.show(done=True)


routes = [
    (r"/dashboard/login", LoginHandler),
    (r"/dashboard/logout", LogoutHandler),
    (r"/dashboard/password", PasswordHandler),
]
