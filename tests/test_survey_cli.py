"""``python -m service surveys publish | export | list`` against the service's database: the
publish/export round trip, a new version only when the definition changed, exit 2 with every
mistake listed and nothing published."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymongo
import pytest

from service.surveys.loader import parse_survey
from tests.test_survey_versions import PETS_V1, PETS_V2

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def database(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The environment of a service on the test server; the database, read synchronously."""
    for name in ("WECHAT_TOKEN", "SURVEYS_DIR", "MONGODB_URI", "MONGODB_DB"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MONGODB_URI", settings.mongodb_uri)
    monkeypatch.setenv("MONGODB_DB", settings.mongodb_db)
    monkeypatch.setenv("DATA_DIR", str(settings.data_dir))
    client: pymongo.MongoClient[dict[str, Any]]
    with pymongo.MongoClient(settings.mongodb_uri, tz_aware=True) as client:
        yield client[settings.mongodb_db]
        client.drop_database(settings.mongodb_db)


def main(argv: list[str]) -> int:
    """``python -m service ARGV`` as an operator runs it, in its own process (warnings and
    errors logged only); its output goes to this test's captured stdout and stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "service", "--log-level", "WARNING", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    return done.returncode


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_publish_export_round_trip(tmp_path, database, capsys):
    v1 = write(tmp_path, "pets.yaml", PETS_V1)
    assert main(["surveys", "publish", str(v1)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"published: pets version 1 ({v1})"]
    assert main(["surveys", "publish", str(v1)]) == 0  # unchanged: no version 2
    assert capsys.readouterr().out.splitlines() == [f"unchanged: pets version 1 ({v1})"]

    v2 = write(tmp_path, "pets2.yaml", PETS_V2)
    assert main(["surveys", "publish", str(v2)]) == 0
    assert "published: pets version 2" in capsys.readouterr().out
    stored = database.survey_versions.find_one({"_id": "pets:2"})
    assert stored["published_by"].startswith("cli") and stored["source"] == "cli"

    assert main(["surveys", "export", "pets"]) == 0
    exported = capsys.readouterr().out
    assert exported == PETS_V2  # exactly what was published
    assert main(["surveys", "export", "pets", "--version", "1"]) == 0
    exported_v1 = capsys.readouterr().out
    again, issues = parse_survey(exported_v1)
    original, _ = parse_survey(PETS_V1)
    assert not issues and again == original  # the same survey
    assert main(["surveys", "export", "pets", "--version", "7"]) == 1
    assert "no published version 7 of survey 'pets'" in capsys.readouterr().err

    # Re-publishing the export makes no new version.
    back = write(tmp_path, "back.yaml", exported)
    assert main(["surveys", "publish", str(back)]) == 0
    assert "unchanged: pets version 2" in capsys.readouterr().out

    assert main(["surveys", "list"]) == 0
    out = capsys.readouterr().out
    assert "1 survey(s) in the database:" in out
    assert "pets             「宠物问卷」 version 2, open, 0 in progress; keywords: 宠物问卷" in out


def test_a_folder_publishes_its_survey_files(tmp_path, database, capsys):
    """As ``check`` reads it: it used to validate the folder, publish nothing and exit 0."""
    folder = tmp_path / "surveys"
    folder.mkdir()
    pets = write(folder, "pets.yaml", PETS_V1)
    cats = write(
        folder,
        "cats.yaml",
        PETS_V1.replace("id: pets", "id: cats").replace(
            "keywords: [宠物问卷]", "keywords: [猫咪问卷]"
        ),
    )
    assert main(["surveys", "publish", str(folder)]) == 0
    assert sorted(capsys.readouterr().out.splitlines()) == [
        f"published: cats version 1 ({cats})",
        f"published: pets version 1 ({pets})",
    ]
    assert database.survey_versions.count_documents({}) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["surveys", "publish", str(empty)]) == 2
    assert "no *.yaml survey files in this folder" in capsys.readouterr().out


def test_list_counts_sessions_in_progress_per_version(tmp_path, database, capsys):
    assert main(["surveys", "publish", str(write(tmp_path, "p.yaml", PETS_V1))]) == 0
    assert main(["surveys", "publish", str(write(tmp_path, "q.yaml", PETS_V2))]) == 0
    capsys.readouterr()
    database.survey_sessions.insert_many(
        [
            {"_id": "pets:a", "survey": "pets", "openid": "a", "state": "in_progress", "sv": 1},
            {"_id": "pets:b", "survey": "pets", "openid": "b", "state": "in_progress", "sv": 2},
            {"_id": "pets:c", "survey": "pets", "openid": "c", "state": "finished", "sv": 2},
            {"_id": "pets:d", "survey": "pets", "openid": "d", "state": "in_progress"},
            {
                "_id": "pets:sim-e",
                "survey": "pets",
                "openid": "sim-e",
                "state": "in_progress",
                "test_user": True,
            },
        ]
    )
    assert main(["surveys", "list", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["id"], row["version"], row["in_progress"]) == ("pets", 2, 3)
    assert row["in_progress_by_version"] == {"1": 2, "2": 1}


def test_an_invalid_file_publishes_nothing(tmp_path, database, capsys):
    good = write(tmp_path, "good.yaml", PETS_V1.replace("id: pets", "id: cats"))
    bad = write(
        tmp_path,
        "bad.yaml",
        PETS_V1.replace("options: [猫, 狗]", "options: [猫]").replace(
            "keywords: [宠物问卷]", "x: 1"
        ),
    )
    assert main(["surveys", "publish", str(good), str(bad)]) == 2
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"{len(out) - 1} mistake(s) found; nothing published"
    assert f"{bad}:1:1: 'keywords' is required (the words that start the survey)" in out
    assert f"{bad}:3:4: x: unknown key 'x'" in "\n".join(out)
    assert any(line.startswith(f"{bad}:7:14: questions[0].options") for line in out), out
    assert database.survey_versions.count_documents({}) == 0

    # A keyword of a published survey is refused the same way.
    assert main(["surveys", "publish", str(good)]) == 0
    capsys.readouterr()
    assert main(["surveys", "publish", str(write(tmp_path, "dup.yaml", PETS_V1))]) == 2
    out = capsys.readouterr().out
    assert "keywords[0]: keyword '宠物问卷' also starts survey 'cats' (version 1)" in out
    assert database.survey_versions.count_documents({}) == 1
