"""Dashboard plumbing: the session, the locale, security headers, Jinja2 rendering, JSON errors.

The session is a signed cookie holding the owner's name and session version; ``prepare`` loads the
owner from MongoDB on every request (``get_current_user`` cannot await), so a password change or a
removed owner ends every session at once.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import zoneinfo
from http import HTTPStatus
from typing import Any, cast

import jinja2
import tornado.locale
import tornado.web

from handlers.base import BaseHandler
from service.clock import iso
from service.live import Hub
from service.reports import Numbers
from service.store import owners
from service.survey_index import SurveyIndex
from service.wechat_api import WeChatAPI, WeChatAPIError

from .i18n import LANGUAGE_NAMES, LANGUAGES, Translations

__all__ = [
    "LANG_COOKIE",
    "NO_WECHAT_API",
    "SESSION_COOKIE",
    "ApiHandler",
    "DashboardHandler",
    "StaticHandler",
    "WeChatApiHandler",
    "security_headers",
]

log = logging.getLogger(__name__)

SESSION_COOKIE = "wsv_session"
LANG_COOKIE = "lang"
SESSION_DAYS = 14


def content_security_policy(style_nonce: str = "") -> str:
    """The pages' CSP; ``style_nonce`` also allows the ``<style>`` elements carrying it (the
    survey editor's CodeMirror writes its styles that way)."""
    style = f"'self' 'nonce-{style_nonce}'" if style_nonce else "'self'"
    return (
        f"default-src 'self'; script-src 'self'; style-src {style}; img-src 'self' data: "
        # The media library's thumbnails: WeChat's material images (shown without a referrer).
        "https://mmbiz.qpic.cn http://mmbiz.qpic.cn; "
        "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    )


def security_headers(handler: tornado.web.RequestHandler) -> None:
    """Headers every dashboard response carries, errors and redirects included."""
    handler.set_header("Content-Security-Policy", content_security_policy())
    handler.set_header("X-Frame-Options", "DENY")
    handler.set_header("Referrer-Policy", "same-origin")
    handler.set_header("X-Content-Type-Options", "nosniff")
    handler.set_header("Cross-Origin-Opener-Policy", "same-origin")


def is_https(handler: tornado.web.RequestHandler) -> bool:
    """Served over HTTPS, directly or behind a proxy that says so (when proxies are trusted)."""
    if handler.request.protocol == "https":
        return True
    config = handler.settings.get("config")
    trusted = bool(getattr(config, "xheaders", False))
    forwarded = handler.request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip()
    return trusted and forwarded.lower() == "https"


class StaticHandler(tornado.web.StaticFileHandler):
    """Tornado's static files (with version hashes) plus the security headers.

    A versioned URL (``static_url``: ``?v=<hash>``) is cached for long, as Tornado does. An
    unversioned one (an ES-module import such as ``./common.js``) is ``no-cache``: the browser
    revalidates it (ETag, 304), so after a deploy a new page script never runs against a cached
    old module.
    """

    def set_default_headers(self) -> None:
        security_headers(self)

    def set_extra_headers(self, path: str) -> None:
        if not self.get_query_argument("v", ""):
            self.set_header("Cache-Control", "no-cache")
        elif self.get_cache_time(path, self.modified, self.get_content_type()):
            # The hash is in the URL: the file never changes under it; no revalidation either.
            self.set_header("Cache-Control", f"public, max-age={self.CACHE_MAX_AGE}, immutable")

    def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
        # A NUL (``common.js%00.png``) makes the file system calls raise ValueError: a 500.
        if "\x00" in absolute_path:
            raise tornado.web.HTTPError(404)
        return super().validate_absolute_path(root, absolute_path)


class DashboardHandler(BaseHandler):
    """Base of every dashboard page: loads the owner, picks the language, renders templates."""

    # The password page and logout stay reachable while a password change is required.
    allowed_during_password_change = False
    owner: dict[str, Any] | None = None

    def set_default_headers(self) -> None:
        security_headers(self)
        self.set_header("Cache-Control", "no-store")

    @property
    def hub(self) -> Hub:
        return cast(Hub, self.settings["hub"])

    @property
    def survey_index(self) -> SurveyIndex:
        """How the survey pages count: in memory (``service.survey_index``), this process's."""
        return cast(SurveyIndex, self.settings["survey_index"])

    @property
    def survey_numbers(self) -> Numbers:
        return self.survey_index.report_numbers

    @property
    def translations(self) -> Translations:
        return cast(Translations, self.settings["translations"])

    @property
    def jinja(self) -> jinja2.Environment:
        return cast(jinja2.Environment, self.settings["jinja_env"])

    @property
    def lang(self) -> str:
        return getattr(self, "_lang", "zh")

    async def prepare(self) -> None:
        self._pick_language()
        self.owner = await self._load_owner()
        if self.owner is not None:
            self.current_user = self.owner["_id"]
        if (
            self.owner is not None
            and self.owner.get("must_change_password")
            and not self.allowed_during_password_change
        ):
            self.password_change_required()

    def password_change_required(self) -> None:
        if self.request.method in ("GET", "HEAD"):
            self.redirect("/dashboard/password")
            return
        raise tornado.web.HTTPError(403, "password change required")

    def _pick_language(self) -> None:
        requested = self.get_query_argument("lang", "")
        if requested in LANGUAGES:
            self.set_cookie(
                LANG_COOKIE, requested, expires_days=365, samesite="Lax", secure=is_https(self)
            )
            self._lang = requested
            return
        cookie = self.get_cookie(LANG_COOKIE, "")
        self._lang = cookie if cookie in LANGUAGES else "zh"

    def get_user_locale(self) -> tornado.locale.Locale | None:
        return self.translations.get(self.lang)

    async def _load_owner(self) -> dict[str, Any] | None:
        raw = self.get_signed_cookie(SESSION_COOKIE, max_age_days=SESSION_DAYS)
        if not raw:
            return None
        try:
            session = json.loads(raw)
            name, version = str(session["n"]), int(session["v"])
        except (ValueError, KeyError, TypeError):
            return None
        owner = await owners.get(self.db, name)
        if owner is None or int(owner.get("session_version", 0)) != version:
            return None
        return owner

    def start_session(self, owner: dict[str, Any]) -> None:
        value = json.dumps({"n": owner["_id"], "v": int(owner.get("session_version", 1))})
        self.set_signed_cookie(
            SESSION_COOKIE,
            value,
            expires_days=SESSION_DAYS,
            httponly=True,
            samesite="Lax",
            secure=is_https(self),
        )

    def end_session(self) -> None:
        self.clear_cookie(SESSION_COOKIE, httponly=True, samesite="Lax", secure=is_https(self))

    # -- rendering ------------------------------------------------------------------------------
    def template_context(self) -> dict[str, Any]:
        locale = self.locale
        labels = self.translations.labels(locale)
        return {
            "_": locale.translate,
            "lang": self.lang,
            "languages": LANGUAGE_NAMES,
            "static_url": self.static_url,
            "xsrf_token": self.xsrf_token.decode("ascii"),
            "owner": self.owner,
            "path": self.request.path,
            "js_strings": json.dumps(self.translations.for_js(locale), ensure_ascii=False),
            "labels": labels,
            "labels_json": json.dumps(labels, ensure_ascii=False),
            "timezone": self.config.timezone,
            # One default for showing the simulator's test users, remembered per owner.
            "include_test": owners.preference(self.owner, "include_test"),
        }

    def date_argument(self, name: str, *, end_of_day: bool = False) -> dt.datetime | None:
        """An ISO date or datetime; a bare date is midnight in the owner's time zone.

        ``end_of_day``: a bare date means the end of that day (an inclusive "to" date).
        """
        raw = self.get_query_argument(name, "").strip()
        if not raw:
            return None
        if end_of_day and len(raw) == 10:
            try:
                day = dt.date.fromisoformat(raw)
            except ValueError as e:
                raise tornado.web.HTTPError(400, "%s is not an ISO date", name) from e
            raw = (day + dt.timedelta(days=1)).isoformat()
        try:
            value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError as e:
            raise tornado.web.HTTPError(400, "%s is not an ISO date", name) from e
        if value.tzinfo is None:
            value = value.replace(tzinfo=zoneinfo.ZoneInfo(self.config.timezone))
        return value.astimezone(dt.UTC)

    def render_page(self, template: str, **context: Any) -> None:
        page = self.jinja.get_template(template)
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.finish(page.render(**self.template_context(), **context))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        try:
            reason = HTTPStatus(status_code).phrase
        except ValueError:
            reason = self._reason
        self.render_page("error.html", status=status_code, reason=reason)


class ApiHandler(DashboardHandler):
    """JSON API: anonymous callers get 403 (no redirect), errors are JSON too."""

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Content-Type", "application/json; charset=UTF-8")

    async def prepare(self) -> None:
        await super().prepare()
        if self._finished:
            return
        if self.owner is None:
            raise tornado.web.HTTPError(403, "login required")

    def password_change_required(self) -> None:
        raise tornado.web.HTTPError(403, "password change required")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        message = self._reason
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, tornado.web.HTTPError) and exc.log_message and status_code < 500:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish({"error": message, "status": status_code})

    def write_json(self, data: Any) -> None:
        self.finish(json.dumps(data, ensure_ascii=False, default=_json_default))

    def json_body(self) -> dict[str, Any]:
        try:
            data = json.loads(self.request.body or b"{}")
        except ValueError as e:
            raise tornado.web.HTTPError(400, "body is not JSON") from e
        if not isinstance(data, dict):
            raise tornado.web.HTTPError(400, "body must be a JSON object")
        return data

    def int_argument(self, name: str, default: int, low: int, high: int) -> int:
        raw = self.get_query_argument(name, "")
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError as e:
            raise tornado.web.HTTPError(400, "%s must be an integer", name) from e
        return max(low, min(high, value))

    def bool_argument(self, name: str, default: bool) -> bool:
        raw = self.get_query_argument(name, "").lower()
        if not raw:
            return default
        return raw in {"1", "true", "yes", "on"}


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return iso(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


NO_WECHAT_API = (
    "AppID/AppSecret are not configured (WECHAT_APP_ID, WECHAT_APP_SECRET): cannot reach WeChat"
)


class WeChatApiHandler(ApiHandler):
    """An API that reaches WeChat through the process's ``WeChatAPI`` (media, menu): it says so
    when AppID/AppSecret are not configured, and passes WeChat's refusals on."""

    @property
    def api(self) -> WeChatAPI | None:
        """The process's WeChat API; None without AppID/AppSecret."""
        api = self.settings.get("wechat_api")
        return api if isinstance(api, WeChatAPI) else None

    def require_api(self) -> WeChatAPI:
        """The WeChat API, or 409: the request is fine, this server is not set up for it (the
        page says how)."""
        api = self.api
        if api is None:
            raise tornado.web.HTTPError(409, NO_WECHAT_API)
        return api

    def wechat_failed(self, e: WeChatAPIError) -> None:
        """WeChat refused or failed: 502 with its errcode."""
        self.set_status(502)
        self.write_json({"error": str(e), "errcode": e.errcode})
