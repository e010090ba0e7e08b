"""Reply rules as data: every reply kind as WeChat reads it (plaintext and safe mode, decrypted
and parsed with wechatpy), matching through the real /wechat (exact, contains, regex, order,
time windows, off), special replies, validation, propagation and database round trips."""

from __future__ import annotations

import asyncio
import datetime as dt
import textwrap
import time
from typing import Any

import pytest
import xmltodict
from wechatpy.replies import deserialize_reply

from service.app import make_app
from service.db import connect
from service.replies import ReplyRules, parse_yaml, validate
from service.surveys import SurveyEngine
from tests.ops_helpers import until
from tests.survey_helpers import TracingCounter

# One rule a line, as an owner writes them.
RULES = textwrap.dedent(
    """\
    welcome: 欢迎关注小店！
    default: greeting
    unknown: {text: 这个我看不懂}
    rules:
      - {match: exact, keyword: 菜单, reply: {text: "1. 爆肝度调查\\n2. 联系我们"}}
      - {match: contains, keyword: 价格, reply: {news: [{title: 价目表, description: 最新价格, url: "https://example.com/p", picurl: "https://example.com/p.jpg"}, {title: 第二篇, url: "https://example.com/2"}]}}
      - {match: regex, pattern: "^(hi|hello)\\\\b", reply: {text: Hi!}}
      - {match: exact, keyword: 开始, reply: {survey: baogan}}
      - {match: exact, keyword: 听歌, reply: {music: {title: 晚安曲, description: 早点睡, url: "https://example.com/a.mp3", hq_url: "https://example.com/hq.mp3", thumb_media_id: THUMB}}}
      - {match: exact, keyword: 图片, reply: {image: IMG_ID}}
      - {match: exact, keyword: 语音, reply: {voice: VOICE_ID}}
      - {match: exact, keyword: 视频, reply: {video: {media_id: VIDEO_ID, title: 片子, description: 一段视频}}}
      - {match: exact, keyword: 关掉的, reply: {text: 不该出现}, enabled: false}
      - {match: contains, keyword: 菜, reply: {text: 第二条不会赢}}
    """  # noqa: E501
)


def rules_of(app: Any) -> ReplyRules:
    return app.settings["process"].replies


async def publish(app: Any, text: str) -> int:
    rules = rules_of(app)
    engine = app.settings["surveys"]
    assert isinstance(engine, SurveyEngine)
    await asyncio.wait_for(asyncio.gather(rules.ready(), engine.ready()), 20)
    book, issues = rules.check_yaml(text)
    assert book is not None, [str(i) for i in issues]
    result = await rules.publish(book, by="owner", source="test")
    assert result.ok
    return result.version


async def raw_reply(http_client: Any, base_url: str, wechat: Any, xml: str, mode: str) -> str:
    """The reply XML as WeChat reads it: decrypted (wechatpy's crypto) when encrypted."""
    signed = wechat.sign(xml, mode)
    response = await http_client.fetch(signed.url(base_url), method="POST", body=signed.body)
    assert response.code == 200
    text = response.body.decode("utf-8")
    if mode != "plain":
        envelope = xmltodict.parse(text)["xml"]
        assert set(envelope) >= {"Encrypt", "MsgSignature", "TimeStamp", "Nonce"}
        text = wechat.crypto.decrypt_message(
            text, envelope["MsgSignature"], envelope["TimeStamp"], envelope["Nonce"]
        )
    return text


@pytest.mark.parametrize("mode", ["plain", "compat", "aes"])
@pytest.mark.gen_test(timeout=60)
async def test_every_reply_kind_as_wechat_reads_it(app, http_client, base_url, wechat, mode):
    await publish(app, RULES)

    async def ask(text: str) -> Any:
        xml = await raw_reply(http_client, base_url, wechat, wechat.text("kinds", text), mode)
        reply = deserialize_reply(xml)
        assert reply.target == "kinds" and reply.source == wechat.account
        return reply

    text = await ask("菜单")
    assert (text.type, text.content) == ("text", "1. 爆肝度调查\n2. 联系我们")
    image = await ask("图片")
    assert (image.type, image.image) == ("image", "IMG_ID")
    voice = await ask("语音")
    assert (voice.type, voice.voice) == ("voice", "VOICE_ID")
    video = await ask("视频")
    assert video.type == "video"
    assert video.video == {"media_id": "VIDEO_ID", "title": "片子", "description": "一段视频"}
    music = await ask("听歌")
    assert music.type == "music"
    assert music.music == {
        "thumb_media_id": "THUMB",
        "title": "晚安曲",
        "description": "早点睡",
        "music_url": "https://example.com/a.mp3",
        "hq_music_url": "https://example.com/hq.mp3",
    }
    news = await ask("现在什么价格？")
    assert news.type == "news"
    assert news.articles == [
        {
            "title": "价目表",
            "description": "最新价格",
            "image": "https://example.com/p.jpg",
            "url": "https://example.com/p",
        },
        {"title": "第二篇", "description": None, "image": None, "url": "https://example.com/2"},
    ]


@pytest.mark.gen_test(timeout=60)
async def test_a_one_article_news_reply(app, http_client, base_url, wechat):
    await publish(
        app,
        'rules: [{keyword: 新闻, reply: {news: [{title: 一篇, url: "https://example.com/1"}]}}]',
    )
    xml = await raw_reply(http_client, base_url, wechat, wechat.text("u", "新闻"), "aes")
    parsed = xmltodict.parse(xml, force_list=("item",))["xml"]
    assert parsed["MsgType"] == "news" and parsed["ArticleCount"] == "1"
    assert parsed["Articles"]["item"] == [
        {"Title": "一篇", "Description": None, "PicUrl": None, "Url": "https://example.com/1"}
    ]


async def say(send: Any, wechat: Any, openid: str, text: str) -> dict[str, Any]:
    response, reply = await send(wechat.text(openid, text))
    assert response.code == 200
    return reply


@pytest.mark.gen_test(timeout=60)
async def test_matching_order_folding_and_off(app, send, wechat):
    await publish(app, RULES)
    # exact after folding (full-width, case, spaces, punctuation)
    assert (await say(send, wechat, "m1", " 菜 单！"))["Content"].startswith("1. 爆肝度调查")
    # the first match wins: 菜单 is before the "contains 菜" rule
    assert (await say(send, wechat, "m1", "菜单"))["Content"].startswith("1.")
    assert (await say(send, wechat, "m1", "今天吃什么菜"))["Content"] == "第二条不会赢"
    # regex on the text as sent
    assert (await say(send, wechat, "m1", "hello there"))["Content"] == "Hi!"
    assert (await say(send, wechat, "m1", "HELLO"))["Content"] != "Hi!"
    # switched off: the default (the greeting) answers
    reply = await say(send, wechat, "m1", "关掉的")
    assert reply["Content"] in {
        "你好！",
        "Hello!",
        "こんにちは！",
        "안녕하세요!",
        "Bonjour !",
        "¡Hola!",
    }


@pytest.mark.gen_test(timeout=60)
async def test_survey_keywords_and_sessions_come_before_rules(app, send, wechat):
    await publish(app, RULES + "  - {match: contains, keyword: 调查, reply: {text: 规则}}\n")
    # a survey's keyword: the survey, not the "contains 调查" rule
    first = await say(send, wechat, "s1", "爆肝度调查")
    assert "第 1/10 题" in first["Content"]
    # in a session, 菜单 is an (invalid) answer to the question, not the menu rule
    assert "1. 爆肝度调查" not in (await say(send, wechat, "s1", "菜单"))["Content"]
    # a rule with a survey reply starts it like its keyword
    started = await say(send, wechat, "s2", "开始")
    assert "第 1/10 题" in started["Content"]


@pytest.mark.gen_test(timeout=60)
async def test_a_recognized_voice_message_reaches_the_rules(app, send, wechat):
    """语音识别 on: what WeChat heard goes through the rules like typed text; without a
    Recognition a voice message gets the unknown-content reply."""
    await publish(app, RULES)

    async def speak(heard: str | None) -> dict[str, Any]:
        fields = {"MediaId": "media-v", "Format": "amr"}
        if heard is not None:
            fields["Recognition"] = heard
        response, reply = await send(wechat.message_xml("v1", "voice", **fields))
        assert response.code == 200
        return reply

    assert (await speak("菜单。"))["Content"].startswith("1. 爆肝度调查")
    assert (await speak("价格是多少？"))["MsgType"] == "news"
    assert (await speak(None))["Content"] == "这个我看不懂"


def window(now: dt.datetime, *, inside: bool) -> str:
    """A one-hour window in the owner's zone that does or does not contain ``now``."""
    start = now - dt.timedelta(minutes=30) if inside else now + dt.timedelta(hours=2)
    end = start + dt.timedelta(hours=1)
    return f"{start:%H:%M}-{end:%H:%M}"


@pytest.mark.gen_test(timeout=60)
async def test_time_windows_in_the_owners_zone(app, send, wechat, settings):
    now = dt.datetime.now(settings.tzinfo)  # the windows are hours away from its edges
    await publish(
        app,
        textwrap.dedent(
            f"""\
            rules:
              - {{keyword: 营业, hours: "{window(now, inside=False)}", reply: {{text: 营业中}}}}
              - {{keyword: 营业, reply: {{text: 已打烊}}}}
              - {{keyword: 值班, hours: "{window(now, inside=True)}", reply: {{text: 有人值班}}}}
            """
        ),
    )
    assert (await say(send, wechat, "t1", "营业"))["Content"] == "已打烊"
    assert (await say(send, wechat, "t1", "值班"))["Content"] == "有人值班"


@pytest.mark.gen_test(timeout=60)
async def test_special_replies(app, send, wechat):
    # the built-in defaults first: the welcome with the survey hint, the seed's apology
    _, welcome = await send(wechat.event("w1", "subscribe"))
    assert welcome["Content"].startswith("欢迎关注！") and "爆肝度调查" in welcome["Content"]
    _, unknown = await send(wechat.message_xml("w1", "location", Label="某地"))
    assert unknown["Content"] == "对不起，不能识别您发的内容！"
    await publish(
        app,
        textwrap.dedent(
            """\
            welcome: {news: [{title: 欢迎, url: "https://example.com/w"}]}
            default: {text: 没听懂，回复「菜单」试试}
            unknown: 看不懂这个
            image: {text: 图收到了}
            rules:
              - {match: exact, keyword: 菜单, reply: 一个菜单}
            """
        ),
    )
    _, welcome = await send(wechat.event("w2", "subscribe"))
    assert welcome["MsgType"] == "news"
    assert (await say(send, wechat, "w2", "随便说说"))["Content"] == "没听懂，回复「菜单」试试"
    _, unknown = await send(wechat.message_xml("w2", "voice", MediaId="m", Format="amr"))
    assert unknown["Content"] == "看不懂这个"
    _, image = await send(wechat.message_xml("w2", "image", PicUrl="x", MediaId="m"))
    assert image["Content"] == "图收到了"
    # a CLICK key routes like a keyword: to the rule
    _, click = await send(wechat.event("w2", "CLICK", EventKey="菜单"))
    assert click["Content"] == "一个菜单"
    # a text welcome without the hint
    await publish(app, "welcome: 你来啦\nwelcome_hint: false\n")
    _, welcome = await send(wechat.event("w3", "subscribe"))
    assert welcome["Content"] == "你来啦"


def test_every_mistake_is_listed_and_a_runaway_pattern_is_refused():
    book, issues = parse_yaml(
        textwrap.dedent(
            """\
            welcome: {survey: baogan}
            surprise: 1
            rules:
              - {match: regex, pattern: "^(a+)+\\\\1$", reply: {text: x}}
              - {match: regex, pattern: "(?=lookahead)", reply: {text: x}}
              - {match: regex, pattern: "([", reply: {text: x}}
              - {match: fuzzy, keyword: x, reply: {text: x}}
              - {keyword: "！！", reply: {text: x}}
              - {keyword: ok, reply: {music: {url: "ftp://x"}}}
              - {keyword: ok2, reply: {news: []}}
              - {keyword: ok3, reply: {text: x}, hours: "25:00-26:00", enabled: maybe}
              - {keyword: ok4}
              - {keyword: 开始, reply: {survey: nope}}
              - {keyword: 长, reply: {text: "%s"}}
            """
            % ("字" * 700)
        ),
        survey_ids=["baogan"],
    )
    assert book is None
    messages = [str(i) for i in issues]
    expected = [
        "replies.yaml:1:10: welcome: the welcome cannot start a survey",
        "replies.yaml:2:11: surprise: unknown key 'surprise'",
        "rules[0].pattern: refused (invalid escape sequence: \\1)",
        "rules[1].pattern: refused (invalid perl operator: (?=)",
        "rules[2].pattern: refused (missing ]",
        "rules[3].match: 'fuzzy' is not one of exact, contains, regex",
        "rules[4].keyword: '！！' is empty once spaces and punctuation are folded away",
        "rules[5].reply.music.url: 'ftp://x' is not an http(s) URL",
        "rules[5].reply.music.thumb_media_id: expected text",
        "rules[6].reply.news: news: a list of 1 to 8 articles",
        "rules[7].hours: '25:00-26:00': not a time of day",
        "rules[7].enabled: true or false",
        "rules[8]: reply: required",
        "rules[9].reply.survey: no published survey 'nope' (published: baogan)",
        "rules[10].reply.text: 2100 bytes, WeChat takes at most 2048",
    ]
    for want in expected:
        assert any(want in m for m in messages), (want, messages)
    assert len(messages) == len(expected), messages


def test_a_pattern_that_backtracks_for_seconds_elsewhere_runs_in_linear_time():
    """``^(a+)+$`` takes Python's ``re`` minutes on 40 a's and a b; RE2 answers at once."""
    book, issues = validate({"rules": [{"match": "regex", "pattern": "^(a+)+$", "reply": "x"}]})
    assert book is not None, issues
    started = time.monotonic()
    assert book.match("a" * 100_000, dt.datetime.now(dt.UTC)) is not None
    assert book.match("a" * 100_000 + "b", dt.datetime.now(dt.UTC)) is None
    assert time.monotonic() - started < 1.0  # a bound on a hang, not a timing measurement


def test_an_exact_rule_on_a_survey_keyword_is_a_mistake():
    book, issues = validate(
        {"rules": [{"keyword": "爆肝度调查", "reply": "x"}]},
        survey_keywords={"爆肝度调查": "baogan"},
    )
    assert book is None
    assert "starts survey 'baogan'" in str(issues[0])


@pytest.mark.gen_test(timeout=60)
async def test_an_invalid_save_changes_nothing(app, db, send, wechat):
    version = await publish(app, RULES)
    rules = rules_of(app)
    book, issues = rules.check_yaml(RULES + "  - {match: regex, pattern: '(?<=x)', reply: y}\n")
    assert book is None and issues
    stored = await db.reply_rules.find_one({"_id": "current"})
    assert stored["version"] == version
    assert (await say(send, wechat, "n1", "菜单"))["Content"].startswith("1.")
    # a document broken by hand keeps the last good rules in memory
    await db.reply_rules.update_one(
        {"_id": "current"}, {"$set": {"data.rules": "broken"}, "$inc": {"version": 1}}
    )
    await rules.refresh()
    assert rules.snapshot.version == version
    assert (await say(send, wechat, "n1", "菜单"))["Content"].startswith("1.")


@pytest.mark.gen_test(timeout=60)
async def test_a_stale_editor_save_is_a_conflict(app):
    await publish(app, RULES)
    rules = rules_of(app)
    book, _ = rules.check_yaml("rules: []")
    assert book is not None
    assert (await rules.publish(book, by="a", source="test", expected_version=1)).ok
    late = await rules.publish(book, by="b", source="test", expected_version=1)
    assert late.conflict and not late.ok


# -- live in every process, no database read per message ----------------------------------------


async def _propagation(app: Any, settings: Any, *, polling: bool) -> float:
    client, db2 = connect(settings)
    other = make_app(settings, db=db2)
    try:
        rules2 = rules_of(other)
        if polling:
            rules2.watcher.mode = "polling"
        await asyncio.wait_for(rules2.ready(), 20)
        await publish(app, "rules: [{keyword: 一, reply: 第一版}]")
        await until(lambda: rules2.snapshot.version == 1, timeout=10)
        assert rules2.watcher.mode == ("polling" if polling else "change-stream")
        started = time.monotonic()
        await publish(app, "rules: [{keyword: 一, reply: 第二版}]")
        await until(lambda: rules2.snapshot.version == 2, timeout=10)
        elapsed = time.monotonic() - started
        assert rules2.snapshot.rules[0].reply.reply is not None
        assert rules2.snapshot.rules[0].reply.reply.content == "第二版"
        return elapsed
    finally:
        await other.settings["process"].close()
        await client.close()


@pytest.mark.gen_test(timeout=60)
async def test_a_save_reaches_another_app_instance_within_2_seconds(app, settings):
    assert await _propagation(app, settings, polling=False) < 2.0


@pytest.mark.gen_test(timeout=60)
async def test_the_polling_fallback_also_within_2_seconds(app, settings):
    assert await _propagation(app, settings, polling=True) < 2.0


@pytest.fixture
def db_counter() -> TracingCounter:
    return TracingCounter()


@pytest.mark.gen_test(timeout=60)
async def test_rules_cost_no_round_trip(app, send, wechat, db_counter):
    await publish(app, RULES)
    await say(send, wechat, "r1", "warm-up")
    for text in ("菜单", "现在什么价格？", "hello", "没有规则的话"):
        mark = db_counter.mark()
        await say(send, wechat, "r1", text)
        assert db_counter.since(mark) == [("find", "survey_sessions"), ("insert", "messages")]
