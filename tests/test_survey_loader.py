"""Survey definitions: the shipped 爆肝度调查 is valid and complete; broken YAML is reported
mistake by mistake, with file, line and path; an invalid folder never half-loads; the CLI."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from service.__main__ import main
from service.app import make_app
from service.surveys import SHIPPED_DIR, SurveyLoadError, check_paths, load_dir, load_file
from service.surveys.loader import parse_survey
from tests.survey_helpers import LAB_YAML, write_surveys

GOOD = """\
id: ok
title: 好问卷
keywords: [好问卷]
questions:
  - id: q1
    text: 第一题
    options: [是, 否]
"""


def issues_of(text: str, name: str = "broken.yaml") -> list[str]:
    survey, issues = parse_survey(textwrap.dedent(text), name)
    assert survey is None
    assert issues
    return [str(i) for i in issues]


def test_shipped_baogan_survey():
    surveys = load_dir()
    assert [s.id for s in surveys] == ["baogan", "caffeine"]
    survey = surveys[0]
    assert survey.title == "爆肝度调查" and survey.keywords == ("爆肝度调查",)
    assert 8 <= survey.total <= 10
    assert all(q.kind == "single" and len(q.options) >= 2 for q in survey.questions)
    assert all(any(o.score for o in q.options) for q in survey.questions)  # every one scored
    assert 4 <= len(survey.bands) <= 5
    assert not survey.allow_retake and survey.open
    low, high = survey.score_range()
    assert (low, high) == (0, 30)
    # Every reachable score falls in exactly one band.
    for score in range(low, high + 1):
        assert sum(b.contains(score) for b in survey.bands) == 1
    assert all(b.comment for b in survey.bands)
    assert [b.title for b in survey.bands][:2] == ["作息模范生", "轻度熬夜"]


def test_every_mistake_reported_with_file_line_and_path():
    text = """\
    id: Bad Id
    title: ""
    keywords: [退出, 爆肝度调查, 爆肝度调查]
    colour: blue
    questions:
      - id: q1
        text: 第一题
        options: []
      - id: q1
        text: 重复的题号
        options:
          - {text: a, score: 1, next: q9}
          - {text: a, score: two}
      - id: q3
        kind: slider
        text: 未知题型
      - id: q4
        text: 往回跳
        options:
          - {text: a, next: q1}
          - {text: "", score: 1}
      - id: q5
        kind: multiple
        text: 多选
        min_choices: 3
        options:
          - {text: x, next: end}
          - y
    results:
      bands:
        - {min: 0, max: 2, title: 低}
        - {min: 2, max: 5, title: 高}
        - {min: 7, max: 3, title: 反}
    """
    found = issues_of(text)
    expected = [
        "broken.yaml:1:5: id: id 'Bad Id' must be lowercase letters, digits, '-' or '_'",
        "broken.yaml:2:8: title: 'title' must not be empty",
        "broken.yaml:3:12: keywords[0]: keyword '退出' is reserved as a command",
        "broken.yaml:3:23: keywords[2]: duplicate keyword '爆肝度调查'",
        "broken.yaml:4:9: colour: unknown key 'colour'",
        "broken.yaml:8:14: questions[0].options: options must not be empty",
        "broken.yaml:9:9: questions[1].id: duplicate question id 'q1' (also questions[0])",
        "broken.yaml:12:35: questions[1].options[0].next: unknown question id 'q9' (or 'end')",
        "broken.yaml:13:16: questions[1].options[1].text: duplicate option 'a'",
        "broken.yaml:13:26: questions[1].options[1].score: 'score' must be a whole number",
        "broken.yaml:15:11: questions[2].kind: unknown kind 'slider'",
        "broken.yaml:20:25: questions[3].options[0].next: jump to 'q1' goes backwards",
        "broken.yaml:21:16: questions[3].options[1].text: 'text' must not be empty",
        "broken.yaml:25:18: questions[4].min_choices: min_choices must be 1–2",
        "broken.yaml:27:25: questions[4].options[0].next: only single-choice options can jump",
        "broken.yaml:32:7: results.bands[1]: band '高' (2–5) overlaps '低' (0–2)",
        "broken.yaml:33:7: results.bands[2]: band min 7 is greater than max 3",
    ]
    assert len(found) == len(expected), "\n".join(found)
    for line, want in zip(found, expected, strict=True):
        assert line.startswith(want), (line, want)


def test_gaps_in_score_bands_and_dimension_references():
    found = issues_of("""\
    id: gaps
    title: 有空档
    keywords: 空档
    questions:
      - id: q1
        text: 一
        options:
          - {text: a, score: 0, dims: {speed: 1, nope: 2}}
          - {text: b, score: 5}
      - id: q2
        kind: rating
        text: 二
        scored: true
        dimension: missing
    results:
      bands:
        - {min: 0, max: 2, title: 低}
        - {min: 5, max: 8, title: 中}
      dimensions:
        - {id: speed, title: 速度}
    """)
    assert any("q1" not in f and "dims.nope: unknown dimension 'nope'" in f for f in found)
    assert any("questions[1].dimension: unknown dimension 'missing'" in f for f in found)
    # q2 is not built (bad dimension), so the range check does not run on a half survey.
    fixed = issues_of("""\
    id: gaps
    title: 有空档
    keywords: 空档
    questions:
      - id: q1
        text: 一
        options:
          - {text: a, score: 0}
          - {text: b, score: 5}
      - id: q2
        kind: rating
        text: 二
        scored: true
    results:
      bands:
        - {min: 0, max: 2, title: 低}
        - {min: 5, max: 8, title: 中}
    """)
    assert fixed == [
        "broken.yaml:16:5: results.bands: total scores 3–4 are possible (1–10) but in no band",
        "broken.yaml:16:5: results.bands: total scores 9–10 are possible (1–10) but in no band",
    ]


def test_structure_and_syntax_errors():
    assert issues_of("id: x\n title: [") == [
        "broken.yaml:2:7: invalid YAML: mapping values are not allowed here"
    ]
    assert issues_of("- just\n- a list\n") == [
        "broken.yaml:1:1: a survey must be a mapping (key: value), got list"
    ]
    found = issues_of("id: x\nid: y\ntitle: t\nkeywords: [k]\nquestions: []\n")
    assert found == [
        "broken.yaml:2:1: id: duplicate key 'id'",
        "broken.yaml:5:12: questions: a survey needs at least one question",
    ]
    found = issues_of("title: t\nquestions:\n  - text: q\n    options: [a, b]\n")
    assert found == [
        "broken.yaml:1:1: 'id' is required",
        "broken.yaml:1:1: 'keywords' is required (the words that start the survey)",
        "broken.yaml:3:5: questions[0]: 'id' is required",
    ]


def test_times_and_other_kinds():
    found = issues_of("""\
    id: t
    title: 时间
    keywords: [时间]
    opens_at: 2026-12-02 00:00
    closes_at: 2026-12-01 00:00
    allow_retake: "yes"
    questions:
      - {id: a, kind: rating, text: r, min: 5, max: 5}
      - {id: b, kind: number, text: n, min: 10, max: 1}
      - {id: c, kind: text, text: t, max_length: 0}
      - {id: d, kind: text, text: t, options: [x, y]}
    """)
    assert [f.split(": ", 1)[1] for f in found] == [
        "closes_at: closes_at must be after opens_at",
        "allow_retake: 'allow_retake' must be true or false, got 'yes'",
        "questions[0]: rating min 5 must be below max 5",
        "questions[1]: number min 10 is greater than max 1",
        "questions[2].max_length: max_length must be between 1 and 1000",
        "questions[3].options: unknown key 'options' (allowed: hint, id, kind, max_length, "
        "next, optional, screen_out_if, screen_out_text, show_if, text)",
    ]


def test_time_window_is_in_the_default_time_zone_and_availability():
    survey, issues = parse_survey(GOOD + "opens_at: 2026-12-01 09:00\ncloses_at: 2026-12-31\n")
    assert not issues and survey is not None
    assert survey.opens_at == dt.datetime(2026, 12, 1, 9, tzinfo=ZoneInfo("Asia/Shanghai"))
    assert survey.availability(dt.datetime(2026, 12, 1, 0, 59, tzinfo=dt.UTC)) == "not_yet"
    assert survey.availability(dt.datetime(2026, 12, 1, 1, 0, tzinfo=dt.UTC)) == "open"
    assert survey.availability(dt.datetime(2026, 12, 30, 16, 0, tzinfo=dt.UTC)) == "ended"
    closed, _ = parse_survey(GOOD + "open: false\n")
    assert closed is not None and closed.availability() == "closed"


def test_times_without_an_offset_are_read_in_the_owners_time_zone(tmp_path, monkeypatch, capsys):
    window = "opens_at: 2026-12-01 09:00\ncloses_at: 2026-12-31T00:00:00+08:00\n"
    new_york = ZoneInfo("America/New_York")
    survey, issues = parse_survey(GOOD + window, tz=new_york)
    assert not issues and survey is not None
    assert survey.opens_at == dt.datetime(2026, 12, 1, 9, tzinfo=new_york)
    assert survey.closes_at == dt.datetime(2026, 12, 30, 16, tzinfo=dt.UTC)  # an offset wins
    assert survey.describe()["opens_at"] == "2026-12-01T14:00:00.000Z"  # service.clock.iso

    folder = write_surveys(tmp_path / "s", good=GOOD + window)
    [loaded] = load_dir(folder, tz=new_york)
    assert loaded.opens_at == survey.opens_at
    monkeypatch.delenv("WECHAT_TOKEN", raising=False)
    monkeypatch.setenv("TIMEZONE", "America/New_York")
    assert main(["surveys", "list", "--dir", str(folder), "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["opens_at"] == "2026-12-01T14:00:00.000Z"


def test_branching_score_range_follows_jumps():
    survey, issues = parse_survey(LAB_YAML.replace("\n    ", "\n").removeprefix("    "))
    assert not issues and survey is not None
    assert survey.score_range() == (2, 15)
    coffee = survey.question("coffee")
    assert coffee is not None
    assert survey.next_after(coffee, [1]) == "cups"
    assert survey.next_after(coffee, [2]) == "comment"
    assert survey.next_after(survey.questions[-1]) is None


def test_a_folder_loads_all_or_nothing(tmp_path):
    folder = write_surveys(tmp_path / "s", good=GOOD, lab=LAB_YAML)
    assert sorted(s.id for s in load_dir(folder)) == ["lab", "ok"]
    (folder / "zz_bad.yaml").write_text(GOOD.replace("id: ok", "id: dup"), encoding="utf-8")
    with pytest.raises(SurveyLoadError) as caught:
        load_dir(folder)
    message = str(caught.value)
    assert "zz_bad.yaml:3:12: keywords[0]: keyword '好问卷' also starts survey 'ok'" in message
    assert [i.file for i in caught.value.issues] == [str(folder / "zz_bad.yaml")]
    (folder / "zz_bad.yaml").write_text(
        GOOD.replace("keywords: [好问卷]", "keywords: [x]"), encoding="utf-8"
    )
    with pytest.raises(SurveyLoadError, match="survey id 'ok' is also used by"):
        load_dir(folder)
    with pytest.raises(SurveyLoadError, match="surveys folder does not exist"):
        load_dir(tmp_path / "nowhere")
    assert load_file(folder / "good.yaml").id == "ok"


def test_start_up_fails_loudly_on_an_invalid_survey(settings, db, tmp_path):
    folder = write_surveys(
        tmp_path / "s",
        one=GOOD.replace("options: [是, 否]", "options: []"),
        two=GOOD.replace("id: ok", "id: Two"),
    )
    with pytest.raises(SurveyLoadError) as caught:
        make_app(settings.replace(surveys_dir=folder), db=db)
    # Both files are wrong (the keyword clash is checked between valid surveys only).
    assert len(caught.value.issues) == 2
    text = str(caught.value)
    assert "2 mistake(s)" in text and "one.yaml:7:14" in text and "two.yaml:1:5" in text


@pytest.mark.gen_test
async def test_make_app_loads_surveys_dir_or_the_shipped_folder(settings, db, tmp_path):
    folder = write_surveys(tmp_path / "s", good=GOOD, lab=LAB_YAML)
    apps = [make_app(settings.replace(surveys_dir=folder), db=db), make_app(settings, db=db)]
    try:
        custom, shipped = (app.settings["surveys"] for app in apps)
        assert sorted(s.id for s in custom.all_surveys()) == ["lab", "ok"]
        assert apps[0].settings["bot"].surveys is custom
        assert [s.id for s in shipped.all_surveys()] == ["baogan", "caffeine"]
    finally:
        for app in apps:
            await app.settings["process"].close()


def test_cli_check(tmp_path, capsys):
    good = SHIPPED_DIR / "baogan.yaml"
    assert main(["surveys", "check", str(good)]) == 0
    out = capsys.readouterr().out
    assert "ok: " in out
    assert "baogan 「爆肝度调查」, 10 question(s), scores 0–30 in 5 band(s)" in out

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        GOOD.replace("next", "x").replace("options: [是, 否]", "options: [是]"), encoding="utf-8"
    )
    assert main(["surveys", "check", str(bad), str(tmp_path / "missing.yaml")]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{bad}:7:14: questions[0].options: a choice question needs at least two options",
        f"{tmp_path / 'missing.yaml'}: no such file or folder",
        "2 mistake(s) found",
    ]


def test_cli_list_files(tmp_path, capsys, monkeypatch):
    """``surveys list --files``: the files start-up imports (``surveys list`` alone lists the
    database's published surveys: tests/test_survey_cli.py)."""
    monkeypatch.delenv("WECHAT_TOKEN", raising=False)
    monkeypatch.delenv("SURVEYS_DIR", raising=False)
    assert main(["surveys", "list", "--files"]) == 0
    out = capsys.readouterr().out
    assert f"2 survey(s) in {SHIPPED_DIR}:" in out
    assert "baogan" in out and "「爆肝度调查」 10 question(s), open, no retakes" in out

    folder = write_surveys(tmp_path / "s", lab=LAB_YAML, good=GOOD)
    monkeypatch.setenv("SURVEYS_DIR", str(folder))
    assert main(["surveys", "list", "--files", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [s["id"] for s in listed] == ["ok", "lab"]
    assert listed[1]["keywords"] == ["实验问卷", "LAB_MENU"] and listed[1]["allow_retake"]

    (folder / "bad.yaml").write_text("id: [", encoding="utf-8")
    assert main(["surveys", "list", "--files"]) == 1
    assert "bad.yaml:1:6: invalid YAML" in capsys.readouterr().out


def test_check_paths_reports_an_empty_folder(tmp_path):
    surveys, issues = check_paths([tmp_path])
    assert surveys == []
    assert [i.message for i in issues] == ["no *.yaml survey files in this folder"]


def test_dedented_helper_yaml_is_valid():
    # The tests' second survey must itself pass validation (it is used over /wechat).
    survey = load_file(
        write_surveys(Path(__import__("tempfile").mkdtemp()), lab=LAB_YAML) / "lab.yaml"
    )
    assert survey.id == "lab" and survey.allow_retake


def test_serve_refuses_to_start_with_an_invalid_survey(tmp_path, mongo_uri):
    """``python -m service serve`` exits with status 2 and lists every mistake."""
    folder = write_surveys(
        tmp_path / "s",
        one=GOOD.replace("options: [是, 否]", "options: []"),
        two=GOOD.replace("id: ok", "id: Two").replace("好问卷", "二号"),
    )
    env = {
        **os.environ,
        "WECHAT_TOKEN": "t",
        "MONGODB_URI": mongo_uri,
        "MONGODB_DB": f"test_{uuid.uuid4().hex[:12]}",
        "SURVEYS_DIR": str(folder),
        "DATA_DIR": str(tmp_path / "data"),
        "PORT": "0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "service", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert "2 mistake(s) in survey definitions" in done.stdout
    assert f"{folder / 'one.yaml'}:7:14: questions[0].options: options must not be empty" in (
        done.stdout
    )
    assert f"{folder / 'two.yaml'}:1:5: id: id 'Two' must be lowercase" in done.stdout


def test_messages_must_fit_in_one_wechat_reply():
    option = "      - 这是一个相当长的选项，用来把消息撑到两千字节以上"
    text = (
        "id: big\ntitle: 太长\nkeywords: [太长]\n"
        f"intro: {'很长的开场白' * 120}\n"
        "questions:\n  - id: q1\n    text: 选项很多\n    options:\n"
        + "".join(f"{option} {i}\n" for i in range(26))
    )
    survey, issues = parse_survey(text, "big.yaml")
    assert survey is None
    found = [str(i) for i in issues]
    assert len(found) == 2, found
    assert found[0].startswith("big.yaml:4:8: intro: the intro with question 1 is ")
    assert found[1].startswith("big.yaml:6:5: questions[0]: question 'q1' is ")
    assert found[1].endswith("bytes as sent; at most 1748 fit in one WeChat reply")


def test_reminder_and_expiry_durations():
    survey, issues = parse_survey(GOOD + "remind_after: 6h\nexpire_after: 3d\non_expire: resume\n")
    assert not issues and survey is not None
    assert (survey.remind_after, survey.expire_after, survey.on_expire) == (
        6 * 3600,
        3 * 86400,
        "resume",
    )
    quick, issues = parse_survey(GOOD + "remind_after: 2s\nexpire_after: 30m\n")
    assert not issues and quick is not None
    assert (quick.remind_after, quick.expire_after, quick.on_expire) == (2, 1800, "restart")
    plain, _ = parse_survey(GOOD)
    assert plain is not None and (plain.remind_after, plain.expire_after) == (None, None)


def test_reminder_and_expiry_mistakes_each_with_its_line():
    found = issues_of(GOOD + "remind_after: 6\nexpire_after: 2 weeks\n")
    assert found == [
        "broken.yaml:8:15: remind_after: 'remind_after' must be a duration like 30m, 6h or 2d, "
        "got 6",
        "broken.yaml:9:15: expire_after: 'expire_after' must be a duration like 30m, 6h or 2d, "
        "got '2 weeks'",
    ]
    found = issues_of(GOOD + "remind_after: 3d\n")
    assert len(found) == 1 and found[0].startswith(
        "broken.yaml:8:15: remind_after: 'remind_after' must be under 48h"
    )
    found = issues_of(GOOD + "remind_after: 2h\nexpire_after: 1h\n")
    assert found == [
        "broken.yaml:8:15: remind_after: 'remind_after' must be shorter than 'expire_after' "
        "(the session expires before the reminder is due)"
    ]
    assert issues_of(GOOD + "expire_after: 0m\non_expire: later\n") == [
        "broken.yaml:8:15: expire_after: 'expire_after' must be longer than zero",
        "broken.yaml:9:12: on_expire: 'on_expire' must be restart or resume, got 'later'",
    ]
    assert issues_of(GOOD + "on_expire: resume\n") == [
        "broken.yaml:8:12: on_expire: 'on_expire' needs 'expire_after' (when a session expires)"
    ]
