"""The dashboard's survey numbers, computed in MongoDB, on a seeded set of users: exact values."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

import pytest

from service import reports
from service.store import surveys as store
from service.surveys import SHIPPED_DIR, SurveyEngine, load_dir
from tests.survey_helpers import BAOGAN_IDS, LAB_YAML, talk, write_surveys

UTC = dt.UTC


@pytest.fixture
def engine(tmp_path: Any) -> SurveyEngine:
    folder = write_surveys(tmp_path / "surveys", lab=LAB_YAML)
    (folder / "baogan.yaml").write_bytes((SHIPPED_DIR / "baogan.yaml").read_bytes())
    return SurveyEngine(load_dir(folder))


async def seed(engine: SurveyEngine, db: Any, wechat: Any) -> None:
    """u1–u3 finish (scores 0, 30, 11); u4 stops at question 4; u5 pauses at question 1;
    u6 pauses at question 4; sim-1 (a simulator user) finishes with 30; u7, u8 take the lab."""
    start = "爆肝度调查"
    await talk(engine, db, wechat, "u1", start, *["1"] * 10)
    await talk(engine, db, wechat, "u2", start, *["4"] * 10)
    await talk(engine, db, wechat, "u3", start, *["2"] * 10)
    await talk(engine, db, wechat, "u4", start, "1", "1", "1")
    await talk(engine, db, wechat, "u5", start, "退出")
    await talk(engine, db, wechat, "u6", start, "3", "3", "3", "退出")
    await talk(engine, db, wechat, "sim-1", start, *["4"] * 10)
    await talk(engine, db, wechat, "u7", "实验问卷", "1 2", "4", "1", "2", "挺好")
    await talk(engine, db, wechat, "u8", "实验问卷", "3", "2", "1", "4杯", "一般")
    # Completion times, to count per day in China time.
    for openid, finished in (
        ("u1", dt.datetime(2026, 11, 26, 15, 30, tzinfo=UTC)),  # 11-26 23:30 in Shanghai
        ("u2", dt.datetime(2026, 11, 26, 16, 30, tzinfo=UTC)),  # 11-27 00:30
        ("u3", dt.datetime(2026, 11, 28, 17, 0, tzinfo=UTC)),  # 11-29 01:00
        ("sim-1", dt.datetime(2026, 11, 27, 3, 0, tzinfo=UTC)),  # 11-27 11:00
    ):
        await db.survey_sessions.update_one(
            {"_id": f"baogan:{openid}"}, {"$set": {"finished_at": finished}}
        )


async def progress(db: Any, survey: Any, openid: str) -> dict[str, Any]:
    """One user's progress in one survey, as the dashboard gets it (``reports.progress``)."""
    return (await reports.progress(db, [survey], [openid]))[openid][0]


@pytest.mark.gen_test(timeout=90)
async def test_aggregates_on_seeded_users(engine, db, wechat):
    await seed(engine, db, wechat)
    baogan = engine.surveys["baogan"]

    counts = await store.option_counts(db, baogan)
    assert [q["id"] for q in counts] == BAOGAN_IDS
    by_id = {q["id"]: q for q in counts}
    assert by_id["bedtime"]["answered"] == 5
    assert [o["count"] for o in by_id["bedtime"]["options"]] == [2, 1, 1, 1]
    assert by_id["bedtime"]["options"][0] == {"value": 1, "label": "晚上 11 点以前", "count": 2}
    assert [o["count"] for o in by_id["sleep_hours"]["options"]] == [2, 1, 1, 1]
    assert by_id["alarm"]["answered"] == 3
    assert [o["count"] for o in by_id["alarm"]["options"]] == [1, 1, 0, 1]
    assert by_id["all_nighter"]["position"] == 10
    everyone = await store.option_counts(db, baogan, include_test_users=True)
    with_tests = {q["id"]: q for q in everyone}
    assert [o["count"] for o in with_tests["bedtime"]["options"]] == [2, 1, 1, 2]
    finished = {q["id"]: q for q in await store.option_counts(db, baogan, finished_only=True)}
    assert [o["count"] for o in finished["bedtime"]["options"]] == [1, 1, 0, 1]

    assert await store.score_distribution(db, baogan) == [
        {"score": 0, "count": 1},
        {"score": 11, "count": 1},
        {"score": 30, "count": 1},
    ]
    assert (await store.score_distribution(db, baogan, include_test_users=True))[-1] == {
        "score": 30,
        "count": 2,
    }

    bands = await store.band_counts(db, baogan)
    assert [(b["band"], b["count"]) for b in bands] == [
        ("healthy", 1),
        ("light", 1),
        ("moderate", 0),
        ("heavy", 0),
        ("extreme", 1),
    ]
    assert bands[1] == {"band": "light", "title": "轻度熬夜", "min": 7, "max": 13, "count": 1}

    funnel = await store.funnel(db, baogan)
    assert {k: v for k, v in funnel.items() if k != "questions"} == {
        "started": 6,
        "finished": 3,
        "in_progress": 3,
        "paused": 2,
        "screened_out": 0,
        "quota_full": 0,
        "expired": 0,
        "completion_rate": 0.5,
        "reminders": {"reminded": 0, "finished_after": 0, "failed": 0},
    }
    steps = [(q["id"], q["reached"], q["answered"], q["dropped"]) for q in funnel["questions"]]
    assert steps == [
        ("bedtime", 6, 5, 1),
        ("late_nights", 5, 5, 0),
        ("sleep_hours", 5, 5, 0),
        ("alarm", 5, 3, 2),
        *[(qid, 3, 3, 0) for qid in BAOGAN_IDS[4:]],
    ]
    assert (await store.funnel(db, baogan, include_test_users=True))["finished"] == 4

    assert await store.completions_over_time(db, baogan) == [
        {"date": "2026-11-26", "count": 1},
        {"date": "2026-11-27", "count": 1},
        {"date": "2026-11-28", "count": 0},
        {"date": "2026-11-29", "count": 1},
    ]
    assert await store.completions_over_time(db, baogan, fill=False, include_test_users=True) == [
        {"date": "2026-11-26", "count": 1},
        {"date": "2026-11-27", "count": 2},
        {"date": "2026-11-29", "count": 1},
    ]
    assert await store.completions_over_time(db, baogan, timezone="UTC", fill=False) == [
        {"date": "2026-11-26", "count": 2},
        {"date": "2026-11-28", "count": 1},
    ]
    since = dt.datetime(2026, 11, 27, tzinfo=UTC)
    assert await store.completions_over_time(db, baogan, since=since) == [
        {"date": "2026-11-29", "count": 1},
    ]


@pytest.mark.gen_test(timeout=90)
async def test_progress_responses_and_wiping_test_data(engine, db, wechat):
    await seed(engine, db, wechat)
    baogan = engine.surveys["baogan"]

    # The one progress shape (reports.progress_entry): ``position`` is the question number,
    # ``result_title`` the band's title, ``survey_id`` + ``title`` name the survey.
    u4 = await progress(db, baogan, "u4")
    assert {
        k: u4[k]
        for k in ("state", "paused", "position", "question_id", "total", "answered", "attempt")
    } == {
        "state": "in_progress",
        "paused": False,
        "position": 4,
        "question_id": "alarm",
        "total": 10,
        "answered": 3,
        "attempt": 1,
    }
    u5 = await progress(db, baogan, "u5")
    assert (u5["state"], u5["paused"], u5["position"], u5["answered"]) == (
        "in_progress",
        True,
        1,
        0,
    )
    u1 = await progress(db, baogan, "u1")
    assert (u1["state"], u1["score"], u1["band"], u1["result_title"]) == (
        "finished",
        0,
        "healthy",
        "作息模范生",
    )
    assert u1["finished_at"] == dt.datetime(2026, 11, 26, 15, 30, tzinfo=UTC)
    assert await progress(db, baogan, "nobody") == {
        "state": "not_started",
        "survey_id": "baogan",
        "title": "爆肝度调查",
        "total": 10,
    }

    columns = store.response_columns(baogan)
    assert [key for key, _ in columns][:8] == [
        "openid",
        "state",
        "attempt",
        "started_at",
        "finished_at",
        "score",
        "result",
        "ended",
    ]
    assert columns[8] == ("bedtime", "Q1 最近一个月，你通常几点睡觉？")
    rows = [row async for row in store.iter_responses(db, baogan)]
    assert [r["openid"] for r in rows] == ["u1", "u2", "u3", "u4", "u5", "u6"]
    assert all(list(r) == [key for key, _ in columns] for r in rows)
    first = rows[0]
    assert (first["state"], first["score"], first["result"]) == ("finished", 0, "作息模范生")
    assert first["bedtime"] == "晚上 11 点以前" and first["all_nighter"] == "想不起来了，很久以前"
    assert first["finished_at"] == "2026-11-26T15:30:00.000Z"  # service.clock.iso
    assert (rows[3]["state"], rows[3]["bedtime"], rows[3]["alarm"], rows[3]["score"]) == (
        "in_progress",
        "晚上 11 点以前",
        "",
        "",
    )
    assert rows[4]["state"] == "paused" and all(rows[4][q] == "" for q in BAOGAN_IDS)
    finished_rows = [r async for r in store.iter_responses(db, baogan, finished_only=True)]
    assert [r["openid"] for r in finished_rows] == ["u1", "u2", "u3"]
    # The rows go straight into a CSV writer.
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[key for key, _ in columns])
    writer.writerows(rows)
    assert out.getvalue().count("\n") == 6

    assert len([r async for r in store.iter_responses(db, baogan, include_test_users=True)]) == 7
    assert await store.delete_test_data(db) == 1
    assert await db.survey_sessions.count_documents({"openid": {"$regex": "^sim-"}}) == 0
    assert await db.survey_sessions.count_documents({}) == 8
    assert (await store.funnel(db, baogan, include_test_users=True))["finished"] == 3


@pytest.mark.gen_test(timeout=90)
async def test_other_kinds_in_aggregates(engine, db, wechat):
    await seed(engine, db, wechat)
    lab = engine.surveys["lab"]
    counts = {q["id"]: q for q in await store.option_counts(db, lab)}
    assert [o["count"] for o in counts["fruit"]["options"]] == [1, 1, 1, 0]  # multiple choice
    assert counts["fruit"]["answered"] == 2
    assert [(o["value"], o["count"]) for o in counts["mood"]["options"]] == [
        (1, 0),
        (2, 1),
        (3, 0),
        (4, 1),
        (5, 0),
    ]
    assert counts["cups"]["stats"] == {"count": 2, "avg": 3.0, "min": 2, "max": 4}
    assert counts["comment"]["answered"] == 2 and counts["comment"]["options"] == []
    assert await store.score_distribution(db, lab) == [
        {"score": 6, "count": 1},
        {"score": 8, "count": 1},  # u8: 3+2+1, u7: (1+2)+4+1
    ]
    assert [(b["band"], b["count"]) for b in await store.band_counts(db, lab)] == [
        ("low", 0),
        ("high", 2),
    ]
    rows = {r["openid"]: r async for r in store.iter_responses(db, lab)}
    assert rows["u7"]["fruit"] == "苹果；香蕉" and rows["u7"]["cups"] == "2杯"
    assert rows["u8"]["comment"] == "一般" and rows["u8"]["mood"] == "2"
