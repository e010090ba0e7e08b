"""The first-run checklist: what a new owner still has to do to connect the account.

Every step reads real state, never a flag the dashboard sets for itself:

- ``handshake``: WeChat's GET to ``/wechat`` passed the signature check (``record_handshake``,
  called by the endpoint, stores when);
- ``first_message``: a message from a real (non-simulator) user is stored;
- ``api``: WECHAT_APP_ID and WECHAT_APP_SECRET are set and an access_token was fetched with them
  (``check_api`` fetches one on the owner's request);
- ``survey``: a survey is available to respondents (today: loaded from the survey definitions);
- ``menu``: ``python -m service menu push`` created the custom menu (``record_menu_push``).

``checklist`` answers the steps in that order with what completes each one; the dashboard renders
them. No HTTP in here.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from .config import Settings
from .store import dashboard as dashboard_store
from .store import tokens
from .surveys import Survey
from .wechat_api import WeChatAPI, WeChatAPIError

__all__ = [
    "HANDSHAKE",
    "MENU_PUSHED",
    "STEPS",
    "check_api",
    "checklist",
    "record_handshake",
    "record_menu_push",
]

log = logging.getLogger(__name__)

Db = AsyncDatabase[dict[str, Any]]

HANDSHAKE = "handshake_verified"
MENU_PUSHED = "menu_pushed"
STEPS = ("handshake", "first_message", "api", "survey", "menu")


async def record_handshake(db: Db, *, mode: str) -> None:
    """WeChat's GET handshake passed the signature check (the endpoint calls this)."""
    await tokens.set_setting(db, HANDSHAKE, True, message_mode=mode)


async def record_menu_push(db: Db, *, buttons: int) -> None:
    """``menu push`` created the custom menu with ``buttons`` top-level buttons."""
    await tokens.set_setting(db, MENU_PUSHED, True, buttons=buttons)


async def check_api(api: WeChatAPI | None) -> dict[str, Any]:
    """Fetch (or reuse) an access_token: ``{"ok": True}`` or ``{"ok": False, "error": ...}``."""
    if api is None:
        return {"ok": False, "error": "WECHAT_APP_ID and WECHAT_APP_SECRET are not set"}
    try:
        await api.access_token()
    except WeChatAPIError as e:
        return {"ok": False, "error": str(e)}
    return {"ok": True}


def _when(doc: dict[str, Any] | None) -> dt.datetime | None:
    if not doc or not doc.get("value"):
        return None
    value = doc.get("updated_at")
    return value if isinstance(value, dt.datetime) else None


async def checklist(
    db: Db, settings: Settings, surveys: Sequence[Survey], *, endpoint_url: str
) -> dict[str, Any]:
    """The steps, each ``{"id", "done", "at", ...details}``, and ``complete`` when all are done.

    ``endpoint_url`` is the URL WeChat must call (the dashboard knows the host it is served on).
    """
    handshake = await tokens.get_setting(db, HANDSHAKE)
    first = await dashboard_store.first_message(db, include_test=False)
    token = await tokens.load_token(db, settings.app_id) if settings.app_id else None
    menu = await tokens.get_setting(db, MENU_PUSHED)
    credentials = bool(settings.app_id and settings.app_secret)
    steps: list[dict[str, Any]] = [
        {
            "id": "handshake",
            "done": _when(handshake) is not None,
            "at": _when(handshake),
            "url": endpoint_url,
            "token": settings.wechat_token if settings.has_token else "",
            "encoding_aes_key": settings.encoding_aes_key,
            "message_mode": settings.effective_message_mode,
        },
        {
            "id": "first_message",
            "done": first is not None,
            "at": first.get("received_at") if first else None,
        },
        {
            "id": "api",
            "done": credentials and token is not None,
            "at": dt.datetime.fromtimestamp(token.fetched_at, dt.UTC) if token else None,
            "credentials": credentials,
            "app_id": settings.app_id,
        },
        {
            "id": "survey",
            "done": bool(surveys),
            "at": None,
            "surveys": [{"id": s.id, "title": s.title} for s in surveys],
        },
        {
            "id": "menu",
            "done": _when(menu) is not None,
            "at": _when(menu),
            "command": "python -m service menu push deploy/menu.example.yaml",
        },
    ]
    return {"steps": steps, "complete": all(step["done"] for step in steps)}
