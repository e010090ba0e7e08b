"""``service.reports`` against the real database, on the seeded users of test_survey_aggregates."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service import reports
from service.surveys import SHIPPED_DIR, SurveyEngine, load_dir
from tests.survey_helpers import LAB_YAML, talk, write_surveys
from tests.test_survey_aggregates import seed


@pytest.fixture
def engine(tmp_path: Any) -> SurveyEngine:
    folder = write_surveys(tmp_path / "surveys", lab=LAB_YAML)
    (folder / "baogan.yaml").write_bytes((SHIPPED_DIR / "baogan.yaml").read_bytes())
    return SurveyEngine(load_dir(folder))


@pytest.fixture
def surveys(engine: SurveyEngine) -> list[Any]:
    return reports.definitions(engine)


def test_definitions_find_and_titles(engine, surveys):
    assert reports.definitions(None) == []
    assert [s.id for s in surveys] == [s.id for s in engine.all_surveys()]
    assert {s.id for s in surveys} == {"baogan", "lab"}
    assert reports.find(surveys, "lab") is engine.surveys["lab"]
    assert reports.find(surveys, "nope") is None
    assert {"id": "baogan", "title": "爆肝度调查"} in reports.titles(surveys)


@pytest.mark.gen_test(timeout=90)
async def test_survey_list_and_totals(engine, surveys, db, wechat):
    assert await reports.totals(db, surveys) == {"started": 0, "finished": 0}
    await seed(engine, db, wechat)
    items = {item["id"]: item for item in await reports.survey_list(db, surveys)}
    assert (items["baogan"]["started"], items["baogan"]["finished"]) == (6, 3)
    assert items["baogan"]["completion_rate"] == 0.5
    assert items["baogan"]["title"] == "爆肝度调查" and items["baogan"]["questions"] == 10
    assert (items["lab"]["started"], items["lab"]["finished"]) == (2, 2)
    assert await reports.totals(db, surveys) == {"started": 8, "finished": 5}
    assert await reports.totals(db, surveys, include_test=True) == {"started": 9, "finished": 6}
    assert await reports.totals(db, []) == {"started": 0, "finished": 0}


@pytest.mark.gen_test(timeout=90)
async def test_one_survey_report(engine, db, wechat):
    await seed(engine, db, wechat)
    baogan = engine.surveys["baogan"]
    report = await reports.survey_report(db, baogan)
    assert report["survey"]["id"] == "baogan"
    assert [q["id"] for q in report["questions"]][:2] == ["bedtime", "late_nights"]
    assert report["scores"] == [
        {"score": 0, "count": 1},
        {"score": 11, "count": 1},
        {"score": 30, "count": 1},
    ]
    assert report["average_score"] == round(41 / 3, 2)
    assert report["score_range"] == [0, 30]
    assert sum(b["count"] for b in report["bands"]) == 3
    assert (report["funnel"]["started"], report["funnel"]["finished"]) == (6, 3)
    # Per day in the owner's time zone: u1 11-26, u2 11-27, u3 11-29 (Shanghai).
    assert [(c["date"], c["count"]) for c in report["completions"]] == [
        ("2026-11-26", 1),
        ("2026-11-27", 1),
        ("2026-11-28", 0),
        ("2026-11-29", 1),
    ]
    utc = await reports.survey_report(db, baogan, timezone="UTC", include_test=True)
    assert utc["funnel"]["finished"] == 4
    assert [c["date"] for c in utc["completions"]] == ["2026-11-26", "2026-11-27", "2026-11-28"]
    json.dumps(report, ensure_ascii=False)  # JSON-ready as it is
    lab = await reports.survey_report(db, engine.surveys["lab"])
    assert lab["average_score"] == 7.0  # u7 8, u8 6


@pytest.mark.gen_test(timeout=90)
async def test_progress_of_a_page_of_users_in_one_query(engine, surveys, db, wechat, db_counter):
    await seed(engine, db, wechat)
    before = db_counter.snapshot()["by_command"].get("find", 0)
    page = await reports.progress(db, surveys, ["u1", "u4", "u7", "nobody"])
    assert db_counter.snapshot()["by_command"].get("find", 0) == before + 1
    assert list(page) == ["u1", "u4", "u7", "nobody"]
    by_survey = {openid: {p["survey_id"]: p for p in entries} for openid, entries in page.items()}
    u1 = by_survey["u1"]["baogan"]
    assert (u1["state"], u1["score"], u1["band"], u1["result_title"], u1["title"]) == (
        "finished",
        0,
        "healthy",
        "作息模范生",
        "爆肝度调查",
    )
    assert by_survey["u1"]["lab"] == {
        "survey_id": "lab",
        "title": "实验问卷",
        "total": 5,
        "state": "not_started",
    }
    u4 = by_survey["u4"]["baogan"]
    assert (u4["state"], u4["position"], u4["question_id"], u4["answered"], u4["paused"]) == (
        "in_progress",
        4,
        "alarm",
        3,
        False,
    )
    assert by_survey["u7"]["lab"]["state"] == "finished"
    assert {p["state"] for p in page["nobody"]} == {"not_started"}
    assert await reports.progress(db, surveys, []) == {}
    assert await reports.progress(db, [], ["u1"]) == {}


@pytest.mark.gen_test(timeout=90)
async def test_wipe_test_data_and_csv_rows(engine, db, wechat):
    await seed(engine, db, wechat)
    lab = engine.surveys["lab"]
    # A free-text answer that Excel would run as a formula.
    await talk(engine, db, wechat, "u9", "实验问卷", "1", "4", "2", "=1+2")
    header = reports.csv_header(lab)
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
    assert header[8] == "Q1 喜欢哪些水果？"
    rows = {row[0]: row async for row in reports.csv_rows(db, lab)}
    assert set(rows) == {"u7", "u8", "u9"}
    assert all(
        len(row) == len(header) and all(isinstance(c, str) for c in row) for row in rows.values()
    )
    assert rows["u9"][header.index("Q5 还有什么想说的？")] == "'=1+2"
    assert rows["u7"][header.index("Q1 喜欢哪些水果？")] == "苹果；香蕉"
    finished = [
        row async for row in reports.csv_rows(db, engine.surveys["baogan"], finished_only=True)
    ]
    assert sorted(row[0] for row in finished) == ["u1", "u2", "u3"]
    with_test = [
        row async for row in reports.csv_rows(db, engine.surveys["baogan"], include_test=True)
    ]
    assert "sim-1" in {row[0] for row in with_test}

    assert await reports.wipe_test(db) == {"survey_sessions": 1}
    assert await reports.wipe_test(db) == {"survey_sessions": 0}
    assert await db.survey_sessions.count_documents({"openid": "sim-1"}) == 0
