"""Settings, read once from the environment (and optionally a config file).

``Settings.from_env()`` is the only reader of ``os.environ`` in the project. Every field is
documented in the README; ``tests/test_config.py`` checks that the two stay in sync.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import secrets
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_TIMEZONE",
    "ENV_VARS",
    "EVENT_LOOPS",
    "MESSAGE_MODES",
    "NO_TOKEN",
    "ConfigError",
    "Settings",
    "http_server_options",
    "in_window",
    "parse_quiet_hours",
]

# TIMEZONE when unset: the owner's time zone.
DEFAULT_TIMEZONE = "Asia/Shanghai"

# What ``wechat_token`` holds for a command-line tool that never checks a WeChat signature and ran
# without WECHAT_TOKEN (``Settings.from_env(require_token=False)``). WeChat's Token is 3 to 32
# letters and digits, so this is never a real one.
NO_TOKEN = "-"  # noqa: S105 - a placeholder, not a secret


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names it."""


# Environment variable -> (field name, type). The README documents each of these.
ENV_VARS: dict[str, tuple[str, type]] = {
    "WECHAT_TOKEN": ("wechat_token", str),
    "WECHAT_APP_ID": ("app_id", str),
    "WECHAT_APP_SECRET": ("app_secret", str),
    "WECHAT_ENCODING_AES_KEY": ("encoding_aes_key", str),
    "WECHAT_IMAGE_MEDIA_ID": ("image_media_id", str),
    "WECHAT_API_BASE": ("wechat_api_base", str),
    "MONGODB_URI": ("mongodb_uri", str),
    "MONGODB_DB": ("mongodb_db", str),
    "COOKIE_SECRET": ("cookie_secret", str),
    "DATA_DIR": ("data_dir", Path),
    "SURVEYS_DIR": ("surveys_dir", Path),
    "REPLY_BUDGET": ("reply_budget", float),
    "MAX_BODY_BYTES": ("max_body_bytes", int),
    "METRICS_TOKEN": ("metrics_token", str),
    "SPOOL_MAX_BYTES": ("spool_max_bytes", int),
    "XHEADERS": ("xheaders", bool),
    "HOST": ("host", str),
    "PORT": ("port", int),
    "TIMEZONE": ("timezone", str),
    "WECHAT_MESSAGE_MODE": ("message_mode", str),
    "SIGNATURE_MAX_AGE": ("signature_max_age", int),
    "IDLE_CONNECTION_TIMEOUT": ("idle_connection_timeout", float),
    "BODY_TIMEOUT": ("body_timeout", float),
    "EVENT_LOOP": ("event_loop", str),
    "USER_COUNT_RECOVERY": ("user_count_recovery", float),
    "QUIET_HOURS": ("quiet_hours", str),
    "REMINDER_INTERVAL": ("reminder_interval", float),
}

# 公众平台 → 基本配置 → 消息加解密方式: 明文模式, 兼容模式, 安全模式.
MESSAGE_MODES = ("plain", "compat", "safe")
# EVENT_LOOP: uvloop when installed, or either one by name (service/eventloop.py).
EVENT_LOOPS = ("auto", "uvloop", "asyncio")
# A stored message holds the body (``raw``) and its fields: this keeps it well under MongoDB's
# 16 MB document limit.
MAX_BODY_BYTES_CEILING = 4 * 1024 * 1024


def _parse_bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def _read_env_file(path: Path) -> dict[str, str]:
    """Read a ``KEY=value`` file (the same file supervisord and systemd read)."""
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :]
        key, sep, value = line.partition("=")
        if not sep:
            raise ConfigError(f"{path}:{number}: expected KEY=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


@dataclasses.dataclass(frozen=True)
class Settings:
    wechat_token: str
    app_id: str = ""
    app_secret: str = ""
    encoding_aes_key: str = ""
    image_media_id: str = ""
    wechat_api_base: str = "https://api.weixin.qq.com"
    # Empty means: start the embedded SecantusDB server under data_dir.
    mongodb_uri: str = ""
    mongodb_db: str = "wechat_survey"
    cookie_secret: str = ""
    data_dir: Path = Path("data")
    surveys_dir: Path | None = None
    reply_budget: float = 4.0
    max_body_bytes: int = 1024 * 1024
    metrics_token: str = ""
    # Bound of the outage spool under DATA_DIR/spool (see service/spool.py).
    spool_max_bytes: int = 256 * 1024 * 1024
    xheaders: bool = True
    host: str = "127.0.0.1"
    port: int = 8000
    # Benchmark only, no environment variable: `serve --no-store` answers without storing.
    store_messages: bool = True
    # The owner's time zone: "today" on the dashboard, day boundaries in charts, the survey times
    # written without an offset and the times a respondent is shown.
    timezone: str = DEFAULT_TIMEZONE
    # The message mode chosen in 基本配置: plain, compat or safe; empty: safe with an AES key,
    # plain without (see ``effective_message_mode``).
    message_mode: str = ""
    # Seconds a signed /wechat URL stays valid either side of our clock (replays, clock skew).
    signature_max_age: int = 300
    # Seconds a connection may take to send its request headers (and may stay idle between
    # requests), and to send its body: slow clients cannot hold connections open.
    idle_connection_timeout: float = 60.0
    body_timeout: float = 10.0
    # The event loop `serve` runs on: auto (uvloop when installed), uvloop or asyncio.
    event_loop: str = "auto"
    # Seconds after which a message a (killed) process stored but never counted for its user is
    # counted by another process's sweep.
    user_count_recovery: float = 30.0
    # No survey reminder is sent in this daily window, in ``timezone`` ("22:00-08:00" crosses
    # midnight); empty: none. A reminder due then goes out after it, if WeChat still allows it.
    quiet_hours: str = "22:00-08:00"
    # Seconds between two scans for survey reminders and expired sessions (service.reminders).
    reminder_interval: float = 60.0

    def __post_init__(self) -> None:
        if not self.wechat_token:
            raise ConfigError("WECHAT_TOKEN is required (the Token set in 公众平台 → 基本配置)")
        if self.encoding_aes_key and len(self.encoding_aes_key) != 43:
            raise ConfigError(
                f"WECHAT_ENCODING_AES_KEY must be 43 characters, got {len(self.encoding_aes_key)}"
            )
        if self.encoding_aes_key and not self.app_id:
            raise ConfigError("WECHAT_APP_ID is required when WECHAT_ENCODING_AES_KEY is set")
        if self.reply_budget <= 0 or self.reply_budget >= 5:
            raise ConfigError("REPLY_BUDGET must be between 0 and 5 seconds (WeChat waits 5 s)")
        if self.max_body_bytes <= 0:
            raise ConfigError("MAX_BODY_BYTES must be positive")
        if self.spool_max_bytes <= 0:
            raise ConfigError("SPOOL_MAX_BYTES must be positive")
        self._check_wire()
        if self.event_loop not in EVENT_LOOPS:
            raise ConfigError(
                f"EVENT_LOOP must be auto, uvloop or asyncio, got {self.event_loop!r}"
            )
        if self.reminder_interval <= 0:
            raise ConfigError("REMINDER_INTERVAL must be a positive number of seconds")
        self.quiet_window  # noqa: B018 - checks QUIET_HOURS
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as e:
            raise ConfigError(f"TIMEZONE {self.timezone!r} is not a known time zone") from e

    @property
    def quiet_window(self) -> tuple[dt.time, dt.time] | None:
        """``quiet_hours`` as (start, end) local times; None when empty (no quiet hours)."""
        return parse_quiet_hours(self.quiet_hours)

    @property
    def aes_enabled(self) -> bool:
        return bool(self.encoding_aes_key)

    def _check_wire(self) -> None:
        """The /wechat endpoint's settings: message mode, signature age, timeouts, body size."""
        mode = self.message_mode.strip().lower()
        if mode and mode not in MESSAGE_MODES:
            raise ConfigError(
                f"WECHAT_MESSAGE_MODE must be plain, compat or safe, got {self.message_mode!r}"
            )
        if mode in ("compat", "safe") and not self.encoding_aes_key:
            raise ConfigError(
                f"WECHAT_MESSAGE_MODE={mode} needs WECHAT_ENCODING_AES_KEY "
                "(the EncodingAESKey set in 公众平台 → 基本配置)"
            )
        if self.signature_max_age <= 0:
            raise ConfigError("SIGNATURE_MAX_AGE must be a positive number of seconds")
        if self.idle_connection_timeout <= 0:
            raise ConfigError("IDLE_CONNECTION_TIMEOUT must be a positive number of seconds")
        if self.body_timeout <= 0:
            raise ConfigError("BODY_TIMEOUT must be a positive number of seconds")
        if self.user_count_recovery <= 0:
            raise ConfigError("USER_COUNT_RECOVERY must be a positive number of seconds")
        if self.max_body_bytes > MAX_BODY_BYTES_CEILING:
            raise ConfigError(
                f"MAX_BODY_BYTES must be at most {MAX_BODY_BYTES_CEILING} "
                "(a stored message must fit a MongoDB document)"
            )

    @property
    def effective_message_mode(self) -> str:
        """``plain``, ``compat`` or ``safe``: WECHAT_MESSAGE_MODE, or the default for the key."""
        mode = self.message_mode.strip().lower()
        if mode:
            return mode
        return "safe" if self.encoding_aes_key else "plain"

    def describe_message_mode(self) -> str:
        """One line for the start-up log: which requests /wechat accepts, and why."""
        mode = self.effective_message_mode
        chosen = "WECHAT_MESSAGE_MODE" if self.message_mode.strip() else "default"
        if mode == "safe":
            what = "安全模式, only encrypted requests are accepted"
        elif mode == "compat":
            what = "兼容模式, plaintext and encrypted requests are accepted"
        else:
            what = "明文模式, plaintext requests only"
            if self.encoding_aes_key:
                what += "; WECHAT_ENCODING_AES_KEY is set but unused"
        return f"WeChat message mode: {mode} ({what}; {chosen})"

    @property
    def embedded_db(self) -> bool:
        return not self.mongodb_uri

    @property
    def tzinfo(self) -> zoneinfo.ZoneInfo:
        """``timezone`` as a ``tzinfo`` (checked at construction)."""
        return zoneinfo.ZoneInfo(self.timezone)

    @property
    def has_token(self) -> bool:
        """False for tool settings read without WECHAT_TOKEN (``wechat_token`` is ``NO_TOKEN``)."""
        return self.wechat_token != NO_TOKEN

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        config_file: str | os.PathLike[str] | None = None,
        require_token: bool = True,
        **overrides: Any,
    ) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``).

        ``config_file`` (or ``WECHAT_SURVEY_CONFIG``) names a ``KEY=value`` file; the environment
        wins over the file, ``overrides`` win over both.

        ``require_token=False`` is for command-line tools that never check a WeChat signature: a
        missing WECHAT_TOKEN is then no error and ``wechat_token`` is ``NO_TOKEN``
        (``has_token`` is False). Every other setting is checked as usual.
        """
        env = dict(os.environ if environ is None else environ)
        config_file = config_file or env.get("WECHAT_SURVEY_CONFIG")
        merged: dict[str, str] = {}
        if config_file:
            path = Path(config_file)
            if not path.is_file():
                raise ConfigError(f"config file {path} does not exist")
            merged.update(_read_env_file(path))
        merged.update({k: v for k, v in env.items() if k in ENV_VARS})
        kwargs: dict[str, Any] = {}
        for name, (field, kind) in ENV_VARS.items():
            if name not in merged:
                continue
            raw = merged[name]
            try:
                if kind is bool:
                    kwargs[field] = _parse_bool(name, raw)
                elif kind is Path:
                    kwargs[field] = Path(raw) if raw else None
                elif kind is str:
                    kwargs[field] = raw.strip()
                else:
                    kwargs[field] = kind(raw)
            except ValueError as e:
                if isinstance(e, ConfigError):
                    raise
                raise ConfigError(f"{name} has an invalid value {raw!r}") from e
        if kwargs.get("data_dir") is None:
            kwargs.pop("data_dir", None)
        kwargs.update(overrides)
        if not kwargs.get("wechat_token"):
            kwargs["wechat_token"] = "" if require_token else NO_TOKEN
        return cls(**kwargs)


_HOURS = re.compile(r"^([01]?[0-9]|2[0-3]):([0-5][0-9])\s*-\s*([01]?[0-9]|2[0-3]):([0-5][0-9])$")


def parse_quiet_hours(text: str) -> tuple[dt.time, dt.time] | None:
    """``"22:00-08:00"`` as (22:00, 08:00); ``""`` as None; ConfigError otherwise."""
    text = text.strip()
    if not text:
        return None
    match = _HOURS.match(text)
    if match is None:
        raise ConfigError(
            f"QUIET_HOURS must look like 22:00-08:00 (HH:MM-HH:MM in TIMEZONE) or be empty, "
            f"got {text!r}"
        )
    start = dt.time(int(match.group(1)), int(match.group(2)))
    end = dt.time(int(match.group(3)), int(match.group(4)))
    if start == end:
        raise ConfigError("QUIET_HOURS must not start and end at the same time")
    return start, end


def in_window(window: tuple[dt.time, dt.time], moment: dt.time) -> bool:
    """Whether ``moment`` falls in the daily ``window`` [start, end), which may cross midnight."""
    start, end = window
    if start < end:
        return start <= moment < end
    return moment >= start or moment < end


def http_server_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of ``tornado.httpserver.HTTPServer`` for the service (``serve`` uses them).

    ``idle_connection_timeout`` also bounds the time to send the request headers (Tornado's
    header timeout), so a client trickling its headers (slowloris) is cut off; ``body_timeout``
    does the same for the body. The /wechat handler enforces its own, smaller body limit (413).
    """
    return {
        "xheaders": settings.xheaders,
        "max_body_size": max(settings.max_body_bytes * 2, 8 * 1024 * 1024),
        "idle_connection_timeout": settings.idle_connection_timeout,
        "body_timeout": settings.body_timeout,
    }


def dev_secret(data_dir: Path, name: str) -> str:
    """A random secret kept under ``data_dir`` so it survives restarts (development mode only)."""
    path = data_dir / name
    if path.is_file():
        return path.read_text(encoding="utf-8").strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(24)
    path.write_text(value + "\n", encoding="utf-8")
    path.chmod(0o600)
    return value
