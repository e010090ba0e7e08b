"""The survey page's analysis: filters on every number, the cross-tab, the free-text answers.

Respondents answer through the real ``/wechat`` endpoint; the dashboard is asked over HTTP as the
owner; every number is checked exactly.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from typing import Any

import pytest

from service.surveys import SurveyEngine, load_dir
from tests.ops_helpers import until
from tests.survey_helpers import LAB_YAML, Chat, write_surveys

UTC = dt.UTC


@pytest.fixture
def app_extra(tmp_path: Any) -> dict[str, Any]:
    folder = write_surveys(tmp_path / "surveys", lab=LAB_YAML)
    return {"surveys": SurveyEngine(load_dir(folder))}


# The lab survey: fruit (multiple: 苹果 1, 香蕉 2, 橙子 3, 葡萄 4; scores 1-4), mood (rating 1-5,
# scored), coffee (喝 1 → cups, 不喝 2 → comment), cups (number 0-10), comment (text).
# Bands: low 0-5, high 6-20.
PEOPLE = {
    # openid: (channel, answers)                                   → state, score, band
    "a": ("poster-a", ["1 2", "4", "1", "2", "挺好吃的苹果"]),  # finished 8 high
    "b": ("poster-a", ["3", "2", "2", "很一般"]),  # finished 5 low
    "c": ("poster-b", ["1", "5", "1", "7", "苹果真好"]),  # finished 7 high
    "d": ("poster-b", ["2", "1"]),  # in progress at coffee
    "e": (None, ["4", "3", "2", "=1+1"]),  # finished 7 high
}


@pytest.fixture
def seeded(io_loop: Any, send: Any, wechat: Any, db: Any, app: Any) -> None:
    io_loop.run_sync(lambda: seed(send, wechat, db), timeout=120)


async def seed(send: Any, wechat: Any, db: Any) -> None:
    for openid, (channel, answers) in PEOPLE.items():
        user = Chat(send, wechat, openid)
        await user.say("实验问卷")
        for text in answers:
            await user.say(text)
        if channel:
            await db.survey_sessions.update_one(
                {"_id": f"lab:{openid}"}, {"$set": {"channel": channel}}
            )
    # Two starts around midnight in Shanghai (UTC+8): e on 11-20 local, d on 11-21 local.
    for openid, started in (
        ("e", dt.datetime(2026, 11, 20, 15, 30, tzinfo=UTC)),  # 11-20 23:30 in Shanghai
        ("d", dt.datetime(2026, 11, 20, 16, 30, tzinfo=UTC)),  # 11-21 00:30
    ):
        await db.survey_sessions.update_one(
            {"_id": f"lab:{openid}"}, {"$set": {"started_at": started}}
        )
    docs = await db.survey_sessions.find({"survey": "lab"}).to_list()
    assert {d["openid"]: (d["state"], d.get("score")) for d in docs} == {
        "a": ("finished", 8),
        "b": ("finished", 5),
        "c": ("finished", 7),
        "d": ("in_progress", None),
        "e": ("finished", 7),
    }


async def report(logged_in: Any, **params: Any) -> dict[str, Any]:
    return dict(await logged_in.get_json("/api/surveys/lab", **params))


def option(report: dict[str, Any], qid: str) -> list[int]:
    entry = next(q for q in report["questions"] if q["id"] == qid)
    return [o["count"] for o in entry["options"]]


@pytest.mark.gen_test(timeout=90)
async def test_filters_narrow_every_number(logged_in, seeded):
    everyone = await report(logged_in)
    assert everyone["funnel"]["started"] == 5 and everyone["funnel"]["finished"] == 4
    assert option(everyone, "fruit") == [2, 2, 1, 1]
    assert everyone["channels"] == [
        {"channel": "poster-a", "started": 2, "finished": 2, "completion_rate": 1.0},
        {"channel": "poster-b", "started": 2, "finished": 1, "completion_rate": 0.5},
        {"channel": None, "started": 1, "finished": 1, "completion_rate": 1.0},
    ]

    b = await report(logged_in, channel="poster-b")
    assert b["funnel"]["started"] == 2 and b["funnel"]["finished"] == 1
    assert option(b, "fruit") == [1, 1, 0, 0]
    assert [x["count"] for x in b["bands"]] == [0, 1]
    assert b["scores"] == [{"score": 7, "count": 1}]
    assert sum(c["count"] for c in b["completions"]) == 1
    assert b["filters"] == {"channel": "poster-b"}

    finished = await report(logged_in, state="finished")
    assert finished["funnel"]["started"] == 4 and finished["funnel"]["in_progress"] == 0
    progressing = await report(logged_in, state="in_progress")
    assert progressing["funnel"]["started"] == 1
    assert progressing["bands"] == [dict(x, count=0) for x in everyone["bands"]]

    high = await report(logged_in, band="high")
    assert high["funnel"]["started"] == 3 and high["average_score"] == round(22 / 3, 2)

    apple = await report(logged_in, answered="fruit:1")
    assert apple["funnel"]["started"] == 2 and option(apple, "fruit") == [2, 1, 0, 0]
    both = await report(logged_in, answered="fruit:1,mood:5")
    assert both["funnel"]["started"] == 1

    # Dates are local (TIMEZONE Asia/Shanghai), both ends included, on the session's start.
    day20 = await report(logged_in, **{"from": "2026-11-20", "to": "2026-11-20"})
    assert day20["funnel"]["started"] == 1 and option(day20, "fruit") == [0, 0, 0, 1]
    day21 = await report(logged_in, **{"from": "2026-11-21", "to": "2026-11-21"})
    assert day21["funnel"]["started"] == 1 and option(day21, "fruit") == [0, 1, 0, 0]
    up_to_21 = await report(logged_in, to="2026-11-21")
    assert up_to_21["funnel"]["started"] == 2

    combined = await report(logged_in, channel="poster-a", band="low", state="finished")
    assert combined["funnel"]["started"] == 1 and option(combined, "fruit") == [0, 0, 1, 0]


@pytest.mark.gen_test(timeout=60)
async def test_bad_filters_are_400_with_every_mistake(logged_in, seeded):
    response = await logged_in.get(
        "/api/surveys/lab",
        state="bogus",
        **{"from": "2026-13-01"},
        band="nope",
        answered="comment:1,fruit:9",
    )
    assert response.code == 400
    error = json.loads(response.body)["error"]
    for part in ("state:", "from:", "band:", "'comment:1'", "fruit has no option 9"):
        assert part in error, error
    export = await logged_in.get("/dashboard/surveys/lab/export.csv", state="bogus")
    assert export.code == 400


@pytest.mark.gen_test(timeout=90)
async def test_crosstab_counts_percentages_totals(logged_in, seeded):
    table = await logged_in.get_json("/api/surveys/lab/crosstab", rows="fruit", columns="coffee")
    assert [c["label"] for c in table["rows"]["categories"]] == ["苹果", "香蕉", "橙子", "葡萄"]
    assert [c["label"] for c in table["columns"]["categories"]] == ["喝", "不喝"]
    assert table["counts"] == [[2, 0], [1, 0], [0, 1], [0, 1]]
    assert table["row_totals"] == [2, 1, 1, 1]
    assert table["column_totals"] == [3, 2]
    assert table["total"] == 5 and table["respondents"] == 4  # d never answered coffee
    assert table["row_percent"] == [[100.0, 0.0], [100.0, 0.0], [0.0, 100.0], [0.0, 100.0]]
    assert table["column_percent"] == [[66.7, 0.0], [33.3, 0.0], [0.0, 50.0], [0.0, 50.0]]

    a_only = await logged_in.get_json(
        "/api/surveys/lab/crosstab", rows="fruit", columns="coffee", channel="poster-a"
    )
    assert a_only["counts"] == [[1, 0], [1, 0], [0, 1], [0, 0]] and a_only["respondents"] == 2

    # A rating against a number: the number in bins over the question's 0-10.
    numbers = await logged_in.get_json("/api/surveys/lab/crosstab", rows="mood", columns="cups")
    assert [c["label"] for c in numbers["rows"]["categories"]] == ["1", "2", "3", "4", "5"]
    labels = [c["label"] for c in numbers["columns"]["categories"]]
    assert labels[:4] == ["0–1", "2–3", "4–5", "6–7"]
    assert numbers["counts"][3][1] == 1 and numbers["counts"][4][3] == 1  # a: 4 × 2, c: 5 × 7
    assert numbers["total"] == 2

    text = await logged_in.get("/api/surveys/lab/crosstab", rows="fruit", columns="comment")
    assert text.code == 400

    exported = await logged_in.get(
        "/dashboard/surveys/lab/crosstab.csv", rows="fruit", columns="coffee"
    )
    assert exported.code == 200 and exported.body.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(exported.body.decode("utf-8-sig"))))
    assert rows[0][1:] == ["喝", "不喝", "合计 total"]
    assert rows[1] == ["苹果", "2", "0", "2"]
    assert rows[5] == ["合计 total", "3", "2", "5"]
    assert ["苹果", "66.7", "0.0"] in rows


@pytest.mark.gen_test(timeout=90)
async def test_free_text_answers_paged_and_searchable(logged_in, seeded):
    path = "/api/surveys/lab/text/comment"
    everything = await logged_in.get_json(path)
    assert everything["total"] == 4
    assert sorted(i["text"] for i in everything["items"]) == sorted(
        ["挺好吃的苹果", "很一般", "苹果真好", "=1+1"]
    )
    apples = await logged_in.get_json(path, q="苹果", per_page="1")
    assert apples["total"] == 2 and apples["pages"] == 2 and len(apples["items"]) == 1
    second = await logged_in.get_json(path, q="苹果", per_page="1", page="2")
    assert {apples["items"][0]["text"], second["items"][0]["text"]} == {"挺好吃的苹果", "苹果真好"}
    literal = await logged_in.get_json(path, q="1+1")  # not a regular expression
    assert [i["text"] for i in literal["items"]] == ["=1+1"]
    filtered = await logged_in.get_json(path, q="苹果", channel="poster-b")
    assert [i["openid"] for i in filtered["items"]] == ["c"]
    assert (await logged_in.get("/api/surveys/lab/text/fruit")).code == 404


@pytest.mark.gen_test(timeout=60)
async def test_csv_export_takes_the_filters(logged_in, seeded):
    response = await logged_in.get("/dashboard/surveys/lab/export.csv", channel="poster-a")
    rows = list(csv.reader(io.StringIO(response.body.decode("utf-8-sig"))))
    assert sorted(r[0] for r in rows[1:]) == ["a", "b"]
    finished = await logged_in.get("/dashboard/surveys/lab/export.csv", state="finished")
    body = finished.body.decode("utf-8-sig")
    assert len(body.strip().splitlines()) == 5
    assert "'=1+1" in body  # a formula-looking answer neutralised


# -- XLSX -------------------------------------------------------------------------------------
def read_xlsx(body: bytes) -> tuple[list[list[Any]], list[list[Any]]]:
    import openpyxl

    book = openpyxl.load_workbook(io.BytesIO(body), read_only=True)
    try:
        assert book.sheetnames == ["responses", "codebook"]
        sheets = [
            [list(r) for r in book[name].iter_rows(values_only=True)] for name in book.sheetnames
        ]
    finally:
        book.close()
    return sheets[0], sheets[1]


@pytest.mark.gen_test(timeout=90)
async def test_xlsx_export_codes_codebook_and_filters(logged_in, seeded):
    response = await logged_in.get("/dashboard/surveys/lab/export.xlsx")
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("application/vnd.openxmlformats")
    assert "lab-responses.xlsx" in response.headers["Content-Disposition"]
    responses, codebook = read_xlsx(response.body)
    header = responses[0]
    assert header[:8] == [
        "openid",
        "channel",
        "version",
        "state",
        "started",
        "finished",
        "score",
        "band",
    ]
    assert header[8:] == [
        "Q1_1", "Q1_2", "Q1_3", "Q1_4",  # fruit: one 0/1 column per option
        "Q2", "Q2_text",  # mood: the rating and its text
        "Q3", "Q3_text",  # coffee: option number and text
        "Q4",  # cups
        "Q5",  # comment
    ]  # fmt: skip
    rows = {r[0]: dict(zip(header, r, strict=True)) for r in responses[1:]}
    assert sorted(rows) == ["a", "b", "c", "d", "e"]
    a = rows["a"]
    assert (a["channel"], a["version"], a["state"], a["score"], a["band"]) == (
        "poster-a", 1, "finished", 8, "high"
    )  # fmt: skip
    assert [a[f"Q1_{i}"] for i in range(1, 5)] == [1, 1, 0, 0]
    assert (a["Q2"], a["Q3"], a["Q3_text"], a["Q4"], a["Q5"]) == (4, 1, "喝", 2, "挺好吃的苹果")
    assert isinstance(a["started"], dt.datetime) and isinstance(a["finished"], dt.datetime)
    d = rows["d"]  # in progress after two answers: the rest empty, not 0
    assert d["state"] == "in_progress" and d["finished"] is None and d["Q3"] is None
    assert [d[f"Q1_{i}"] for i in range(1, 5)] == [0, 1, 0, 0]
    # Started 2026-11-20 15:30 UTC: written in TIMEZONE (Asia/Shanghai), 23:30.
    assert rows["e"]["started"] == dt.datetime(2026, 11, 20, 23, 30)
    assert rows["e"]["Q5"] == "'=1+1"  # a formula-looking answer neutralised
    # The codebook: every column, every code with its meaning.
    assert codebook[0] == ["column", "question id", "question", "kind", "code", "meaning"]
    q3 = next(i for i, r in enumerate(codebook) if r[0] == "Q3")
    assert codebook[q3][1:4] == ["coffee", "喝咖啡吗？", "single (单选)"]
    assert (codebook[q3][4], codebook[q3][5]) == (1, "喝")
    assert (codebook[q3 + 1][4], codebook[q3 + 1][5]) == (2, "不喝")
    q2 = next(r for r in codebook if r[0] == "Q2")
    assert (q2[4], q2[5]) == (1, "很差")
    assert any(r[0] == "Q1_3" and r[2] == "喜欢哪些水果？: 橙子" for r in codebook)

    filtered = await logged_in.get(
        "/dashboard/surveys/lab/export.xlsx", channel="poster-b", state="finished"
    )
    only, _ = read_xlsx(filtered.body)
    assert [r[0] for r in only[1:]] == ["c"]


async def pseudonyms_of(db: Any, *openids: str) -> dict[str, str]:
    from service.store import privacy

    key = await privacy.pseudonym_key(db)
    return {privacy.pseudonymize(key, o): o for o in openids}


@pytest.mark.gen_test(timeout=90)
async def test_pseudonymous_exports(logged_in, seeded, db):
    """``pseudonymous=1`` on every export: openids become keyed hashes, the same person the same
    pseudonym in each file, nothing else changed."""
    names = await pseudonyms_of(db, *PEOPLE)
    plain = await logged_in.get("/dashboard/surveys/lab/export.csv", header="keys")
    hidden = await logged_in.get(
        "/dashboard/surveys/lab/export.csv", header="keys", pseudonymous="1"
    )
    plain_rows = list(csv.reader(io.StringIO(plain.body.decode("utf-8-sig"))))
    rows = list(csv.reader(io.StringIO(hidden.body.decode("utf-8-sig"))))
    assert rows[0][0] == "pseudonym" and rows[0][1:] == plain_rows[0][1:]
    assert {r[0] for r in rows[1:]} == set(names)
    by_person = {names[r[0]]: r[1:] for r in rows[1:]}
    assert by_person == {r[0]: r[1:] for r in plain_rows[1:]}  # only the openid changed
    people = await logged_in.get("/dashboard/surveys/lab/export.csv", pseudonymous="1")
    assert people.body.decode("utf-8-sig").split(",", 1)[0] == "化名"  # the page's language

    book = await logged_in.get("/dashboard/surveys/lab/export.xlsx", pseudonymous="1")
    responses, _ = read_xlsx(book.body)
    assert responses[0][0] == "pseudonym"
    assert {r[0] for r in responses[1:]} == set(names)

    # The user records are written by the batched counters, just after the replies.
    async def users_written() -> bool:
        return await db.users.count_documents({"_id": {"$in": list(PEOPLE)}}) == len(PEOPLE)

    await until(users_written)
    users = await logged_in.get("/dashboard/users/export.csv", header="keys", pseudonymous="1")
    user_rows = list(csv.reader(io.StringIO(users.body.decode("utf-8-sig"))))
    assert user_rows[0][0] == "pseudonym"
    assert {r[0] for r in user_rows[1:]} == set(names)

    messages = await logged_in.get(
        "/dashboard/messages/export.csv", header="keys", pseudonymous="1"
    )
    message_rows = list(csv.reader(io.StringIO(messages.body.decode("utf-8-sig"))))
    column = message_rows[0].index("pseudonym")
    assert "openid" not in message_rows[0]
    assert {r[column] for r in message_rows[1:]} == set(names)


def test_results_command_line(tmp_path, settings, seeded, monkeypatch, io_loop, db):
    """``python -m service results`` against the service's database, as an operator runs it."""
    import subprocess
    import sys

    for name in ("WECHAT_TOKEN", "SURVEYS_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MONGODB_URI", settings.mongodb_uri)
    monkeypatch.setenv("MONGODB_DB", settings.mongodb_db)
    monkeypatch.setenv("DATA_DIR", str(settings.data_dir))
    lab = write_surveys(tmp_path / "lab", lab=LAB_YAML) / "lab.yaml"

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "service", "--log-level", "WARNING", *argv],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    assert cli("surveys", "publish", str(lab)).returncode == 0
    out = tmp_path / "lab.xlsx"
    done = cli("results", "lab", "--format", "xlsx", "-o", str(out), "--state", "finished")
    assert done.returncode == 0, done.stderr
    assert "4 session(s)" in done.stderr
    responses, codebook = read_xlsx(out.read_bytes())
    assert sorted(r[0] for r in responses[1:]) == ["a", "b", "c", "e"]
    assert codebook[0][0] == "column"
    csv_out = tmp_path / "lab.csv"
    done = cli("results", "lab", "-o", str(csv_out), "--channel", "poster-a")
    assert done.returncode == 0, done.stderr
    rows = list(csv.reader(io.StringIO(csv_out.read_text(encoding="utf-8-sig"))))
    assert sorted(r[0] for r in rows[1:]) == ["a", "b"]
    bad = cli("results", "lab", "-o", str(csv_out), "--state", "bogus", "--band", "nope")
    assert bad.returncode == 1 and "state:" in bad.stderr and "band:" in bad.stderr
    assert cli("results", "nosuch", "-o", str(csv_out)).returncode == 1
    # --pseudonymous: the dashboard's pseudonyms (one secret in the database for every process)
    names = io_loop.run_sync(lambda: pseudonyms_of(db, "a", "b"))
    done = cli("results", "lab", "-o", str(csv_out), "--channel", "poster-a", "--pseudonymous")
    assert done.returncode == 0, done.stderr
    rows = list(csv.reader(io.StringIO(csv_out.read_text(encoding="utf-8-sig"))))
    assert rows[0][0] == "pseudonym" and {r[0] for r in rows[1:]} == set(names)
    done = cli("results", "lab", "--format", "xlsx", "-o", str(out), "--pseudonymous")
    assert done.returncode == 0, done.stderr
    responses, _ = read_xlsx(out.read_bytes())
    assert responses[0][0] == "pseudonym"
    assert {r[0] for r in responses[1:]} == set(
        io_loop.run_sync(lambda: pseudonyms_of(db, *PEOPLE))
    )
