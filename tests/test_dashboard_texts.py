"""The dashboard's words: message types and events as labels in both languages, a message's
detail without the Chinese log tags, and the owner's one remembered "include test users"."""

from __future__ import annotations

import json
import re

import pytest

import dashboard
from dashboard.i18n import EVENT_LABELS, TYPE_LABELS, Translations
from service.bot import SILENT_EVENTS
from service.store import dashboard as dash_store
from service.store import owners
from tests.dashboard_fixtures import OWNER, Session


def test_every_type_and_event_the_service_knows_has_a_label():
    assert set(dash_store.MESSAGE_TYPES) <= set(TYPE_LABELS)
    assert {"subscribe", "unsubscribe", "click", "scan"} | SILENT_EVENTS <= set(EVENT_LABELS)
    translations = Translations(dashboard.TRANSLATION_DIR, dashboard.STATIC_DIR)
    zh = translations.labels(translations.get("zh"))
    en = translations.labels(translations.get("en"))
    assert zh["events"]["subscribe"] == "关注" and en["events"]["subscribe"] == "Follow"
    assert zh["types"]["image"] == "图片" and en["types"]["image"] == "Image"
    # The translated labels reach the scripts (they are data, not t("...") literals).
    assert translations.for_js(translations.get("zh"))["Menu click"] == "菜单点击"


@pytest.mark.parametrize(
    ("doc", "detail"),
    [
        ({"type": "text", "text": "[不是标签] 你好"}, "[不是标签] 你好"),
        ({"type": "image", "text": "[图片]"}, ""),
        ({"type": "location", "text": "[位置] 广州 (23.1, 113.2)"}, "广州 (23.1, 113.2)"),
        ({"type": "voice", "text": "[语音] 你好"}, "你好"),
        ({"type": "event", "event": "subscribe", "text": "[事件] subscribe"}, ""),
        (
            {"type": "event", "event": "click", "text": "[事件] click survey_baogan"},
            "survey_baogan",
        ),
    ],
)
def test_a_message_detail_drops_the_log_tag(doc, detail):
    assert dash_store.message_detail(doc) == detail


@pytest.mark.gen_test
async def test_message_types_are_labelled_in_the_pages_language(logged_in):
    english = (await logged_in.get("/dashboard/messages", lang="en")).body.decode()
    assert '<option value="shortvideo">Short video</option>' in english
    chinese = (await logged_in.get("/dashboard/live", lang="zh")).body.decode()
    assert '<option value="event">事件</option>' in chinese
    labels = re.search(r'data-labels="([^"]+)"', chinese)
    assert labels and "取消关注" in labels.group(1)


@pytest.mark.gen_test
async def test_include_test_users_is_one_choice_remembered_for_the_owner(logged_in, db):
    pages = [
        "/dashboard/",
        "/dashboard/live",
        "/dashboard/users",
        "/dashboard/surveys",
        "/dashboard/surveys/baogan",
        "/dashboard/messages",
    ]
    box = re.compile(r"<input[^>]*data-preference=\"include_test\"[^>]*>")

    async def boxes() -> list[str]:
        found = []
        for page in pages:
            html = (await logged_in.get(page)).body.decode()
            found += box.findall(html)
        return found

    before = await boxes()
    assert len(before) == len(pages)
    assert not any(" checked" in b for b in before)  # hidden by default, everywhere
    response = await logged_in.post_json("/api/preferences", {"include_test": True})
    assert response.code == 200
    assert owners.preference(await owners.get(db, OWNER), "include_test") is True
    assert all(" checked" in b for b in await boxes())

    for bad in ({"include_test": "yes"}, {"colour": True}, [True]):
        refused = await logged_in.post_json("/api/preferences", bad)
        assert refused.code == 400, bad
        assert json.loads(refused.body)["error"]


@pytest.mark.gen_test
async def test_preferences_need_login_and_xsrf(http_client, base_url, logged_in):
    anonymous = Session(http_client, base_url)
    assert (await anonymous.post_json("/api/preferences", {"include_test": True})).code == 403
    no_xsrf = await logged_in.post_json("/api/preferences", {"include_test": True}, xsrf=False)
    assert no_xsrf.code == 403


def test_each_text_is_translated_once():
    """Two branches once translated "In progress" twice (进行中, 作答中): the later row won
    silently and a page changed its words."""
    import collections
    import csv
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "dashboard" / "translations" / "zh_CN.csv"
    with path.open(encoding="utf-8") as f:
        keys = [row[0] for row in csv.reader(f) if row]
    twice = [key for key, n in collections.Counter(keys).items() if n > 1]
    assert twice == []
