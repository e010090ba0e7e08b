"""Dashboard translations: zh-CN by default, English selectable.

Texts are written in English in the templates (``_("Overview")``) and in the JavaScript modules
(``t("Paused")``); ``translations/zh_CN.csv`` maps each to Chinese, in Tornado's CSV locale format
(``"English","中文"``). The English locale is the identity. Each page receives, as JSON, the
translations of the strings its scripts use, found by scanning ``static/js/`` at start-up.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import tornado.locale

__all__ = [
    "DEFAULT",
    "EVENT_LABELS",
    "LANGUAGES",
    "TYPE_LABELS",
    "Translations",
    "js_strings",
    "label_strings",
    "template_strings",
]

DEFAULT = "zh_CN"
# Cookie / ?lang= value -> Tornado locale code, in the order the switcher shows them.
LANGUAGES = {"zh": "zh_CN", "en": "en_US"}
LANGUAGE_NAMES = {"zh": "中文", "en": "English"}

# What the dashboard calls WeChat's message types (MsgType) and events (Event, lower-cased), in
# English; the catalogue translates them like any other text. An event not listed is shown as
# "Event: <name>".
TYPE_LABELS = {
    "text": "Text",
    "image": "Image",
    "voice": "Voice",
    "video": "Video",
    "shortvideo": "Short video",
    "location": "Location",
    "link": "Link",
    "event": "Event",
}
EVENT_LABELS = {
    "subscribe": "Follow",
    "subscribe_scan": "Follow (QR code)",
    "unsubscribe": "Unfollow",
    "click": "Menu click",
    "view": "Menu link",
    "view_miniprogram": "Menu mini program",
    "scan": "QR code scan",
    "location": "Location report",
    "templatesendjobfinish": "Template message sent",
    "masssendjobfinish": "Mass message sent",
    "scancode_push": "Menu scan",
    "scancode_waitmsg": "Menu scan",
    "pic_sysphoto": "Menu photo",
    "pic_photo_or_album": "Menu photo",
    "pic_weixin": "Menu photo",
    "location_select": "Menu location",
}


def label_strings() -> list[str]:
    """Every type and event label and every CSV export's column and state name (they reach the
    pages and files as data, not as ``_()``/``t()`` literals)."""
    from .exports import EXPORT_STRINGS

    return sorted(
        {*TYPE_LABELS.values(), *EVENT_LABELS.values(), "Event: %(name)s", *EXPORT_STRINGS}
    )


_JS_CALL = re.compile(r"""\bt\(\s*(["'])((?:(?!\1).)+)\1""")
_TEMPLATE_CALL = re.compile(r"""\b_\(\s*(["'])((?:(?!\1).)+)\1""")


def js_strings(static_dir: Path) -> list[str]:
    """Every ``t("...")`` literal in ``static/js/*.js``."""
    found: set[str] = set()
    for path in sorted((static_dir / "js").glob("*.js")):
        found.update(m.group(2) for m in _JS_CALL.finditer(path.read_text(encoding="utf-8")))
    return sorted(found)


def template_strings(template_dir: Path) -> list[str]:
    """Every ``_("...")`` literal in the templates."""
    found: set[str] = set()
    for path in sorted(template_dir.glob("*.html")):
        found.update(m.group(2) for m in _TEMPLATE_CALL.finditer(path.read_text(encoding="utf-8")))
    return sorted(found)


class Translations:
    """The loaded locales and the JavaScript strings; one instance in the application settings."""

    def __init__(self, directory: Path, static_dir: Path) -> None:
        self.catalogs: dict[str, dict[str, str]] = {"en_US": {}}
        for path in sorted(directory.glob("*.csv")):
            with path.open(encoding="utf-8", newline="") as f:
                catalog = {row[0]: row[1] for row in csv.reader(f) if len(row) >= 2 and row[0]}
            self.catalogs[path.stem] = catalog
        self.locales = {
            code: tornado.locale.CSVLocale(code, {"unknown": catalog})
            for code, catalog in self.catalogs.items()
        }
        self.js_keys = sorted({*js_strings(static_dir), *label_strings()})

    def get(self, lang: str) -> tornado.locale.Locale:
        """The locale for a ``lang`` value (``zh`` or ``en``); unknown values get the default."""
        return self.locales.get(LANGUAGES.get(lang, DEFAULT), self.locales[DEFAULT])

    def for_js(self, locale: tornado.locale.Locale) -> dict[str, str]:
        return {key: locale.translate(key) for key in self.js_keys}

    def labels(self, locale: tornado.locale.Locale) -> dict[str, dict[str, str]]:
        """Type and event labels in ``locale`` (templates' filters; pages' ``data-labels``)."""
        return {
            "types": {k: locale.translate(v) for k, v in TYPE_LABELS.items()},
            "events": {k: locale.translate(v) for k, v in EVENT_LABELS.items()},
        }

    def missing(self, keys: list[str], code: str = DEFAULT) -> list[str]:
        catalog = self.catalogs.get(code, {})
        return [key for key in keys if key not in catalog]
