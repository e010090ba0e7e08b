"""Survey reminders and expiry (``service.reminders``) through the real /wechat and the fake API.

Time is driven by durations of seconds (``remind_after: 2s``, ``expire_after: 2s``) and a scan
every 0.1 s (``REMINDER_INTERVAL``); every wait is for a condition, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from service import reports
from service.app import make_app
from service.config import Settings
from service.db import connect
from service.reminders import Reminders, ScanResult
from service.store import surveys as store
from service.store import users as users_store
from tests.fake_wechat_api import FakeWeChatAPI
from tests.ops_helpers import until
from tests.survey_helpers import Chat, write_surveys

NUDGE = """\
    id: nudge
    title: 提醒问卷
    keywords: [提醒问卷]
    remind_after: 2s
    questions:
      - {id: q1, text: 第一题：早睡吗？, options: [是, 否]}
      - {id: q2, text: 第二题：早起吗？, options: [是, 否]}
"""
LAPSE = """\
    id: lapse
    title: 过期问卷
    keywords: [过期问卷]
    expire_after: 2s
    questions:
      - {id: a1, text: 甲一？, options: [是, 否]}
      - {id: a2, text: 甲二？, options: [是, 否]}
"""
KEEP = """\
    id: keep
    title: 续答问卷
    keywords: [续答问卷]
    expire_after: 2s
    on_expire: resume
    questions:
      - {id: b1, text: 乙一？, options: [是, 否]}
      - {id: b2, text: 乙二？, options: [是, 否]}
"""
STOP = "回复「退出」不再提醒"
SEND = "message/custom/send"


def reminder_settings(base: Settings, tmp_path: Any, **changes: Any) -> Settings:
    folder = write_surveys(tmp_path / "surveys", nudge=NUDGE, lapse=LAPSE, keep=KEEP)
    return base.replace(surveys_dir=folder, reminder_interval=0.1, quiet_hours="", **changes)


@pytest.fixture
def app(io_loop, wechat_settings, db, tmp_path):
    application = make_app(reminder_settings(wechat_settings, tmp_path), db=db)
    yield application
    io_loop.run_sync(application.settings["process"].close)


def reminders_of(app: Any) -> Reminders:
    found = app.settings["process"].reminders
    assert found is not None
    return found


async def session(db: AsyncDatabase[Any], survey: str, openid: str) -> dict[str, Any]:
    doc = await store.get(db, survey, openid)
    assert doc is not None
    return doc


def sent_to(fake: FakeWeChatAPI) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for message in fake.sent:
        out.setdefault(message["touser"], []).append(message["text"]["content"])
    return out


async def counted(db: AsyncDatabase[Any], openid: str, **fields: Any) -> bool:
    """The user's counters have caught up (``UserStats`` writes them every half second)."""
    user = await users_store.get(db, openid)
    return user is not None and all(user.get(k) == v for k, v in fields.items())


async def scans_pass(*apps: Any, n: int = 3) -> None:
    """Wait until ``n`` more scans have run (by whichever process holds the lease)."""
    before = sum(reminders_of(a).scans for a in apps)
    await until(lambda: sum(reminders_of(a).scans for a in apps) >= before + n, timeout=30)


@pytest.mark.gen_test(timeout=90)
async def test_one_reminder_per_idle_session_across_two_processes_and_none_to_those_who_left(
    app, send, wechat, db, fake_wechat_api, wechat_settings, tmp_path
):
    other_client, other_db = connect(wechat_settings)  # a second process: its own client
    other = make_app(reminder_settings(wechat_settings, tmp_path), db=other_db)
    try:
        chats = {name: Chat(send, wechat, name) for name in ("r1", "r2", "r3", "left", "gone")}
        chats["old"] = Chat(send, wechat, "old")
        chats["sim-tester"] = Chat(send, wechat, "sim-tester")
        for chat in chats.values():
            assert "第一题：早睡吗？" in await chat.say("提醒问卷")
        assert "已暂停" in await chats["left"].say("退出")
        await chats["gone"].post(wechat.event("gone", "unsubscribe"))
        await until(lambda: counted(db, "gone", subscribed=False))
        # The user's last message to us 49 hours ago: outside WeChat's 48-hour window.
        await until(lambda: counted(db, "old"))
        long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=49)
        await db.users.update_one({"_id": "old"}, {"$set": {"last_seen": long_ago}})
        await db.survey_sessions.update_one(
            {"_id": "nudge:old"}, {"$set": {"updated_at": long_ago}}
        )

        for a in (app, other):
            reminders_of(a).start()

        async def settled() -> bool:
            docs = [await session(db, "nudge", o) for o in ("r1", "r2", "r3", "gone", "old")]
            return all(d.get("reminder", {}).get("status") in ("sent", "skipped") for d in docs)

        await until(settled, timeout=30)
        await scans_pass(app, other)
        texts = sent_to(fake_wechat_api)
        assert sorted(texts) == ["r1", "r2", "r3"], texts
        for openid in ("r1", "r2", "r3"):
            assert len(texts[openid]) == 1
            assert "「提醒问卷」还没答完（已答 0/2 题）" in texts[openid][0]
            assert STOP in texts[openid][0] and "第一题：早睡吗？" in texts[openid][0]
            doc = await session(db, "nudge", openid)
            assert doc["reminder"]["status"] == "sent" and doc["reminder"]["attempt"] == 1
        assert (await session(db, "nudge", "gone"))["reminder"]["reason"] == "unsubscribed"
        assert (await session(db, "nudge", "old"))["reminder"]["reason"] == "window"
        assert "reminder" not in await session(db, "nudge", "left")  # paused: never
        assert "reminder" not in await session(db, "nudge", "sim-tester")  # a test user: never

        # The process holding the lease stops (as at a restart): the other takes over and sends
        # nothing again.
        holder = app if reminders_of(app).scans >= reminders_of(other).scans else other
        rest = other if holder is app else app
        await holder.settings["process"].close()
        await scans_pass(rest)
        assert sum(len(t) for t in sent_to(fake_wechat_api).values()) == 3

        # Two processes deciding the same due sessions at once (the lease bypassed): the
        # conditional claim lets exactly one of them send each.
        for name in ("s1", "s2", "s3"):
            chat = Chat(send, wechat, name)
            await chat.say("提醒问卷")
        cutoff = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
        docs = await store.remind_candidates(db, "nudge", cutoff, 10)
        assert sorted(d["openid"] for d in docs) == ["s1", "s2", "s3"]
        await rest.settings["process"].close()  # no loop left to send them meanwhile
        pair = [make_app(reminder_settings(wechat_settings, tmp_path), db=db) for _ in range(2)]
        racers = [reminders_of(a) for a in pair]
        results = [ScanResult(), ScanResult()]
        now = dt.datetime.now(dt.UTC)
        try:
            await asyncio.gather(
                *(
                    r._one(dict(d), None, now, res)
                    for d in docs
                    for r, res in zip(racers, results, strict=True)
                )
            )
        finally:
            for a in pair:
                await a.settings["process"].close()
        assert results[0].sent + results[1].sent == 3
        texts = sent_to(fake_wechat_api)
        assert all(len(texts[name]) == 1 for name in ("s1", "s2", "s3")), texts
    finally:
        await other.settings["process"].close()
        await other_client.close()


@pytest.mark.gen_test(timeout=60)
async def test_none_in_quiet_hours_then_sent_after_them(app, send, wechat, db, fake_wechat_api):
    local = dt.datetime.now(app.settings["process"].settings.tzinfo)
    start, end = local - dt.timedelta(hours=1), local + dt.timedelta(hours=1)
    reminders = reminders_of(app)
    reminders.quiet = (start.time().replace(second=0, microsecond=0), end.time())
    chat = Chat(send, wechat, "night-owl")
    await chat.say("提醒问卷")
    reminders.start()
    first = await session(db, "nudge", "night-owl")
    await until(lambda: dt.datetime.now(dt.UTC) - first["updated_at"] > dt.timedelta(seconds=3))
    await scans_pass(app)
    assert fake_wechat_api.sent == []
    assert "reminder" not in await session(db, "nudge", "night-owl")
    reminders.quiet = None  # morning: still within the 48 hours, so it goes out now
    await until(lambda: sent_to(fake_wechat_api).get("night-owl"))
    assert len(sent_to(fake_wechat_api)["night-owl"]) == 1


@pytest.mark.gen_test(timeout=60)
async def test_refusals_are_recorded_and_not_retried(app, send, wechat, db, fake_wechat_api):
    for code in (45015, 43004, 40003):
        fake_wechat_api.fail_next(SEND, code)
    names = ("e1", "e2", "e3")
    for name in names:
        await Chat(send, wechat, name).say("提醒问卷")
    reminders_of(app).start()

    async def refused() -> list[Any]:
        docs = [await session(db, "nudge", n) for n in names]
        codes = [d.get("reminder", {}).get("errcode") for d in docs]
        return codes if all(codes) else []

    codes = await until(refused)
    assert sorted(codes) == [40003, 43004, 45015]
    for name in names:
        assert (await session(db, "nudge", name))["reminder"]["status"] == "failed"
    await scans_pass(app)
    assert len(fake_wechat_api.calls_to(SEND)) == 3  # one try each, never again
    assert fake_wechat_api.sent == []
    report = await reports.survey_report(db, app.settings["process"].surveys.get("nudge"))
    assert report["funnel"]["reminders"] == {"reminded": 0, "finished_after": 0, "failed": 3}


@pytest.mark.gen_test(timeout=60)
async def test_finished_after_a_reminder_is_counted(app, send, wechat, db, fake_wechat_api):
    chat = Chat(send, wechat, "late")
    await chat.say("提醒问卷")
    await Chat(send, wechat, "idle").say("提醒问卷")
    reminders_of(app).start()
    await until(lambda: len(fake_wechat_api.sent) == 2)
    assert "第二题" in await chat.say("1")
    assert "答完啦" in await chat.say("1")
    report = await reports.survey_report(db, app.settings["process"].surveys.get("nudge"))
    assert report["funnel"]["reminders"] == {"reminded": 2, "finished_after": 1, "failed": 0}
    assert (await session(db, "nudge", "late"))["state"] == "finished"


@pytest.mark.gen_test(timeout=60)
async def test_expiry_then_restart_or_resume(app, send, wechat, db, fake_wechat_api):
    chat = Chat(send, wechat, "slow")
    assert "甲一？" in await chat.say("过期问卷")
    assert "甲二？" in await chat.say("1")
    reminders_of(app).start()

    async def expired(survey: str) -> bool:
        return (await session(db, survey, "slow"))["state"] == "expired"

    await until(lambda: expired("lapse"))
    doc = await session(db, "lapse", "slow")
    assert "active_user" not in doc and doc["expired_at"] and len(doc["answers"]) == 1
    report = await reports.survey_report(db, app.settings["process"].surveys.get("lapse"))
    funnel = report["funnel"]
    assert (funnel["expired"], funnel["in_progress"], funnel["finished"]) == (1, 0, 0)
    assert [q["dropped"] for q in funnel["questions"]] == [0, 1]  # stopped at question 2

    reply = await chat.say("过期问卷")  # on_expire: restart (the default)
    assert "上次的「过期问卷」已经过期，我们从头开始。" in reply and "甲一？" in reply
    doc = await session(db, "lapse", "slow")
    assert (doc["state"], doc["attempt"], doc["answers"], doc["current"]) == (
        "in_progress",
        2,
        [],
        "a1",
    )
    assert doc["history"][-1]["state"] == "expired" and len(doc["history"][-1]["answers"]) == 1

    # on_expire: resume continues where it stopped, the answers kept.
    assert "已暂停" in await chat.say("退出")
    assert "乙一？" in await chat.say("续答问卷")
    assert "乙二？" in await chat.say("2")
    await until(lambda: expired("keep"))
    reply = await chat.say("续答问卷")
    assert reply.startswith("欢迎回来！继续「续答问卷」。") and "乙二？" in reply
    doc = await session(db, "keep", "slow")
    assert (doc["state"], doc["attempt"], len(doc["answers"])) == ("in_progress", 1, 1)
    assert "expired_at" not in doc
    assert "答完啦" in await chat.say("1")
