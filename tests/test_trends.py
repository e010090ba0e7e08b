"""The overview's trend: messages, new followers and completions per day in ``TIMEZONE``."""

from __future__ import annotations

import datetime as dt

import pytest

from service.store import messages
from tests.test_dashboard_api import answer_survey, message_doc, seeded  # noqa: F401


@pytest.mark.gen_test(timeout=60)
async def test_trends_count_each_local_day(logged_in, seeded):  # noqa: F811
    week = await logged_in.get_json("/api/trends", days=7)
    assert week["days"] == 7 and len(week["items"]) == 7
    today, yesterday = week["items"][-1], week["items"][-2]
    # Today: alice ×2 and bob's follow (sim-x is a test user); yesterday: carol, dave leaves.
    assert (today["messages"], today["follows"], today["unfollows"]) == (3, 1, 0)
    assert (yesterday["messages"], yesterday["follows"], yesterday["unfollows"]) == (2, 0, 1)
    assert sum(d["messages"] for d in week["items"]) == 5  # erin's, 8 days ago, is outside
    month = await logged_in.get_json("/api/trends", days=30)
    assert len(month["items"]) == 30 and sum(d["messages"] for d in month["items"]) == 6
    dates = [d["date"] for d in month["items"]]
    assert dates == sorted(dates) and len(set(dates)) == 30
    with_test = await logged_in.get_json("/api/trends", days=7, test=1)
    assert with_test["items"][-1]["messages"] == 4


@pytest.mark.gen_test(timeout=60)
async def test_trends_count_completions_per_day(logged_in, send, wechat, db):
    await answer_survey(send, wechat, "u-done", ["1"] * 10)
    await answer_survey(send, wechat, "u-half", ["2"] * 3)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
    assert await messages.insert_once(db, message_doc("msg:old", "u-old", old)) is None
    items = (await logged_in.get_json("/api/trends", days=7))["items"]
    assert items[-1]["completions"] == 1
    assert sum(d["completions"] for d in items) == 1
    assert items[-1]["messages"] == 1 + 10 + 1 + 3  # the keyword and the answers
