"""The custom menu: WeChat's rules for it, checked before ``python -m service menu push`` sends it.

``load_menu(path)`` reads a YAML file and returns it validated (``validate_menu``) or raises
``MenuError`` listing every problem; ``menu_keys(menu)`` lists its CLICK keys, which reach the bot
like typed keywords. The dashboard's menu editor and ``menu push`` share this validation;
``push_menu`` also keeps the last pushed menu (who, when) in MongoDB.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .store import Db
from .store import replies as menus_store

if TYPE_CHECKING:
    from .wechat_api import WeChatAPI

__all__ = [
    "MENU_KEY_BYTES",
    "MENU_MAX_BUTTONS",
    "MENU_MAX_SUB_BUTTONS",
    "MENU_NAME_BYTES",
    "MENU_SUB_NAME_BYTES",
    "MENU_TYPES",
    "MENU_URL_BYTES",
    "MenuError",
    "load_menu",
    "menu_from_wechat",
    "menu_issues",
    "menu_keys",
    "push_menu",
    "pushed_menu",
    "unclaimed_keys",
    "validate_menu",
]

MENU_MAX_BUTTONS = 3
MENU_MAX_SUB_BUTTONS = 5
MENU_NAME_BYTES = 16  # top-level: about 4 Chinese characters
MENU_SUB_NAME_BYTES = 60
MENU_KEY_BYTES = 128
MENU_URL_BYTES = 1024
# type -> the fields it needs (besides name); ``key`` types route like keywords (CLICK events).
MENU_TYPES: dict[str, tuple[str, ...]] = {
    "click": ("key",),
    "view": ("url",),
    "miniprogram": ("url", "appid", "pagepath"),
    "scancode_push": ("key",),
    "scancode_waitmsg": ("key",),
    "pic_sysphoto": ("key",),
    "pic_photo_or_album": ("key",),
    "pic_weixin": ("key",),
    "location_select": ("key",),
    "media_id": ("media_id",),
    "view_limited": ("media_id",),
    "article_id": ("article_id",),
    "article_view_limited": ("article_id",),
}


class MenuError(ValueError):
    """The menu breaks WeChat's rules; ``errors`` lists every problem with its place."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("invalid menu:\n  " + "\n  ".join(errors))


def _url_ok(value: str) -> bool:
    parsed = urllib.parse.urlsplit(value)
    return parsed.scheme in ("http", "https") and bool(parsed.netloc)


def _check_button(button: Any, where: str, *, top: bool, errors: list[str]) -> dict[str, Any]:
    if not isinstance(button, dict):
        errors.append(f"{where}: expected a mapping with name and type")
        return {}
    out: dict[str, Any] = {}
    name = button.get("name")
    limit = MENU_NAME_BYTES if top else MENU_SUB_NAME_BYTES
    if not isinstance(name, str) or not name.strip():
        errors.append(f"{where}.name: required")
    elif len(name.encode("utf-8")) > limit:
        errors.append(
            f"{where}.name: {name!r} is {len(name.encode('utf-8'))} bytes, at most {limit} "
            f"(UTF-8; a Chinese character is 3 bytes)"
        )
    else:
        out["name"] = name
    if "sub_button" in button:
        if not top:
            errors.append(f"{where}: a sub-button cannot have sub_button")
            return out
        extra = sorted(set(button) - {"name", "sub_button"})
        if extra:
            errors.append(f"{where}: a button with sub_button has only a name, not {extra}")
        subs = button["sub_button"]
        if not isinstance(subs, list) or not 1 <= len(subs) <= MENU_MAX_SUB_BUTTONS:
            errors.append(f"{where}.sub_button: 1 to {MENU_MAX_SUB_BUTTONS} sub-buttons")
            return out
        out["sub_button"] = [
            _check_button(sub, f"{where}.sub_button[{i}]", top=False, errors=errors)
            for i, sub in enumerate(subs)
        ]
        return out
    kind = button.get("type")
    if kind not in MENU_TYPES:
        errors.append(
            f"{where}.type: {kind!r} is not one of {', '.join(MENU_TYPES)} "
            "(or give sub_button instead)"
        )
        return out
    out["type"] = kind
    needed = MENU_TYPES[kind]
    extra = sorted(set(button) - {"name", "type", *needed})
    if extra:
        errors.append(f"{where}: unknown field(s) {extra} for type {kind}")
    for field in needed:
        value = button.get(field)
        if not isinstance(value, str) or not value.strip():
            errors.append(f"{where}.{field}: required for type {kind}")
            continue
        size = len(value.encode("utf-8"))
        if field == "key" and size > MENU_KEY_BYTES:
            errors.append(f"{where}.key: {size} bytes, at most {MENU_KEY_BYTES}")
        elif field == "url" and (size > MENU_URL_BYTES or not _url_ok(value)):
            errors.append(f"{where}.url: {value!r} must be an http(s) URL of at most 1024 bytes")
        out[field] = value
    return out


def validate_menu(menu: Any) -> dict[str, Any]:
    """Check a custom menu against WeChat's rules; return it cleaned, or raise ``MenuError``.

    Shape (WeChat's JSON, as YAML): ``button``: 1–3 buttons; each either ``name`` + ``type`` (+ the
    type's fields: ``key`` for click, ``url`` for view, ...) or ``name`` + ``sub_button`` (1–5).
    Names: at most 16 bytes on top, 60 below; keys at most 128 bytes; URLs http(s), 1024 bytes.
    A CLICK button's ``key`` reaches the bot like a typed keyword.
    """
    errors: list[str] = []
    if not isinstance(menu, dict):
        raise MenuError(["the menu must be a mapping with a 'button' list"])
    extra = sorted(set(menu) - {"button"})
    if extra:
        errors.append(f"unknown top-level field(s) {extra} (only 'button')")
    buttons = menu.get("button")
    if not isinstance(buttons, list) or not 1 <= len(buttons) <= MENU_MAX_BUTTONS:
        errors.append(f"button: 1 to {MENU_MAX_BUTTONS} top-level buttons")
        raise MenuError(errors)
    checked = [
        _check_button(button, f"button[{i}]", top=True, errors=errors)
        for i, button in enumerate(buttons)
    ]
    if errors:
        raise MenuError(errors)
    return {"button": checked}


def menu_issues(menu: Any) -> list[str]:
    """Every problem of ``menu`` (``[]``: WeChat takes it); the dashboard shows these."""
    try:
        validate_menu(menu)
    except MenuError as e:
        return e.errors
    return []


def menu_from_wechat(menu: dict[str, Any]) -> dict[str, Any]:
    """A menu as ``menu/get`` returns it, in the shape ``validate_menu`` takes: leaves carry no
    ``sub_button``, a parent no type; unknown fields are kept (validation names them)."""
    buttons = []
    for button in menu.get("button") or []:
        if not isinstance(button, dict):
            continue
        out = {k: v for k, v in button.items() if k != "sub_button"}
        subs = button.get("sub_button")
        if isinstance(subs, dict):  # some accounts' menu/get nests {"list": [...]}
            subs = subs.get("list")
        if subs:
            out = {"name": button.get("name", ""), "sub_button": []}
            for sub in subs:
                if isinstance(sub, dict):
                    out["sub_button"].append({k: v for k, v in sub.items() if k != "sub_button"})
        buttons.append(out)
    return {"button": buttons}


def menu_keys(menu: dict[str, Any]) -> list[str]:
    """The CLICK keys of a (validated) menu, in order."""
    keys: list[str] = []
    for button in menu.get("button", []):
        for item in button.get("sub_button", [button]):
            if item.get("type") == "click":
                keys.append(item["key"])
    return keys


def load_menu(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a menu YAML file (raises ``MenuError`` or ``OSError``)."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise MenuError([f"{path}: not valid YAML: {e}"]) from e
    return validate_menu(data)


def unclaimed_keys(menu: dict[str, Any], *, claims: Callable[[str], bool]) -> list[str]:
    """The CLICK keys of a menu nothing answers (``claims(key)``: a survey keyword, a command or
    a reply rule takes it); a click on one gets the "unknown" reply."""
    return [key for key in menu_keys(menu) if not claims(key)]


async def push_menu(db: Db, api: WeChatAPI, menu: Any, *, by: str) -> dict[str, Any]:
    """Validate (``MenuError`` with every problem), create it on WeChat (``WeChatAPIError``),
    and keep it as the last pushed menu with who pushed it and when."""
    from . import onboarding  # the first-run checklist's "menu pushed" step

    checked = validate_menu(menu)
    await api.create_menu(checked)
    await menus_store.save_pushed_menu(db, checked, by=by)
    await onboarding.record_menu_push(db, buttons=len(checked.get("button") or []))
    return checked


async def pushed_menu(db: Db) -> dict[str, Any] | None:
    """``{menu, pushed_at, pushed_by}`` of the last push (dashboard or CLI), or ``None``."""
    doc = await menus_store.get_pushed_menu(db)
    if doc is None:
        return None
    return {k: doc.get(k) for k in ("menu", "pushed_at", "pushed_by")}
