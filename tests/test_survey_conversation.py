"""The 爆肝度调查 (and a second survey) through the real ``/wechat`` endpoint, in plaintext and
safe mode: start, invalid answers, pause/resume, finish, result, already taken, restarts, retries,
concurrent answers, and the number of database round trips per message."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from service.bot import GREETINGS, UNKNOWN_TEXT
from service.surveys import SHIPPED_DIR, SurveyEngine, load_dir
from service.surveys.engine import ALREADY_TAKEN
from tests.survey_helpers import BAOGAN_IDS, LAB_YAML, Chat, TracingCounter, write_surveys

# Option numbers chosen in the main conversation and the score they add up to:
# bedtime 1, late_nights 2, sleep_hours 0, alarm 3, phone 1, reason (option 4) 3,
# caffeine 0, daytime 1, weekend 2, all_nighter 1 → 14 → 中度爆肝.
PICKS = ["2", "3", "1", "4", "2", "4", "1", "2", "3", "2"]


@pytest.fixture
def app_extra(tmp_path: Any) -> dict[str, Any]:
    folder = write_surveys(tmp_path / "surveys", lab=LAB_YAML)
    (folder / "baogan.yaml").write_text(
        (SHIPPED_DIR / "baogan.yaml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    return {"surveys": SurveyEngine(load_dir(folder))}


@pytest.fixture
def db_counter() -> TracingCounter:
    return TracingCounter()


def chat(send: Any, wechat: Any, openid: str, mode: str = "plain") -> Chat:
    return Chat(send, wechat, openid, mode)


async def session(db: Any, openid: str, survey: str = "baogan") -> Any:
    """The stored session document, or None (typed Any: tests index it directly)."""
    return await db.survey_sessions.find_one({"_id": f"{survey}:{openid}"})


@pytest.mark.gen_test(timeout=90)
@pytest.mark.parametrize("mode", ["plain", "aes"])
async def test_whole_conversation(send, wechat, db, app, mode):
    user = chat(send, wechat, f"user-{mode}", mode)

    assert await user.say("你好") in GREETINGS
    assert await session(db, user.openid) is None

    first = await user.say("爆肝度调查")
    assert first.startswith("欢迎参加「爆肝度调查」！")
    assert "第 1/10 题：最近一个月，你通常几点睡觉？" in first
    assert "1. 晚上 11 点以前\n2. 11 点到 12 点之间" in first

    # Junk: explained, the same question again, nothing stored.
    for junk in ("5", "好的", "1 2"):
        reply = await user.say(junk)
        assert "请回复选项前的数字 1–4" in reply
        assert "第 1/10 题" in reply
    assert (await session(db, user.openid))["answers"] == []

    assert "第 2/10 题：过去一周" in await user.say("２")  # full-width digit
    assert "第 3/10 题" in await user.say(PICKS[1] + "。")  # trailing Chinese full stop

    # Pause, chat in between (greeting), resume where we stopped.
    paused = await user.say("退出")
    assert "已暂停「爆肝度调查」（已答 2/10 题）" in paused
    assert "回复「爆肝度调查」" in paused and "第 3 题" in paused
    assert await user.say("3") in GREETINGS  # no survey in progress: not an answer
    doc = await session(db, user.openid)
    assert doc["paused"] is True and "active_user" not in doc and doc["current"] == "sleep_hours"

    resumed = await user.say("爆肝度调查")
    assert resumed.startswith("欢迎回来！")
    assert "第 3/10 题：上课或上班的日子" in resumed

    replies = [await user.say(pick) for pick in PICKS[2:]]
    for position, reply in enumerate(replies[:-1], start=4):
        assert f"第 {position}/10 题" in reply
    final = replies[-1]
    assert final.startswith("「爆肝度调查」答完啦，感谢参与！")
    assert "你的得分：14 分（满分 30 分）" in final
    assert "结果：中度爆肝" in final
    assert "该早点睡了" in final

    doc = await session(db, user.openid)
    assert doc["state"] == "finished"
    assert [a["q"] for a in doc["answers"]] == BAOGAN_IDS
    assert [a["value"] for a in doc["answers"]] == [int(p) for p in PICKS]
    assert doc["score"] == 14 and doc["result"]["band"] == "moderate"
    assert doc["finished_at"] >= doc["started_at"]
    assert "active_user" not in doc

    # Already taken: the seed's message plus the result, for the keyword and for 重新开始.
    for text in ("爆肝度调查", "重新开始"):
        again = await user.say(text)
        assert again.startswith(ALREADY_TAKEN)
        assert "结果：中度爆肝" in again and "14 分" in again
    assert await user.say("1") in GREETINGS
    assert (await session(db, user.openid))["answers"] == doc["answers"]
    stored = await db.messages.count_documents({"openid": user.openid})
    assert stored == user.sent == 21  # every message stored once


@pytest.mark.gen_test(timeout=60)
async def test_subscribe_welcome_tells_how_to_start(send, wechat, app):
    user = chat(send, wechat, "newcomer")
    welcome = await user.post(wechat.event("newcomer", "subscribe"))
    assert "回复「爆肝度调查」开始爆肝度调查" in welcome
    assert "回复「实验问卷」开始实验问卷" in welcome


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("mode", ["plain", "aes"])
@pytest.mark.parametrize("step", ["start", "answer", "finish"])
async def test_retries_of_one_message_apply_once(send, wechat, db, app, step, mode):
    """WeChat's three retries of one MsgId, concurrently: one stored message, one advance,
    identical replies; a later retry changes nothing either."""
    user = chat(send, wechat, f"retry-{step}-{mode}", mode)
    if step != "start":
        await user.say("爆肝度调查")
        answers = 1 if step == "answer" else 9
        for pick in PICKS[:answers]:
            await user.say(pick)
    before = await session(db, user.openid)
    text = "爆肝度调查" if step == "start" else "3"
    xml = user.xml(text, msg_id=wechat.new_msg_id())

    replies = await asyncio.gather(*(user.post(xml) for _ in range(3)))
    assert len(set(replies)) == 1, replies
    if step == "start":
        assert "第 1/10 题" in replies[0]
    elif step == "answer":
        assert "第 3/10 题" in replies[0]
    else:
        assert "答完啦" in replies[0]
    assert await user.post(xml) == replies[0]  # a late retry, after the others finished

    after = await session(db, user.openid)
    expected_answers = 0 if before is None else len(before["answers"]) + 1
    assert len(after["answers"]) == expected_answers
    assert after["v"] == (1 if before is None else before["v"] + 1)
    key = "msg:" + xml.split("<MsgId>")[1].split("</MsgId>")[0]
    assert await db.messages.count_documents({"_id": key}) == 1
    assert [r["k"] for r in after["recent"]].count(key) == 1


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("mode", ["plain", "aes"])
async def test_concurrent_different_answers_do_not_corrupt_state(send, wechat, db, app, mode):
    user = chat(send, wechat, f"hasty-{mode}", mode)
    await user.say("爆肝度调查")
    await user.say("1")
    await user.say("1")
    before = await session(db, user.openid)
    assert before["current"] == "sleep_hours"

    replies = await asyncio.gather(*(user.say(pick) for pick in ("1", "2", "3", "4")))

    after = await session(db, user.openid)
    assert [a["q"] for a in after["answers"]] == BAOGAN_IDS[:6]
    assert sorted(a["value"] for a in after["answers"][2:]) == [1, 2, 3, 4]
    assert after["current"] == "caffeine"
    assert after["v"] == before["v"] + 4
    positions = sorted(int(r.split("第 ")[1].split("/")[0]) for r in replies)
    assert positions == [4, 5, 6, 7]  # each answer moved the survey on by exactly one question


@pytest.mark.gen_test(timeout=60)
async def test_round_trips_per_message(send, wechat, db, app, db_counter):
    """An ordinary text: the engine's one read + the inbox's insert. A survey answer: read,
    conditional update, insert. An invalid answer: read + insert."""
    user = chat(send, wechat, "counted")
    # The reply rules load once per process (a change stream and a read), before its first
    # message; what follows is per message.
    await asyncio.wait_for(app.settings["process"].replies.ready(), 20)

    mark = db_counter.mark()
    assert await user.say("随便聊聊") in GREETINGS
    assert db_counter.since(mark) == [("find", "survey_sessions"), ("insert", "messages")]

    await user.say("爆肝度调查")
    mark = db_counter.mark()
    assert "第 2/10 题" in await user.say("1")
    assert db_counter.since(mark) == [
        ("find", "survey_sessions"),
        ("update", "survey_sessions"),
        ("insert", "messages"),
    ]

    mark = db_counter.mark()
    assert "请回复" in await user.say("9")
    assert db_counter.since(mark) == [("find", "survey_sessions"), ("insert", "messages")]


@pytest.mark.gen_test(timeout=60)
async def test_restart_with_retakes_allowed(send, wechat, db, app):
    user = chat(send, wechat, "again")
    assert "实验问卷开始。" in await user.say("实验问卷")
    await user.say("1 2")
    restarted = await user.say("重新开始")
    assert restarted.startswith("好的，「实验问卷」从头开始。")
    assert "第 1/5 题" in restarted
    doc = await session(db, user.openid, "lab")
    assert doc["attempt"] == 2 and doc["answers"] == [] and doc["current"] == "fruit"
    assert doc["history"][0]["attempt"] == 1
    assert [a["q"] for a in doc["history"][0]["answers"]] == ["fruit"]

    for text in ("2", "1", "2", "好"):
        await user.say(text)
    doc = await session(db, user.openid, "lab")
    assert doc["state"] == "finished"

    retake = await user.say("实验问卷")
    previous = doc["result"]["title"]
    assert retake.startswith(f"这是你第 3 次参加「实验问卷」，上次的结果是「{previous}」")
    assert "第 1/5 题" in retake
    doc = await session(db, user.openid, "lab")
    assert doc["attempt"] == 3 and doc["state"] == "in_progress"
    assert [h["attempt"] for h in doc["history"]] == [1, 2]


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("mode", ["plain", "aes"])
async def test_restart_refused_without_retakes(send, wechat, db, app, mode):
    user = chat(send, wechat, f"stubborn-{mode}", mode)
    await user.say("爆肝度调查")
    await user.say("1")
    refused = await user.say("重新开始")
    assert refused.startswith("「爆肝度调查」不支持重新开始，请继续作答。")
    assert "第 2/10 题" in refused
    await user.say("退出")
    refused = await user.say("重新开始")
    assert "不支持重新开始" in refused and "从第 2 题继续作答" in refused
    doc = await session(db, user.openid)
    assert doc["attempt"] == 1 and len(doc["answers"]) == 1 and doc["paused"] is True


@pytest.mark.gen_test(timeout=60)
async def test_other_question_kinds_and_branching(send, wechat, db, app):
    user = chat(send, wechat, "lab-rat")
    await user.say("实验问卷")
    assert "请回复选项数字" in await user.say("1，5")  # no option 5
    assert "请回复选项数字" in await user.say("1 2 3 4")  # at most three
    rating = await user.say("１，３")  # full-width digits, Chinese comma
    assert "第 2/5 题（评分）：今天心情几分？" in rating
    assert "1 = 很差，5 = 很好" in rating
    assert "请回复 1 到 5 之间的整数" in await user.say("6")
    assert "第 3/5 题" in await user.say("★★★★")
    # 不喝 jumps over the number question.
    assert "第 5/5 题（填空）：还有什么想说的？" in await user.say("B")
    assert "回答太长了" in await user.say("很" * 21)
    final = await user.say("  没有了，谢谢！ ")
    assert "你的得分：8 分（满分 15 分）" in final  # 1+3 (fruit) + 4 (mood) + 0 (不喝)
    assert "结果：高分" in final and "很棒。" in final
    assert "口味：1 分" in final and "心情：4 分，不错" in final

    doc = await session(db, user.openid, "lab")
    by_q = {a["q"]: a for a in doc["answers"]}
    assert list(by_q) == ["fruit", "mood", "coffee", "comment"]
    assert by_q["fruit"]["value"] == [1, 3] and by_q["fruit"]["label"] == "苹果；橙子"
    assert by_q["mood"]["value"] == 4 and by_q["mood"]["dims"] == {"mind": 4}
    assert by_q["comment"]["value"] == "没有了，谢谢！"
    assert doc["result"]["dims"]["mind"]["title"] == "不错"


@pytest.mark.gen_test(timeout=60)
async def test_number_question(send, wechat, db, app):
    user = chat(send, wechat, "coffee-lover")
    for text in ("实验问卷", "2", "3", "1"):
        await user.say(text)
    assert "请回复 0 到 10 之间的数字" in await user.say("11")
    assert "请回复 0 到 10 之间的数字" in await user.say("很多")
    assert "第 5/5 题" in await user.say("2.5 杯")
    doc = await session(db, user.openid, "lab")
    assert doc["answers"][-1]["value"] == 2.5 and doc["answers"][-1]["label"] == "2.5杯"


@pytest.mark.gen_test(timeout=60)
async def test_one_survey_at_a_time(send, wechat, db, app):
    user = chat(send, wechat, "juggler")
    await user.say("爆肝度调查")
    await user.say("1")
    busy = await user.say("实验问卷")
    assert busy.startswith("你正在参加「爆肝度调查」（第 2/10 题）")
    assert "先回复「退出」暂停，再回复「实验问卷」开始「实验问卷」" in busy
    assert await session(db, user.openid, "lab") is None

    same = await user.say("爆肝度调查")
    assert same.startswith("你正在参加「爆肝度调查」，接着答就好。") and "第 2/10 题" in same

    await user.say("quit")
    assert "第 1/5 题" in await user.say("实验问卷")
    assert "你正在参加「实验问卷」" in await user.say("爆肝度调查")
    active = await db.survey_sessions.count_documents({"active_user": user.openid})
    assert active == 1


@pytest.mark.gen_test(timeout=60)
async def test_menu_click_starts_a_survey_but_never_answers(send, wechat, db, app):
    user = chat(send, wechat, "clicker")
    assert "第 1/5 题" in await user.click("LAB_MENU")
    assert await user.click("SOMETHING_ELSE") == UNKNOWN_TEXT
    doc = await session(db, user.openid, "lab")
    assert doc["answers"] == [] and doc["current"] == "fruit"


@pytest.mark.gen_test(timeout=60)
async def test_commands_without_a_survey(send, wechat, db, app):
    user = chat(send, wechat, "idle")
    for text in ("退出", "重新开始"):
        reply = await user.say(text)
        assert "回复「爆肝度调查」开始爆肝度调查" in reply
    assert await db.survey_sessions.count_documents({}) == 0
