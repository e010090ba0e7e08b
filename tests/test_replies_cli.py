"""``python -m service replies check | export | publish`` against the service's database: the
round trip, every mistake listed with its line and nothing saved, surveys checked by name."""

from __future__ import annotations

import textwrap

import yaml

from tests.test_survey_cli import database, main, write
from tests.test_survey_versions import PETS_V1

__all__ = ["database"]  # the fixture shared with the surveys' CLI tests

REPLIES = textwrap.dedent(
    """\
    welcome: 欢迎关注！
    default: greeting
    unknown: {text: 对不起，不能识别您发的内容！}
    rules:
      - {match: exact, keyword: 菜单, reply: {text: "1. 宠物问卷\\n2. 联系我们"}}
      - {match: regex, pattern: "^(hi|hello)\\\\b", reply: {text: Hi!}}
      - {match: exact, keyword: 开始, reply: {survey: pets}}
      - {match: exact, keyword: 图片, reply: {image: MEDIA_ID}, enabled: false}
    """
)


def test_export_of_an_empty_database_is_the_built_in_replies(database, capsys):
    assert main(["replies", "export"]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    assert data == {
        "welcome": "欢迎关注！",
        "welcome_hint": True,
        "default": "greeting",
        "unknown": {"text": "对不起，不能识别您发的内容！"},
        "image": "configured",
        "rules": [],
    }


def test_publish_export_round_trip(tmp_path, database, capsys):
    assert main(["surveys", "publish", str(write(tmp_path, "pets.yaml", PETS_V1))]) == 0
    capsys.readouterr()
    path = write(tmp_path, "replies.yaml", REPLIES)
    assert main(["replies", "check", str(path)]) == 0
    assert main(["replies", "publish", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"published: reply rules version 1 ({path})" in out
    stored = database.reply_rules.find_one({"_id": "current"})
    assert stored["version"] == 1 and stored["updated_by"].startswith("cli")
    assert main(["replies", "export"]) == 0
    exported = capsys.readouterr().out
    assert "# version 1" in exported
    assert yaml.safe_load(exported)["rules"] == yaml.safe_load(REPLIES)["rules"]
    again = write(tmp_path, "again.yaml", exported)
    assert main(["replies", "publish", str(again)]) == 0
    assert database.reply_rules.find_one({"_id": "current"})["version"] == 2


def test_every_mistake_listed_and_nothing_saved(tmp_path, database, capsys):
    bad = REPLIES.replace("^(hi|hello)", "(a)\\\\1").replace("survey: pets", "survey: nope")
    bad += "  - {match: exact, keyword: 菜单, reply: {video: {title: 没有 media_id}}}\n"
    path = write(tmp_path, "bad.yaml", bad)
    assert main(["replies", "publish", str(path)]) == 2
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "4 mistake(s) found; nothing published"
    assert any(f"{path}:6:" in line and "rules[1].pattern: refused" in line for line in lines)
    assert any("rules[2].reply.survey: no published survey 'nope'" in line for line in lines)
    assert any("rules[4].reply.video.media_id" in line for line in lines)
    assert any("rules[4].keyword: the same keyword as rules[0]" in line for line in lines)
    assert database.reply_rules.find_one({"_id": "current"}) is None
    assert main(["replies", "check", str(path)]) == 1  # without the database: 3 of them
    assert capsys.readouterr().out.splitlines()[-1] == "3 mistake(s) found"
