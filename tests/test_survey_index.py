"""The survey page's numbers counted in memory (service.survey_index) equal the database's
aggregation on every filter, and follow new answers, channels, retakes and deletions.

Respondents answer through the real /wechat (the lab survey of tests/test_survey_analysis.py);
both counts read the same real database.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from service import privacy
from service.reports import parse_filters
from service.store import surveys as store
from service.survey_index import SurveyIndex
from tests.survey_helpers import Chat
from tests.test_survey_analysis import app_extra, seeded  # noqa: F401 - the same fixtures


class Values(dict[str, str]):
    def get_default(self, name: str) -> str:
        return self.get(name, "")


FILTERS = [
    Values({}),
    Values({"channel": "poster-a"}),
    Values({"state": "finished"}),
    Values({"state": "in_progress"}),
    Values({"state": "paused"}),
    Values({"from": "2026-11-21"}),
    Values({"to": "2026-11-20"}),
    Values({"band": "high"}),
    Values({"answered": "fruit:1"}),
    Values({"answered": "fruit:1,coffee:1", "channel": "poster-b"}),
    Values({"state": "finished", "band": "low", "channel": "poster-a"}),
]


def lab(app: Any) -> Any:
    return next(s for s in app.settings["surveys"].all_surveys() if s.id == "lab")


async def both(db: Any, index: SurveyIndex, survey: Any, **kw: Any) -> tuple[Any, Any]:
    expected = await store.report_numbers(db, survey, **kw)
    counted = await index.report_numbers(db, survey, **kw)
    return expected, counted


@pytest.mark.gen_test(timeout=120)
async def test_in_memory_numbers_equal_the_aggregation_on_every_filter(app, db, seeded):  # noqa: F811
    survey = lab(app)
    index = SurveyIndex()
    for values in FILTERS:
        filters = parse_filters(survey, values.get_default)
        for include_test in (False, True):
            expected, counted = await both(
                db, index, survey, filters=filters, include_test_users=include_test
            )
            assert counted == expected, values
    for versions in ([1], [2], [1, 2]):
        expected, counted = await both(db, index, survey, versions=versions)
        assert counted == expected, versions
    expected, counted = await both(db, index, survey, timezone="America/New_York")
    assert counted == expected
    # the cross-tab's cells, every pair of the lab's questions (choice, rating, number, text)
    ids = [q.id for q in survey.questions]
    for values in FILTERS[:3]:
        filters = parse_filters(survey, values.get_default)
        for row in ids:
            # A question crossed with itself is left out: SecantusDB's two $unwind of one
            # projected array share it (a multiple answer [1, 2] gives only 1×1 and 2×2).
            for column in (c for c in ids if c != row):
                want = await store.crosstab_counts(db, survey, row, column, filters=filters)
                got = await index.crosstab_counts(db, survey, row, column, filters=filters)
                assert got["respondents"] == want["respondents"], (row, column)
                assert sorted(got["cells"], key=repr) == sorted(want["cells"], key=repr)
    assert expected["funnel"]["started"] == 5 and expected["funnel"]["finished"] == 4


@pytest.mark.gen_test(timeout=120)
async def test_in_memory_numbers_follow_answers_channels_and_deletions(
    app,
    db,
    send,
    wechat,
    seeded,  # noqa: F811
):
    survey = lab(app)
    index = SurveyIndex()
    first = await index.report_numbers(db, survey)
    assert first["funnel"]["finished"] == 4
    # d finishes; a newcomer starts; a channel is recorded the way a QR scan records it
    d = Chat(send, wechat, "d")
    for text in ("1", "3", "还行"):
        await d.say(text)
    await Chat(send, wechat, "f").say("实验问卷")
    await store.set_channel(db, "lab", "f", "poster-c")
    expected, counted = await both(db, index, survey)
    assert counted == expected
    assert counted["funnel"]["started"] == 6 and counted["funnel"]["finished"] == 5
    assert {c["channel"] for c in counted["channels"]} >= {"poster-c"}
    # a respondent's data deleted, and the test users' sessions wiped: the index reads again
    await privacy.delete_for_owner(db, "a", owner="owner")
    expected, counted = await both(db, index, survey)
    assert counted == expected and counted["funnel"]["started"] == 5
    await Chat(send, wechat, f"{store.TEST_OPENID_PREFIX}x").say("实验问卷")
    expected, counted = await both(db, index, survey, include_test_users=True)
    assert counted == expected and counted["funnel"]["started"] == 6
    await store.delete_test_data(db, "lab")
    expected, counted = await both(db, index, survey, include_test_users=True)
    assert counted == expected and counted["funnel"]["started"] == 5


@pytest.mark.gen_test(timeout=120)
async def test_a_write_stamped_by_a_slower_clock_is_still_read(app, db, seeded):  # noqa: F811
    """Another process's clock a little behind ours: its write's ``changed_at`` is older than
    the newest seen, and is still read (the index reads a minute before the newest)."""
    survey = lab(app)
    index = SurveyIndex()
    await index.report_numbers(db, survey)
    behind = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=20)
    await db.survey_sessions.update_one(
        {"_id": "lab:b"}, {"$set": {"channel": "poster-z", "changed_at": behind}}
    )
    expected, counted = await both(db, index, survey)
    assert counted == expected
    assert any(c["channel"] == "poster-z" for c in counted["channels"])


@pytest.mark.gen_test(timeout=120)
async def test_the_dashboard_counts_in_memory(app, logged_in, db, db_counter, seeded):  # noqa: F811
    """The survey page asks the database for the changes only, not for an aggregation."""

    def aggregations() -> int:
        return int(db_counter.snapshot()["by_command"].get("aggregate", 0))

    before = aggregations()
    report = await logged_in.get_json("/api/surveys/lab", channel="poster-a")
    assert report["funnel"]["started"] == 2
    listing = await logged_in.get_json("/api/surveys")
    assert next(i for i in listing["items"] if i["id"] == "lab")["finished"] == 4
    table = await logged_in.get_json("/api/surveys/lab/crosstab", rows="fruit", columns="coffee")
    assert table["respondents"] == 4
    assert aggregations() == before  # (the overview aggregates the messages, not the sessions)
    overview = await logged_in.get_json("/api/overview")
    assert overview["surveys"]["finished"] == 4


@pytest.mark.gen_test(timeout=120)
async def test_in_memory_numbers_follow_reminders_and_expiry(app, db, seeded):  # noqa: F811
    """The reminders' writes and expiry leave ``updated_at`` (the last step) alone; the index
    still sees them (``changed_at``)."""
    survey = lab(app)
    index = SurveyIndex()
    await index.report_numbers(db, survey)
    doc = await db.survey_sessions.find_one({"_id": "lab:d"})
    assert await store.claim_reminder(db, doc, {"status": "sending", "at": doc["updated_at"]})
    await store.settle_reminder(db, "lab:d", {"status": "sent"})
    expected, counted = await both(db, index, survey)
    assert counted == expected and counted["funnel"]["reminders"]["reminded"] == 1
    now = dt.datetime.now(dt.UTC)
    assert await store.expire_idle(db, "lab", now, now) == 1
    expected, counted = await both(db, index, survey)
    assert counted == expected and counted["funnel"]["expired"] == 1
