"""The engine against the real database, without HTTP: surveys that close or disappear while
people are answering, time windows, late retries, and racing start keywords."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from typing import Any

import pytest

from service.surveys import SHIPPED_DIR, SurveyEngine, load_dir, load_engine
from tests.survey_helpers import LAB_YAML, talk, text_message, write_surveys


@pytest.fixture
def surveys(tmp_path: Any) -> dict[str, Any]:
    folder = write_surveys(tmp_path / "surveys", lab=LAB_YAML)
    (folder / "baogan.yaml").write_bytes((SHIPPED_DIR / "baogan.yaml").read_bytes())
    return {s.id: s for s in load_dir(folder)}


def engine_with(surveys: dict[str, Any], **changes: Any) -> SurveyEngine:
    """The surveys with some changed, e.g. ``baogan={"open": False}``; None leaves one out."""
    out = []
    for survey_id, survey in surveys.items():
        if survey_id in changes and changes[survey_id] is None:
            continue
        out.append(dataclasses.replace(survey, **changes.get(survey_id, {})))
    return SurveyEngine(out)


@pytest.mark.gen_test(timeout=60)
async def test_ordinary_text_is_not_claimed(surveys, db, wechat):
    engine = engine_with(surveys)
    message = text_message(wechat, "someone", "在吗")
    assert await engine.handle_text(db, message, "在吗") is None
    assert await db.survey_sessions.count_documents({}) == 0


@pytest.mark.gen_test(timeout=60)
async def test_survey_closing_mid_way(surveys, db, wechat):
    engine = engine_with(surveys)
    await talk(engine, db, wechat, "late", "爆肝度调查", "1", "2")
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    closed = engine_with(surveys, baogan={"closes_at": past})

    notice = await talk(closed, db, wechat, "late", "3")
    assert notice == "「爆肝度调查」已经结束，你答过的 2 题都已保存。感谢参与！"
    doc = await db.survey_sessions.find_one({"_id": "baogan:late"})
    assert "active_user" not in doc and doc["paused"] is True and len(doc["answers"]) == 2
    # Afterwards the user chats normally; the keyword says when it ended.
    assert await talk(closed, db, wechat, "late", "3") == ""
    ended = await talk(closed, db, wechat, "late", "爆肝度调查")
    assert ended.startswith("「爆肝度调查」已于 ") and ended.endswith(" 结束，感谢关注。")
    assert "爆肝度调查" not in closed.start_hint() and "实验问卷" in closed.start_hint()


@pytest.mark.gen_test(timeout=60)
async def test_removed_survey_does_not_block_the_user(surveys, db, wechat):
    await talk(engine_with(surveys), db, wechat, "orphan", "实验问卷", "1")
    without_lab = engine_with(surveys, lab=None)
    assert await talk(without_lab, db, wechat, "orphan", "2") == ""  # not claimed: greeting
    assert "第 1/10 题" in await talk(without_lab, db, wechat, "orphan", "爆肝度调查")
    assert await db.survey_sessions.count_documents({"active_user": "orphan"}) == 1


@pytest.mark.gen_test(timeout=60)
async def test_time_windows_and_switched_off(surveys, db, wechat):
    soon = dt.datetime(2030, 12, 1, 1, 0, tzinfo=dt.UTC)
    engine = engine_with(surveys, baogan={"opens_at": soon}, lab={"open": False})
    assert await talk(engine, db, wechat, "early", "爆肝度调查") == (
        "「爆肝度调查」将于 2030-12-01 09:00 开放，敬请期待。"
    )
    assert await talk(engine, db, wechat, "early", "实验问卷") == "「实验问卷」暂未开放，感谢关注。"
    assert engine.start_hint() == ""
    assert await db.survey_sessions.count_documents({}) == 0


WINDOW_YAML = """\
    id: window
    title: 窗口问卷
    keywords: [窗口问卷]
    opens_at: 2030-12-01T09:00:00+08:00
    questions:
      - id: q1
        text: 好吗？
        options: [好, 不好]
"""


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize(
    ("timezone", "opens", "ended"),
    [
        ("Asia/Shanghai", "2030-12-01 09:00", "2026-01-01 12:30"),
        ("America/New_York", "2030-11-30 20:00", "2025-12-31 23:30"),
    ],
)
async def test_times_shown_to_respondents_use_the_owners_time_zone(
    settings, db, wechat, tmp_path, timezone, opens, ended
):
    """``load_engine(settings)`` threads ``Settings.timezone`` to what a respondent reads."""
    folder = write_surveys(tmp_path / "tz", window=WINDOW_YAML)
    engine = load_engine(settings.replace(timezone=timezone, surveys_dir=folder))
    assert await talk(engine, db, wechat, "early", "窗口问卷") == (
        f"「窗口问卷」将于 {opens} 开放，敬请期待。"
    )
    past = dt.datetime(2026, 1, 1, 4, 30, tzinfo=dt.UTC)  # 12:30 in Shanghai, 23:30 in New York
    closed = SurveyEngine(
        [dataclasses.replace(engine.surveys["window"], opens_at=None, closes_at=past)], tz=engine.tz
    )
    assert await talk(closed, db, wechat, "late", "窗口问卷") == (
        f"「窗口问卷」已于 {ended} 结束，感谢关注。"
    )


@pytest.mark.gen_test(timeout=60)
async def test_late_retry_after_a_newer_answer_changes_nothing(surveys, db, wechat):
    engine = engine_with(surveys)
    await talk(engine, db, wechat, "slow", "爆肝度调查")
    first = text_message(wechat, "slow", "1")
    reply_1 = await engine.handle_text(db, first, "1")
    await talk(engine, db, wechat, "slow", "2")
    # WeChat's retry of the first answer arrives after the second answer was applied.
    again = await engine.handle_text(db, first, "1")
    assert again == reply_1
    doc = await db.survey_sessions.find_one({"_id": "baogan:slow"})
    assert [a["value"] for a in doc["answers"]] == [1, 2] and doc["current"] == "sleep_hours"


@pytest.mark.gen_test(timeout=60)
async def test_racing_start_keywords_leave_one_survey_active(surveys, db, wechat):
    engine = engine_with(surveys)
    messages = [text_message(wechat, "racer", t) for t in ("爆肝度调查", "实验问卷")]
    replies = await asyncio.gather(*(engine.handle_text(db, m, m.content) for m in messages))
    assert await db.survey_sessions.count_documents({"active_user": "racer"}) == 1
    assert await db.survey_sessions.count_documents({"openid": "racer"}) == 1
    texts = sorted(r.content for r in replies if r is not None)
    assert len(texts) == 2
    assert sum("第 1/" in t and "你正在参加" not in t for t in texts) == 1
    assert sum(t.startswith("你正在参加") for t in texts) == 1


@pytest.mark.gen_test(timeout=60)
async def test_test_users_are_marked(surveys, db, wechat):
    engine = engine_with(surveys)
    await talk(engine, db, wechat, "sim-42", "爆肝度调查")
    await talk(engine, db, wechat, "real-42", "爆肝度调查")
    marks = {d["openid"]: d["test_user"] async for d in db.survey_sessions.find({})}
    assert marks == {"sim-42": True, "real-42": False}


@pytest.mark.gen_test(timeout=60)
async def test_what_might_be_a_survey_step_without_the_database(surveys, db, wechat):
    """During an outage the router greets ordinary chat and apologises for survey steps."""
    engine = engine_with(surveys)
    # A keyword or a command always is one; a short answer-like text from a stranger may be.
    for text in ("爆肝度调查", "退出", "3", "1,2", "b"):
        assert engine.might_claim("stranger", text), text
    for text in ("你好", "hello", "今天天气不错"):
        assert not engine.might_claim("stranger", text), text
    # A user this process saw chatting is known not to be in a survey...
    await talk(engine, db, wechat, "chatty", "在吗")
    assert not engine.might_claim("chatty", "2")
    # ...and one it saw in a survey is, whatever they send next.
    await talk(engine, db, wechat, "busy-bee", "爆肝度调查", "1")
    assert engine.might_claim("busy-bee", "今天天气不错")
