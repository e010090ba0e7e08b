"""The dashboard's JSON API, CSV export and simulator: exact numbers on seeded data."""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
import json
import re
import subprocess
import sys
import zoneinfo
from pathlib import Path

import pytest

from service.owners_cli import ensure_first_owner
from service.store import dashboard as dash_store
from service.store import messages, owners
from service.store.users import UserStats

NOW = dt.datetime.now(dt.UTC)


def _today_start() -> dt.datetime:
    return dash_store.day_start(dt.datetime.now(dt.UTC), "Asia/Shanghai")


def message_doc(
    key: str,
    openid: str,
    at: dt.datetime,
    *,
    msg_type: str = "text",
    text: str = "",
    event: str | None = None,
    reply: str = "你好！",
) -> dict:
    return {
        "_id": key,
        "msg_id": None,
        "openid": openid,
        "account": "gh_test",
        "type": msg_type,
        "event": event,
        "kind": f"event:{event}" if event else msg_type,
        "text": text or (f"[事件] {event}" if event else ""),
        "fields": {},
        "raw": "<xml/>",
        "created_at": at,
        "received_at": at,
        "reply": {"kind": "text" if reply else "success", "content": reply, "media_id": ""},
        "reply_text": reply,
        "reply_xml": "<xml/>",
        "latency_ms": 3.5,
        "mode": "plain",
        "test_user": openid.startswith("sim-"),
        "process": "test",
    }


@pytest.fixture
def seeded(io_loop, db):
    """Messages and users at known times:

    today (between midnight in Shanghai and now): alice text ×2, bob subscribe, sim-x text
    earlier this week (yesterday): carol text, dave unsubscribe
    8 days ago: erin text (outside every window)
    """
    today_start = _today_start()
    now = dt.datetime.now(dt.UTC)
    today = today_start + (now - today_start) / 2
    yesterday = today_start - dt.timedelta(hours=12)
    old = now - dt.timedelta(days=8)
    docs = [
        message_doc("msg:1", "alice", today, text="爆肝度调查"),
        message_doc("msg:2", "alice", today + dt.timedelta(seconds=1), text="1"),
        message_doc("ev:bob", "bob", today, msg_type="event", event="subscribe"),
        message_doc("msg:3", "sim-x", today, text="hello test"),
        message_doc("msg:4", "carol", yesterday, text="早上好"),
        message_doc("ev:dave", "dave", yesterday, msg_type="event", event="unsubscribe", reply=""),
        message_doc("msg:5", "erin", old, text="很久以前"),
    ]

    async def seed():
        users = UserStats(db)
        for doc in docs:
            assert await messages.insert_once(db, doc) is None
            users.seen(doc["_id"])
        await users.close()

    io_loop.run_sync(seed)
    return {"today": today, "yesterday": yesterday, "old": old}


@pytest.mark.gen_test
async def test_overview_counts(logged_in, seeded):
    data = await logged_in.get_json("/api/overview")
    assert data["messages_today"] == 3  # alice ×2, bob; sim-x is a test user
    assert data["messages_7d"] == 5  # + carol, dave
    assert data["subscribes_today"] == 1
    assert data["subscribes_7d"] == 1
    assert data["unsubscribes_today"] == 0
    assert data["unsubscribes_7d"] == 1
    assert data["active_users_today"] == 2  # alice, bob
    assert data["active_users_7d"] == 4  # + carol, dave
    assert data["users_total"] == 5
    assert data["subscribed_users"] == 1
    assert data["surveys"] == {"started": 0, "finished": 0}
    with_test = await logged_in.get_json("/api/overview", test=1)
    assert with_test["messages_today"] == 4
    assert with_test["users_total"] == 6


@pytest.mark.gen_test
async def test_traffic_per_minute(logged_in, db):
    now = dt.datetime.now(dt.UTC)
    times = [
        now - dt.timedelta(seconds=5),
        now - dt.timedelta(minutes=3),
        now - dt.timedelta(minutes=3, seconds=1),
        now - dt.timedelta(minutes=90),
    ]
    for i, at in enumerate(times):
        await messages.insert_once(db, message_doc(f"msg:t{i}", "u1", at, text="x"))
    data = await logged_in.get_json("/api/traffic", minutes=60)
    buckets = data["buckets"]
    assert len(buckets) == 60
    assert sum(b["count"] for b in buckets) == 3  # the 90-minute-old one is outside the hour
    starts = [dt.datetime.fromisoformat(b["t"].replace("Z", "+00:00")) for b in buckets]
    assert all(b - a == dt.timedelta(minutes=1) for a, b in itertools.pairwise(starts))
    for at in times[:3]:
        minute = at.replace(second=0, microsecond=0)
        assert minute in starts
    expected: dict[dt.datetime, int] = {}
    for at in times[:3]:
        key = at.replace(second=0, microsecond=0)
        expected[key] = expected.get(key, 0) + 1
    for start, bucket in zip(starts, buckets, strict=True):
        assert bucket["count"] == expected.get(start, 0)


@pytest.mark.gen_test
async def test_message_log_search_and_pages(logged_in, seeded):
    everything = await logged_in.get_json("/api/messages")
    assert everything["total"] == 7
    assert next(m["id"] for m in everything["items"]) == "msg:2"  # newest first
    first = everything["items"][0]
    assert first["openid"] == "alice" and first["text"] == "1" and first["reply"] == "你好！"
    assert first["latency_ms"] == 3.5 and first["test_user"] is False
    assert "raw" not in first

    assert (await logged_in.get_json("/api/messages", q="早上"))["total"] == 1
    assert (await logged_in.get_json("/api/messages", q="你好"))["total"] == 6  # reply text
    assert (await logged_in.get_json("/api/messages", user="ali"))["total"] == 2
    assert (await logged_in.get_json("/api/messages", type="event"))["total"] == 2
    assert (await logged_in.get_json("/api/messages", test="0"))["total"] == 6
    # Text that looks like a regular expression is searched literally.
    assert (await logged_in.get_json("/api/messages", q=".*"))["total"] == 0

    zone = zoneinfo.ZoneInfo("Asia/Shanghai")
    today = seeded["today"].astimezone(zone).date().isoformat()
    only_today = await logged_in.get_json("/api/messages", since=today)
    assert only_today["total"] == 4
    yesterday = (seeded["today"].astimezone(zone).date() - dt.timedelta(days=1)).isoformat()
    up_to_yesterday = await logged_in.get_json("/api/messages", until=yesterday)  # inclusive
    assert up_to_yesterday["total"] == 3
    assert (await logged_in.get_json("/api/messages", since=today, until=today))["total"] == 4

    page1 = await logged_in.get_json("/api/messages", per_page=3, page=1)
    page3 = await logged_in.get_json("/api/messages", per_page=3, page=3)
    assert len(page1["items"]) == 3 and len(page3["items"]) == 1
    assert page3["items"][0]["id"] == "msg:5"  # the oldest
    bad = await logged_in.get("/api/messages", type="nonsense")
    assert bad.code == 400 and json.loads(bad.body)["error"]


@pytest.mark.gen_test
async def test_users_list_search_and_filters(logged_in, seeded):
    data = await logged_in.get_json("/api/users")
    assert data["total"] == 6
    by_id = {u["openid"]: u for u in data["items"]}
    assert by_id["alice"]["messages"] == 2
    assert by_id["bob"]["subscribed"] is True
    assert by_id["dave"]["subscribed"] is False
    assert by_id["sim-x"]["test_user"] is True
    # Both shipped surveys (爆肝度调查, 咖啡因摄入调查), neither started.
    assert [s["state"] for s in by_id["alice"]["surveys"]] == ["not_started"] * 2
    assert data["survey_titles"] == [
        {"id": "baogan", "title": "爆肝度调查"},
        {"id": "caffeine", "title": "咖啡因摄入调查"},
    ]
    assert (await logged_in.get_json("/api/users", q="ALI"))["total"] == 1
    assert (await logged_in.get_json("/api/users", subscribed="1"))["total"] == 1
    assert (await logged_in.get_json("/api/users", test="0"))["total"] == 5
    paged = await logged_in.get_json("/api/users", per_page=4, page=2)
    assert len(paged["items"]) == 2
    assert paged["items"][-1]["openid"] == "erin"  # least recently seen last


@pytest.mark.gen_test
async def test_conversation_pages_backwards(logged_in, db):
    base = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    for i in range(5):
        await messages.insert_once(
            db, message_doc(f"msg:c{i}", "chatty", base + dt.timedelta(seconds=i), text=f"m{i}")
        )
    recent = await logged_in.get_json("/api/users/chatty/messages", limit=3)
    assert [m["text"] for m in recent["items"]] == ["m2", "m3", "m4"]
    assert recent["more"] is True
    older = await logged_in.get_json(
        "/api/users/chatty/messages", limit=3, before=recent["items"][0]["received_at"]
    )
    assert [m["text"] for m in older["items"]] == ["m0", "m1"]
    assert older["more"] is False


@pytest.mark.gen_test
async def test_user_detail_and_404(logged_in, seeded):
    user = await logged_in.get_json("/api/users/alice")
    assert user["messages"] == 2 and user["surveys"][0]["title"] == "爆肝度调查"
    assert (await logged_in.get("/api/users/nobody")).code == 404
    page = await logged_in.get("/dashboard/users/alice")
    assert page.code == 200 and "alice" in page.body.decode()
    assert (await logged_in.get("/dashboard/users/nobody")).code == 404


# -- surveys ----------------------------------------------------------------------------------


async def answer_survey(send, wechat, openid: str, answers: list[str]) -> dict:
    _, reply = await send(wechat.text(openid, "爆肝度调查"))
    for answer in answers:
        _, reply = await send(wechat.text(openid, answer))
    return reply


@pytest.fixture
def survey_data(io_loop, send, wechat, app):
    """Through the real endpoint: u-low finishes with all 1s (score 0), u-high with all 4s
    (score 30), u-mid stops after three answers of 2, sim-t (a test user) finishes with 2s."""

    async def run():
        await answer_survey(send, wechat, "u-low", ["1"] * 10)
        await answer_survey(send, wechat, "u-high", ["4"] * 10)
        await answer_survey(send, wechat, "u-mid", ["2"] * 3)
        await answer_survey(send, wechat, "sim-t", ["2"] * 10)
        await app.settings["users"].flush()

    io_loop.run_sync(run, timeout=120)


@pytest.mark.gen_test(timeout=60)
async def test_survey_list_and_charts(logged_in, survey_data):
    listing = await logged_in.get_json("/api/surveys")
    by_id = {item["id"]: item for item in listing["items"]}
    assert set(by_id) == {"baogan", "caffeine"}  # the two shipped surveys
    baogan = by_id["baogan"]
    assert (baogan["id"], baogan["started"], baogan["finished"]) == ("baogan", 3, 2)
    assert baogan["questions"] == 10

    data = await logged_in.get_json("/api/surveys/baogan")
    assert data["funnel"]["started"] == 3
    assert data["funnel"]["finished"] == 2
    assert data["funnel"]["completion_rate"] == round(2 / 3, 4)
    q = data["funnel"]["questions"]
    assert [x["answered"] for x in q] == [3, 3, 3] + [2] * 7
    assert q[3]["dropped"] == 1  # u-mid waits at question 4
    first = data["questions"][0]
    assert first["answered"] == 3
    assert [o["count"] for o in first["options"]] == [1, 1, 0, 1]
    assert data["scores"] == [{"score": 0, "count": 1}, {"score": 30, "count": 1}]
    assert data["average_score"] == 15
    assert data["score_range"] == [0, 30]
    bands = {b["band"]: b["count"] for b in data["bands"]}
    assert bands == {"healthy": 1, "light": 0, "moderate": 0, "heavy": 0, "extreme": 1}
    assert sum(c["count"] for c in data["completions"]) == 2

    with_test = await logged_in.get_json("/api/surveys/baogan", test=1)
    assert with_test["funnel"]["finished"] == 3

    overview = await logged_in.get_json("/api/overview")
    assert overview["surveys"] == {"started": 3, "finished": 2}

    users = await logged_in.get_json("/api/users", q="u-")
    progress = {u["openid"]: u["surveys"][0] for u in users["items"]}
    assert progress["u-low"]["state"] == "finished"
    assert progress["u-low"]["result_title"] == "作息模范生"
    assert progress["u-high"]["score"] == 30
    assert progress["u-mid"]["state"] == "in_progress"
    assert (progress["u-mid"]["position"], progress["u-mid"]["total"]) == (4, 10)
    assert (await logged_in.get("/api/surveys/nope")).code == 404


@pytest.mark.gen_test(timeout=60)
async def test_csv_export_has_bom_one_row_per_user_one_column_per_question(logged_in, survey_data):
    response = await logged_in.get("/dashboard/surveys/baogan/export.csv", header="keys")
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in response.headers["Content-Disposition"]
    assert response.body.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(response.body.decode("utf-8-sig"))))
    header, body = rows[0], rows[1:]
    assert header[:8] == [
        "openid",
        "state",
        "attempt",
        "started_at",
        "finished_at",
        "score",
        "result",
        "ended",
    ]
    assert header[8].startswith("Q1 最近一个月") and len(header) == 8 + 10
    assert sorted(r[0] for r in body) == ["u-high", "u-low", "u-mid"]
    low = next(r for r in body if r[0] == "u-low")
    assert low[1] == "finished" and low[5] == "0" and low[6] == "作息模范生"
    assert low[8] == "晚上 11 点以前" and low[7] == ""
    mid = next(r for r in body if r[0] == "u-mid")
    assert mid[1] == "in_progress" and mid[11] == ""  # question 4 not answered
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+08:00", low[4])  # TIMEZONE
    with_test = await logged_in.get("/dashboard/surveys/baogan/export.csv", test="1")
    assert len(with_test.body.decode("utf-8-sig").strip().splitlines()) == 5


def test_csv_cells_never_become_formulas():
    from service.reports import csv_cell as _cell

    assert _cell("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert _cell("-5") == "-5"
    assert _cell("普通回答") == "普通回答"


@pytest.mark.gen_test
async def test_csv_export_needs_login(session):
    response = await session.get("/dashboard/surveys/baogan/export.csv")
    assert response.code == 302


# -- simulator --------------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("mode", ["aes", "plain", "compat"])
async def test_simulator_goes_through_the_real_endpoint(logged_in, db, app, mode):
    response = await logged_in.post_json(
        "/api/simulator/send",
        {"user": "tester", "type": "text", "content": "爆肝度调查", "mode": mode},
    )
    assert response.code == 200, response.body
    result = json.loads(response.body)
    assert result["status"] == 200 and result["mode"] == mode
    assert result["user"] == "sim-tester"
    assert "第 1/10 题" in result["reply"]["Content"]
    assert result["reply"]["ToUserName"] == "sim-tester"
    if mode == "aes":
        assert "<Encrypt>" in result["response_body"]  # the reply went out encrypted
    stored = await db["messages"].find_one({"openid": "sim-tester"})
    assert stored["test_user"] is True and stored["mode"] == mode
    assert stored["text"] == "爆肝度调查"


@pytest.mark.gen_test(timeout=60)
async def test_simulator_events_and_media(logged_in, db):
    for payload in [
        {"type": "event", "event": "subscribe"},
        {"type": "event", "event": "unsubscribe"},
        {"type": "image"},
        {"type": "location"},
    ]:
        response = await logged_in.post_json("/api/simulator/send", {"user": "ev", **payload})
        assert response.code == 200, response.body
        result = json.loads(response.body)
        assert result["status"] == 200
    kinds = sorted([d["kind"] async for d in db["messages"].find({"openid": "sim-ev"})])
    assert kinds == ["event:subscribe", "event:unsubscribe", "image", "location"]


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "payload",
    [
        {"user": "bad user!", "content": "x"},
        {"user": "ok", "content": ""},
        {"user": "ok", "type": "video"},
        {"user": "ok", "content": "x", "mode": "weird"},
        {"user": "ok", "type": "event", "event": "explode"},
    ],
)
async def test_simulator_rejects_bad_input(logged_in, payload):
    response = await logged_in.post_json("/api/simulator/send", payload)
    assert response.code == 400
    assert json.loads(response.body)["error"]


@pytest.mark.gen_test(timeout=60)
async def test_wipe_test_data_keeps_real_users(logged_in, db, app, seeded):
    for text in ["爆肝度调查", "1"]:
        await logged_in.post_json("/api/simulator/send", {"user": "wipe", "content": text})
    assert await db["survey_sessions"].count_documents({"openid": "sim-wipe"}) == 1
    response = await logged_in.post_json("/api/simulator/wipe")
    assert response.code == 200
    deleted = json.loads(response.body)["deleted"]
    assert deleted == {"messages": 3, "users": 2, "survey_sessions": 1}  # sim-x + sim-wipe
    assert await db["messages"].count_documents({"openid": {"$regex": "^sim-"}}) == 0
    assert await db["users"].count_documents({"test_user": True}) == 0
    assert await db["messages"].count_documents({}) == 6


# -- owners -----------------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_owner_names_and_passwords(db):
    with pytest.raises(owners.OwnerError):
        await owners.create(db, "x", "short")
    with pytest.raises(owners.OwnerError):
        await owners.create(db, "has space", "long enough")
    doc = await owners.create(db, "Admin", "long enough")
    assert doc["_id"] == "admin"
    assert doc["password_hash"].startswith("$argon2id$")
    with pytest.raises(owners.OwnerError):
        await owners.create(db, "ADMIN", "another one")
    assert await owners.authenticate(db, "admin", "long enough") is not None
    assert await owners.authenticate(db, "admin", "wrong") is None


@pytest.mark.gen_test
async def test_first_owner_gets_a_one_time_password_once(db):
    password = await ensure_first_owner(db)
    assert password and len(password) >= 12
    owner = await owners.authenticate(db, "admin", password)
    assert owner is not None and owner["must_change_password"] is True
    assert await ensure_first_owner(db) is None


def test_create_owner_command(settings, io_loop, db):
    root = str(Path(__file__).resolve().parents[1])
    env = {
        "PATH": "/usr/bin:/bin",
        "MONGODB_URI": settings.mongodb_uri,
        "MONGODB_DB": settings.mongodb_db,
        "WECHAT_TOKEN": "t",
        "DATA_DIR": str(settings.data_dir),
    }
    cmd = [sys.executable, "-m", "service", "create-owner", "Manager", "--password-stdin"]
    done = subprocess.run(
        cmd,
        input="s3cret-pass\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=root,
    )
    assert done.returncode == 0, done.stderr
    assert "owner 'manager' created" in done.stdout
    again = subprocess.run(
        cmd,
        input="s3cret-pass\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert again.returncode == 1 and "already exists" in again.stderr
    short = subprocess.run(
        [*cmd[:-2], "other", "--password-stdin"],
        input="short\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=root,
    )
    assert short.returncode == 1 and "at least 8" in short.stderr
    reset = subprocess.run(
        [*cmd, "--reset"],
        input="brand-new-pass\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=root,
    )
    assert reset.returncode == 0, reset.stderr
    owner = io_loop.run_sync(lambda: owners.authenticate(db, "manager", "brand-new-pass"))
    assert owner is not None
