"""Survey logic (issue 10): conditions on earlier answers, piping, optional questions, going back
and screen-outs; the loader's mistakes at their line and column, and conversations through the
real ``/wechat`` endpoint along each path, with retries of every new transition."""

from __future__ import annotations

import asyncio
import textwrap
from typing import Any

import pytest

from service import reports
from service.bot import UNKNOWN_TEXT
from service.reports import progress_entry
from service.store import surveys as store
from service.surveys import SHIPPED_DIR, SurveyEngine, load_dir
from service.surveys.loader import parse_survey
from tests.survey_helpers import Chat, TracingCounter, talk, write_surveys

LOGIC_YAML = """\
    id: logic
    title: 逻辑问卷
    keywords: [逻辑问卷]
    questions:
      - id: bedtime
        text: 你通常几点睡？
        options: [十一点前, 十二点前, 一点前, 两点以后]
      - id: coffee
        kind: number
        show_if: "bedtime >= 3"
        text: 你选了「{bedtime}」。一天喝几杯咖啡？
        min: 0
        max: 10
      - id: fruits
        kind: multiple
        text: 喜欢哪些水果？
        options: [苹果, 香蕉, 橙子]
      - id: why
        kind: text
        optional: true
        text: 你喜欢{fruits}。能说说原因吗？（可回复「跳过」）
        max_length: 100
      - id: age
        kind: number
        integer: true
        text: 你几岁？
        screen_out_if: "age < 18"
        screen_out_text: 本调查只面向 18 岁以上的同学，谢谢！
      - id: last
        kind: text
        show_if: "len(fruits) >= 2 and score == 0"
        text: "最后：「{why}」还有补充吗？{{可以不写}}"
    outro: 谢谢！
"""

QUOTA_YAML = """\
    id: quota
    title: 名额问卷
    keywords: [名额问卷]
    quotas:
      - {id: owls, when: "bedtime == 2", max: 3, text: 这一组的名额已满，谢谢参与！}
    questions:
      - id: bedtime
        text: 几点睡？
        options: [早, 晚]
      - id: more
        kind: text
        text: 说点什么吧
"""

LONG = "因为" + "好吃" * 30  # 62 characters


@pytest.fixture
def app_extra(tmp_path: Any) -> dict[str, Any]:
    folder = write_surveys(tmp_path / "surveys", logic=LOGIC_YAML, quota=QUOTA_YAML)
    return {"surveys": SurveyEngine(load_dir(folder))}


@pytest.fixture
def db_counter() -> TracingCounter:
    return TracingCounter()


async def session(db: Any, openid: str) -> Any:
    return await db.survey_sessions.find_one({"_id": f"logic:{openid}"})


# -- the loader ------------------------------------------------------------------------------------
BROKEN = """\
id: broken
title: 坏问卷
keywords: [坏问卷]
questions:
  - id: a
    text: 几点睡？
    show_if: "b > 1"
    options: [早, 晚]
  - id: b
    kind: number
    show_if: "a >= 2 and later > 1"
    text: 你选了{a}，还有{nobody}和{later}，{
  - id: c
    kind: multiple
    show_if: a == "早" or len(b) > 1
    options: [x, y]
    text: "{{c}}"
  - id: d
    kind: text
    show_if: "(a >"
    text: t
  - id: e
    kind: text
    show_if: "c > 1 or 1 in a or a.real or open(a) or d.x"
    screen_out_if: "e == 1"
    text: t
  - id: later
    kind: number
    text: t
    screen_out_if: "later < 1"
outro: "{nope}"
"""


def test_every_logic_mistake_at_its_line_and_column():
    survey, issues = parse_survey(BROKEN, "broken.yaml")
    assert survey is None
    found = [str(issue) for issue in issues]
    assert found == [
        "broken.yaml:7:14: questions[0].show_if: the first question is always asked",
        "broken.yaml:11:26: questions[1].show_if: 'later' is asked later; a condition "
        "may only use earlier answers",
        "broken.yaml:12:11: questions[1].text: Single '{' encountered in format string "
        "(write a brace as {{ or }})",
        "broken.yaml:15:14: questions[2].show_if: compares a number with text",
        "broken.yaml:15:26: questions[2].show_if: len() of a number (it counts choices or text)",
        "broken.yaml:20:15: questions[3].show_if: invalid expression: '(' was never closed",
        "broken.yaml:22:5: questions[4]: screen_out_if needs a screen_out_text (what the "
        "user is told)",
        "broken.yaml:24:15: questions[4].show_if: compares a list of option numbers with "
        "a number (use 'N in id' or len(id))",
        "broken.yaml:24:29: questions[4].show_if: 'in' needs a multiple-choice answer, a "
        "text or a list on its right",
        "broken.yaml:24:34: questions[4].show_if: only dims.<dimension> may use a dot",
        "broken.yaml:24:44: questions[4].show_if: only len(), min() and max() may be called",
        "broken.yaml:24:55: questions[4].show_if: only dims.<dimension> may use a dot",
        "broken.yaml:25:21: questions[4].screen_out_if: compares text with a number",
        "broken.yaml:27:5: questions[5]: screen_out_if needs a screen_out_text (what the "
        "user is told)",
        "broken.yaml:31:8: outro: unknown placeholder {nope} (a question id or score)",
    ]


def test_placeholders_unknown_or_later_and_escaped_braces():
    text = textwrap.dedent("""\
        id: p
        title: P
        keywords: [P]
        questions:
          - id: a
            text: "{b} 和 {a}"
            options: ["{{x}}", "看{score}"]
          - {id: b, kind: text, text: "{a}{zz:>3}"}
        results:
          bands: [{min: 0, max: 0, title: T, comment: "{b}{c}"}]
        """)
    survey, issues = parse_survey(text, "p.yaml")
    assert survey is None
    assert [str(i) for i in issues] == [
        "p.yaml:6:11: questions[0].text: placeholder {b} is answered later; "
        "only earlier answers can be shown",
        "p.yaml:6:11: questions[0].text: placeholder {a} is answered later; "
        "only earlier answers can be shown",
        "p.yaml:8:31: questions[1].text: placeholder {zz} may not have a format",
        "p.yaml:10:47: results.bands[0].comment: unknown placeholder {c} (a question id or score)",
    ]


def test_conditions_null_and_values():
    survey, issues = parse_survey(textwrap.dedent(LOGIC_YAML))
    assert not issues and survey is not None
    coffee = survey.question("coffee")
    last = survey.question("last")
    assert coffee is not None and coffee.show_if is not None
    assert last is not None and last.show_if is not None
    assert not coffee.show_if.holds(survey.env([]))  # not asked: null, comparisons false
    assert coffee.show_if.holds(survey.env([{"q": "bedtime", "choices": [3], "value": 3}]))
    fruits = {"q": "fruits", "choices": [1, 3], "value": [1, 3]}
    assert last.show_if.holds(survey.env([fruits]))
    assert not last.show_if.holds(survey.env([{**fruits, "choices": [2]}]))
    assert not last.show_if.holds(survey.env([{**fruits, "score": 1}]))


def test_shipped_example_uses_the_logic():
    surveys = {s.id: s for s in load_dir(SHIPPED_DIR)}
    caffeine = surveys["caffeine"]
    features = [
        (q.show_if is not None, q.optional, q.screen_out_if is not None) for q in caffeine.questions
    ]
    assert (
        any(f[0] for f in features) and any(f[1] for f in features) and any(f[2] for f in features)
    )
    assert any("{" in q.text for q in caffeine.questions)


# -- conversations through /wechat -----------------------------------------------------------------
def chat(send: Any, wechat: Any, openid: str, mode: str = "plain") -> Chat:
    return Chat(send, wechat, openid, mode)


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("mode", ["plain", "aes"])
async def test_condition_true_with_piping(send, wechat, db, app, mode):
    user = chat(send, wechat, f"owl-{mode}", mode)
    first = await user.say("逻辑问卷")
    assert "第 1/6 题：你通常几点睡？\n1. 十一点前" in first
    assert "这道题是必答题，不能跳过。" in await user.say("跳过")
    assert await user.say("4") == (
        "第 2/6 题（数字）：你选了「两点以后」。一天喝几杯咖啡？\n请回复 0 到 10 之间的数字。"
    )
    assert (await user.say("2")).startswith("第 3/6 题（多选）：喜欢哪些水果？")
    why = await user.say("1 3")
    assert why.startswith("第 4/6 题（填空）：你喜欢苹果、橙子。能说说原因吗？（可回复「跳过」）")
    assert (await user.say(LONG)).startswith("第 5/6 题（数字）：你几岁？")
    last = await user.say("20")
    assert last.startswith(f"第 6/6 题（填空）：最后：「{LONG[:50]}…」还有补充吗？{{可以不写}}")
    assert await user.say("没有") == "「逻辑问卷」答完啦，感谢参与！\n\n谢谢！"

    doc = await session(db, user.openid)
    assert doc["state"] == "finished"
    assert [a["q"] for a in doc["answers"]] == ["bedtime", "coffee", "fruits", "why", "age", "last"]
    assert doc["answers"][3]["value"] == LONG  # stored whole; only the piped text is cut


@pytest.mark.gen_test(timeout=60)
async def test_condition_false_skip_and_back_over_hidden_question(send, wechat, db, app):
    user = chat(send, wechat, "lark")
    await user.say("逻辑问卷")
    assert "这已经是第一题了。\n\n第 1/6 题" in await user.say("上一题")
    # 十一点前: coffee's condition is false, so question 2 is passed over.
    assert (await user.say("1")).startswith("第 3/6 题（多选）")
    # Back goes to the question answered last (bedtime), not the one the conditions skipped.
    back = await user.say("上一题")
    assert back.startswith("好的，回到上一题。\n\n第 1/6 题：你通常几点睡？")
    assert (await session(db, user.openid))["answers"] == []
    # Conditions are evaluated afresh: now question 2 is asked.
    assert (await user.say("3")).startswith("第 2/6 题（数字）：你选了「一点前」。")
    assert (await user.say("back")).startswith("好的，回到上一题。\n\n第 1/6 题")
    assert (await user.say("1")).startswith("第 3/6 题")
    assert (await user.say("2")).startswith("第 4/6 题（填空）：你喜欢香蕉。")
    for _ in range(2):
        assert (await user.say("  ")).startswith("请直接回复文字")
    third = await user.say("  ")
    assert "已经连续 3 次没能识别你的回答。回复「跳过」跳过这道题，或回复「退出」暂停，" in third
    assert (await user.say("跳过")).startswith("第 5/6 题")
    # Back over a skipped question: it is asked again, its (empty) answer forgotten.
    assert (await user.say("返回")).startswith(
        "好的，回到上一题。\n\n第 4/6 题（填空）：你喜欢香蕉。"
    )
    assert (await user.say("skip")).startswith("第 5/6 题")
    # One fruit: the last question's condition is false and the survey ends after age.
    assert await user.say("30") == "「逻辑问卷」答完啦，感谢参与！\n\n谢谢！"
    doc = await session(db, user.openid)
    assert doc["state"] == "finished"
    assert [a["q"] for a in doc["answers"]] == ["bedtime", "fruits", "why", "age"]
    assert doc["answers"][2]["skipped"] is True and doc["answers"][2]["value"] is None
    assert await user.say("上一题") == "「逻辑问卷」已经结束，答案不能再修改。感谢参与！"


@pytest.mark.gen_test(timeout=60)
async def test_screened_out(send, wechat, db, app):
    user = chat(send, wechat, "minor")
    for text in ("逻辑问卷", "1", "1", "跳过"):
        await user.say(text)
    assert await user.say("16") == "本调查只面向 18 岁以上的同学，谢谢！"
    doc = await session(db, user.openid)
    assert doc["state"] == "screened_out"
    assert doc["ended"] == {
        "state": "screened_out",
        "text": "本调查只面向 18 岁以上的同学，谢谢！",
        "q": "age",
        "if": "age < 18",
    }
    assert "active_user" not in doc and doc["answers"][-1]["value"] == 16
    # No retakes: the keyword tells them again and changes nothing.
    assert await user.say("逻辑问卷") == "本调查只面向 18 岁以上的同学，谢谢！"
    assert await user.say("重新开始") == "本调查只面向 18 岁以上的同学，谢谢！"
    assert (await session(db, user.openid))["v"] == doc["v"]


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("mode", ["plain", "aes"])
@pytest.mark.parametrize("step", ["back", "skip", "screen_out"])
async def test_retries_of_new_transitions_apply_once(send, wechat, db, app, step, mode):
    user = chat(send, wechat, f"retry-{step}-{mode}", mode)
    setup = {"back": ["逻辑问卷", "1"], "skip": ["逻辑问卷", "1", "1"]}
    for text in setup.get(step, ["逻辑问卷", "1", "1", "跳过"]):
        await user.say(text)
    before = await session(db, user.openid)
    text = {"back": "上一题", "skip": "跳过"}.get(step, "12")
    xml = user.xml(text, msg_id=wechat.new_msg_id())

    replies = await asyncio.gather(*(user.post(xml) for _ in range(3)))
    assert len(set(replies)) == 1, replies
    expected = {"back": "好的，回到上一题。", "skip": "第 5/6 题"}.get(step, "本调查只面向")
    assert replies[0].startswith(expected)
    assert await user.post(xml) == replies[0]

    after = await session(db, user.openid)
    assert after["v"] == before["v"] + 1
    change = {"back": -1, "skip": 1}.get(step, 1)
    assert len(after["answers"]) == len(before["answers"]) + change
    key = "msg:" + xml.split("<MsgId>")[1].split("</MsgId>")[0]
    assert [r["k"] for r in after["recent"]].count(key) == 1


@pytest.mark.gen_test(timeout=60)
async def test_round_trips_of_skip_and_back(send, wechat, db, app, db_counter):
    user = chat(send, wechat, "counted-logic")
    for text in ("逻辑问卷", "1", "1"):
        await user.say(text)
    step = [("find", "survey_sessions"), ("update", "survey_sessions"), ("insert", "messages")]
    for text in ("跳过", "上一题", "3"):
        mark = db_counter.mark()
        await user.say(text)
        assert db_counter.since(mark) == step, text


@pytest.mark.gen_test(timeout=60)
async def test_screened_out_counted_apart(send, wechat, db, app):
    done = chat(send, wechat, "adult")
    for text in ("逻辑问卷", "1", "1", "跳过", "30"):
        await done.say(text)
    minor = chat(send, wechat, "teen")
    for text in ("逻辑问卷", "1", "2", "不告诉你", "15"):
        await minor.say(text)
    waiting = chat(send, wechat, "slow")
    await waiting.say("逻辑问卷")

    survey, _ = parse_survey(textwrap.dedent(LOGIC_YAML))
    assert survey is not None
    funnel = await store.funnel(db, survey)
    assert {k: funnel[k] for k in ("started", "finished", "in_progress", "screened_out")} == {
        "started": 3,
        "finished": 1,
        "in_progress": 1,
        "screened_out": 1,
    }
    assert funnel["quota_full"] == 0 and funnel["completion_rate"] == round(1 / 3, 4)
    rows = {row["openid"]: row async for row in store.iter_responses(db, survey)}
    assert rows["teen"]["state"] == "screened_out" and rows["teen"]["ended"] == "age < 18"
    assert rows["teen"]["why"] == "不告诉你" and rows["teen"]["last"] == ""
    assert rows["adult"]["state"] == "finished" and rows["adult"]["ended"] == ""
    assert rows["adult"]["why"] == "" and rows["adult"]["coffee"] == ""
    assert [r["score"] for r in await store.score_distribution(db, survey)] == [0]
    entry = progress_entry(survey, await session(db, "teen"))
    assert entry["state"] == "screened_out" and entry["reason"] == "age < 18"
    listed = await reports.survey_list(db, [survey])
    assert (listed[0]["finished"], listed[0]["screened_out"]) == (1, 1)


def test_quota_mistakes():
    text = textwrap.dedent("""\
        id: q
        title: Q
        keywords: [Q]
        quotas:
          - {id: a, when: "nope == 1", max: 0, text: x}
          - {id: a, max: 2, text: y}
          - {id: c, when: "1 == 1", max: 2}
        questions:
          - {id: b, text: t, options: [x, y]}
        """)
    survey, issues = parse_survey(text, "q.yaml")
    assert survey is None
    assert [str(i) for i in issues] == [
        "q.yaml:5:20: quotas[0].when: unknown question id 'nope'",
        "q.yaml:5:37: quotas[0].max: a quota's max must be at least 1",
        "q.yaml:6:5: quotas[1]: 'when' is required (which answers the quota counts)",
        "q.yaml:6:10: quotas[1].id: duplicate quota id 'a'",
        "q.yaml:7:5: quotas[2]: 'text' is required",
        "q.yaml:7:19: quotas[2].when: a quota's condition must use a question's answer",
    ]


@pytest.mark.gen_test(timeout=90)
async def test_quota_exact_under_concurrent_users_in_two_engines(send, wechat, db, app, db_counter):
    """Six users answer into a quota of three at once, half through /wechat and half through a
    second engine on the same database (as a second process would): exactly three admitted."""
    other = SurveyEngine(app.settings["surveys"].all_surveys())
    users = [chat(send, wechat, f"owl-{i}") for i in range(3)]
    for user in users:
        await user.say("名额问卷")
    for i in range(3):
        await talk(other, db, wechat, f"far-owl-{i}", "名额问卷")

    mark = db_counter.mark()
    replies = await asyncio.gather(
        *(user.say("2") for user in users),
        *(talk(other, db, wechat, f"far-owl-{i}", "2") for i in range(3)),
    )
    admitted = [r for r in replies if r.startswith("第 2/2 题")]
    full = [r for r in replies if r == "这一组的名额已满，谢谢参与！"]
    assert (len(admitted), len(full)) == (3, 3), replies
    counter = await db.survey_quotas.find_one({"_id": "quota:owls"})
    assert counter["n"] == 3 and len(set(counter["members"])) == 3
    assert await db.survey_sessions.count_documents({"state": "quota_full"}) == 3
    assert db_counter.since(mark).count(("update", "survey_quotas")) == 6

    # Another match later: told the quota is full; a user outside the quota goes on.
    late = chat(send, wechat, "late-owl")
    await late.say("名额问卷")
    xml = late.xml("晚", msg_id=wechat.new_msg_id())
    retries = await asyncio.gather(*(late.post(xml) for _ in range(3)))
    assert set(retries) == {"这一组的名额已满，谢谢参与！"}
    doc = await db.survey_sessions.find_one({"_id": "quota:late-owl"})
    assert doc["state"] == "quota_full" and doc["ended"]["quota"] == "owls"
    assert await late.say("名额问卷") == "这一组的名额已满，谢谢参与！"
    early = chat(send, wechat, "lark-q")
    await early.say("名额问卷")
    mark = db_counter.mark()
    assert (await early.say("1")).startswith("第 2/2 题")
    assert ("update", "survey_quotas") not in db_counter.since(mark)  # not a match: no claim
    assert (await db.survey_quotas.find_one({"_id": "quota:owls"}))["n"] == 3

    quota_survey = app.settings["surveys"].get("quota")
    funnel = await store.funnel(db, quota_survey)
    assert (funnel["quota_full"], funnel["in_progress"]) == (4, 4)
    report = await reports.survey_report(db, quota_survey)
    assert report["quotas"] == [{"id": "owls", "when": "bedtime == 2", "max": 3, "count": 3}]


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("mode", ["plain", "aes"])
async def test_voice_answers_with_recognition(send, wechat, db, app, mode):
    """A voice message's Recognition is read like typed text (its trailing 。 dropped); without
    one, a voice message gets today's polite reply and answers nothing."""
    user = chat(send, wechat, f"talker-{mode}", mode)

    async def speak(heard: str | None) -> str:
        fields = {"MediaId": "media-v", "Format": "amr"}
        if heard is not None:
            fields["Recognition"] = heard
        return await user.post(wechat.message_xml(user.openid, "voice", **fields))

    assert "第 1/6 题" in await speak("逻辑问卷。")
    assert (await speak("四。")).startswith("第 2/6 题（数字）：你选了「两点以后」。")
    assert await speak(None) == UNKNOWN_TEXT
    assert await speak("") == UNKNOWN_TEXT
    assert "请回复 0 到 10 之间的数字" in await speak("我也不知道。")
    assert (await speak("3。")).startswith("第 3/6 题")
    doc = await session(db, user.openid)
    assert [(a["q"], a["value"]) for a in doc["answers"]] == [("bedtime", 4), ("coffee", 3)]
    heard = [
        m["fields"].get("Recognition")
        async for m in db.messages.find({"openid": user.openid, "type": "voice"})
    ]
    assert sorted(heard, key=str) == sorted(
        ["逻辑问卷。", "四。", None, "", "我也不知道。", "3。"], key=str
    )


@pytest.mark.gen_test(timeout=60)
async def test_three_invalid_answers_in_a_row_say_how_to_pause(send, wechat, db, app):
    user = chat(send, wechat, "fumbler")
    await user.say("逻辑问卷")
    assert "已经连续" not in await user.say("9")
    assert "已经连续" not in await user.say("8")
    xml = user.xml("7", msg_id=wechat.new_msg_id())
    third = await user.post(xml)
    assert "已经连续 3 次没能识别你的回答。回复「退出」暂停，之后再发「逻辑问卷」接着答。" in third
    assert "跳过" not in third  # a required question
    # A valid answer starts the count again.
    await user.say("1")
    assert "已经连续" not in await user.say("9")


def test_dims_score_functions_and_the_sandbox():
    text = textwrap.dedent("""\
        id: d
        title: D
        keywords: [D]
        questions:
          - id: a
            kind: multiple
            text: t
            options: [{text: x, score: 2, dims: {taste: 3}}, {text: y, score: 1}]
          - id: b
            kind: text
            text: t
            show_if: "dims.taste >= 3 and score > 1 and not (2 in a) and min(len(a), 5) == 1"
          - {id: c, kind: text, text: t, show_if: "a == [1, 2] or b in ['好', '行']"}
        results:
          bands: [{min: 0, max: 3, title: T}]
          dimensions: [{id: taste, title: 口味}]
        """)
    survey, issues = parse_survey(text)
    assert not issues and survey is not None
    b, c = survey.question("b"), survey.question("c")
    assert b is not None and b.show_if is not None and c is not None and c.show_if is not None
    one = {"q": "a", "choices": [1], "value": [1], "score": 2, "dims": {"taste": 3}}
    assert b.show_if.holds(survey.env([one]))
    assert not b.show_if.holds(survey.env([{**one, "choices": [1, 2]}]))
    assert c.show_if.holds(survey.env([{**one, "choices": [1, 2]}]))
    assert c.show_if.holds(survey.env([one, {"q": "b", "value": "行"}]))
    assert not c.show_if.holds(survey.env([one, {"q": "b", "skipped": True, "value": None}]))
    # Nothing outside the allow-list gets through the loader.
    for bad in ("__import__('os')", "a.__class__", "[x for x in a]", "a if a else b", "b[0]"):
        _, found = parse_survey(text.replace("a == [1, 2] or b in ['好', '行']", bad))
        assert found, bad


@pytest.mark.gen_test(timeout=60)
async def test_screened_out_may_retake_when_allowed(db, wechat):
    text = textwrap.dedent(LOGIC_YAML).replace(
        "keywords: [逻辑问卷]", "keywords: [逻辑问卷]\nallow_retake: true"
    )
    survey, issues = parse_survey(text)
    assert not issues and survey is not None
    engine = SurveyEngine([survey])
    said = await talk(engine, db, wechat, "kid", "逻辑问卷", "1", "1", "跳过", "12")
    assert said == "本调查只面向 18 岁以上的同学，谢谢！"
    again = await talk(engine, db, wechat, "kid", "逻辑问卷")
    assert again.startswith("这是你第 2 次参加「逻辑问卷」。") and "第 1/6 题" in again
    doc = await session(db, "kid")
    assert doc["state"] == "in_progress" and "ended" not in doc and doc["answers"] == []
    assert doc["history"][-1]["state"] == "screened_out"
    assert doc["history"][-1]["ended"]["if"] == "age < 18"
