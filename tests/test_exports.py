"""CSV exports as a spreadsheet user gets them: headers and states in the page's language, local
times Excel reads as dates, the page's filters; ``header=keys`` for tools."""

from __future__ import annotations

import csv
import io
import re

import pytest

from tests.test_dashboard_api import answer_survey, seeded  # noqa: F401 - fixtures

SPREADSHEET_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


def table(response) -> list[list[str]]:
    assert response.code == 200, response.body[:300]
    assert response.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in response.headers["Content-Disposition"]
    assert response.body.startswith(b"\xef\xbb\xbf")  # the BOM Excel needs for UTF-8
    return list(csv.reader(io.StringIO(response.body.decode("utf-8-sig"))))


@pytest.fixture
def answers(io_loop, send, wechat, app):
    async def run():
        await answer_survey(send, wechat, "u-low", ["1"] * 10)
        await answer_survey(send, wechat, "u-mid", ["2"] * 3)
        await app.settings["users"].flush()

    io_loop.run_sync(run, timeout=120)


@pytest.mark.gen_test(timeout=60)
async def test_survey_export_speaks_the_pages_language(logged_in, answers):
    zh = table(await logged_in.get("/dashboard/surveys/baogan/export.csv", lang="zh"))
    assert zh[0][:7] == [
        "openid",
        "状态",
        "第几次",
        "开始时间 (Asia/Shanghai)",
        "完成时间 (Asia/Shanghai)",
        "得分",
        "结果",
    ]
    low = next(r for r in zh if r[0] == "u-low")
    mid = next(r for r in zh if r[0] == "u-mid")
    assert low[1] == "已完成" and mid[1] == "进行中"
    assert SPREADSHEET_TIME.fullmatch(low[3]) and SPREADSHEET_TIME.fullmatch(low[4])
    assert mid[4] == ""
    en = table(await logged_in.get("/dashboard/surveys/baogan/export.csv", lang="en"))
    assert en[0][1:4] == ["State", "Attempt", "Started at (Asia/Shanghai)"]
    assert next(r for r in en if r[0] == "u-mid")[1] == "In progress"
    keys = table(await logged_in.get("/dashboard/surveys/baogan/export.csv", header="keys"))
    assert keys[0][:4] == ["openid", "state", "attempt", "started_at"]
    assert next(r for r in keys if r[0] == "u-low")[3].endswith("+08:00")


@pytest.mark.gen_test(timeout=60)
async def test_users_export_takes_the_pages_filters(logged_in, seeded):  # noqa: F811
    everyone = table(await logged_in.get("/dashboard/users/export.csv", lang="en"))
    header, rows = everyone[0], everyone[1:]
    assert header[:7] == [
        "openid",
        "Nickname",
        "First seen (Asia/Shanghai)",
        "Last seen (Asia/Shanghai)",
        "Messages",
        "Subscribed",
        "Test user",
    ]
    assert header[7] == "爆肝度调查"  # one column per survey: its title
    assert {r[0] for r in rows} == {"alice", "bob", "carol", "dave", "erin", "sim-x"}
    alice = next(r for r in rows if r[0] == "alice")
    assert alice[4] == "2" and SPREADSHEET_TIME.fullmatch(alice[2]) and alice[7] == "Not started"
    assert next(r for r in rows if r[0] == "bob")[5] == "yes"
    filtered = table(await logged_in.get("/dashboard/users/export.csv", q="ALI", test="0"))
    assert [r[0] for r in filtered[1:]] == ["alice"]
    real = table(await logged_in.get("/dashboard/users/export.csv", test="0"))
    assert "sim-x" not in {r[0] for r in real[1:]}


@pytest.mark.gen_test(timeout=60)
async def test_messages_export_takes_the_pages_filters(logged_in, seeded):  # noqa: F811
    zh = table(await logged_in.get("/dashboard/messages/export.csv", lang="zh"))
    assert zh[0][:3] == ["时间 (Asia/Shanghai)", "类型", "openid"]
    assert len(zh) == 1 + 7
    follow = next(r for r in zh if r[2] == "bob")
    assert follow[1] == "关注" and follow[3] == ""  # a label, not "[事件] subscribe"
    assert all(SPREADSHEET_TIME.fullmatch(r[0]) for r in zh[1:])
    en = table(await logged_in.get("/dashboard/messages/export.csv", lang="en", type="event"))
    assert sorted(r[1] for r in en[1:]) == ["Follow", "Unfollow"]
    assert not any(re.search(r"[\u3400-\u9fff]", cell) for cell in en[0])
    only = table(await logged_in.get("/dashboard/messages/export.csv", q="早上", test="0"))
    assert [r[3] for r in only[1:]] == ["早上好"]
    keys = table(await logged_in.get("/dashboard/messages/export.csv", header="keys"))
    assert keys[0] == [
        "received_at",
        "type",
        "openid",
        "message",
        "reply",
        "latency_ms",
        "test_user",
    ]
    assert "event:subscribe" in {r[1] for r in keys[1:]}
    bad = await logged_in.get("/dashboard/messages/export.csv", type="nonsense")
    assert bad.code == 400


@pytest.mark.gen_test
async def test_exports_need_login(session):
    for path in ("/dashboard/users/export.csv", "/dashboard/messages/export.csv"):
        response = await session.fetch(path)
        assert response.code == 302 and "/dashboard/login" in response.headers["Location"]
