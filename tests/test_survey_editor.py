"""The survey editor's API: drafts keep whatever was typed, every mistake at its line, publish
(422 when invalid, nothing published), try the draft in the simulator through the real signed
/wechat path, close/reopen/archive, versions diff, YAML export, 413, XSRF."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.surveys import SurveyEngine
from tests.survey_helpers import Chat
from tests.test_survey_versions import PETS_V1, PETS_V2


async def post(session: Any, path: str, data: Any) -> tuple[int, Any]:
    response = await session.post_json(path, data)
    return response.code, json.loads(response.body)


@pytest.mark.gen_test(timeout=90)
async def test_write_check_publish_and_answer(logged_in, app, db, send, wechat):
    broken = PETS_V1.replace("options: [猫, 狗]", "options: [猫]")
    code, saved = await post(logged_in, "/api/survey-editor/pets/draft", {"text": broken})
    assert code == 200 and saved["saved"] and not saved["ok"]
    assert [(i["line"], i["column"], i["path"]) for i in saved["issues"]] == [
        (7, 14, "questions[0].options")
    ]
    assert saved["issues"][0]["message"] == "a choice question needs at least two options"

    # The draft keeps the text; publishing it is refused with the same list.
    info = await logged_in.get_json("/api/survey-editor/pets")
    assert info["text"] == broken and info["versions"] == [] and info["survey"] is None
    code, refused = await post(logged_in, "/api/survey-editor/pets/publish", {"text": broken})
    assert code == 422 and refused["issues"] == saved["issues"]
    # Only the imported shipped surveys (爆肝度调查, 咖啡因摄入调查).
    assert await db.survey_versions.count_documents({}) == 2

    # Another survey's id in the text is a mistake at the id's line.
    code, checked = await post(logged_in, "/api/survey-editor/dogs/check", {"text": PETS_V1})
    assert code == 200 and [i["text"] for i in checked["issues"]] == [
        "dogs.yaml:1:5: id: id is 'pets'; this survey is 'dogs'"
    ]

    code, published = await post(logged_in, "/api/survey-editor/pets/publish", {"text": PETS_V1})
    assert code == 200 and published == {"ok": True, "version": 1, "created": True}
    stored = await db.survey_versions.find_one({"_id": "pets:1"})
    assert stored["published_by"] == "boss" and stored["source"] == "dashboard"
    assert "第 1/3 题：你养什么？" in await Chat(send, wechat, "phone-user").say("宠物问卷")

    info = await logged_in.get_json("/api/survey-editor/pets")
    assert info["in_progress_on_latest"] == 1 and info["survey"]["version"] == 1
    code, _ = await post(logged_in, "/api/survey-editor/pets/publish", {"text": PETS_V2})
    assert code == 200
    diff = (await logged_in.get_json("/api/survey-editor/pets/diff", a=1, b=2))["diff"]
    assert "-    text: 养了几只？" in diff and "+    text: 每天遛几次？" in diff
    assert diff.startswith("--- pets v1\n+++ pets v2\n")

    export = await logged_in.get("/dashboard/survey-editor/pets/export.yaml", version=1)
    assert export.code == 200 and export.body.decode() == PETS_V1
    assert "pets-v1.yaml" in export.headers["Content-Disposition"]
    assert (await logged_in.get("/dashboard/survey-editor/pets/export.yaml")).body.decode() == (
        PETS_V2
    )
    listing = await logged_in.get_json("/api/survey-editor")
    versions = {i["id"]: i["version"] for i in listing["items"]}
    assert versions == {"baogan": 1, "caffeine": 1, "pets": 2}


@pytest.mark.gen_test(timeout=90)
async def test_try_the_draft_in_the_simulator(logged_in, app, db, send, wechat):
    code, _ = await post(logged_in, "/api/survey-editor/pets/publish", {"text": PETS_V1})
    assert code == 200
    code, tried = await post(logged_in, "/api/survey-editor/pets/try", {"text": PETS_V2})
    assert code == 200 and tried["ok"] and tried["keyword"] == "宠物问卷"

    # The owner, as a test user through the signed /wechat path, takes the draft ...
    response = await logged_in.post_json(
        "/api/simulator/send", {"user": "tester", "type": "text", "content": "宠物问卷"}
    )
    assert response.code == 200, response.body
    reply = json.loads(response.body)["reply"]["Content"]
    assert "第 1/4 题：你养什么？" in reply
    doc = await db.survey_sessions.find_one({"_id": "pets:sim-tester"})
    assert doc["sv"] == 0 and doc["test_user"] is True

    # ... while everybody else still gets the published version 1.
    assert "第 1/3 题" in await Chat(send, wechat, "real-user").say("宠物问卷")

    # Draft sessions are test-user data: wiped with them.
    wipe = await logged_in.post_json("/api/simulator/wipe", {})
    assert wipe.code == 200
    assert await db.survey_sessions.find_one({"_id": "pets:sim-tester"}) is None

    # An invalid draft cannot be tried.
    code, refused = await post(
        logged_in, "/api/survey-editor/pets/try", {"text": PETS_V1.replace("title", "titel")}
    )
    assert code == 422 and refused["issues"]

    # Publishing ends the try: test users get the published version again.
    await post(logged_in, "/api/survey-editor/pets/publish", {"text": PETS_V2})
    engine = app.settings["surveys"]
    assert isinstance(engine, SurveyEngine) and engine.snapshot.testers is None


@pytest.mark.gen_test(timeout=60)
async def test_states_limits_and_xsrf(logged_in, app, db):
    await post(logged_in, "/api/survey-editor/pets/publish", {"text": PETS_V1})
    code, closed = await post(logged_in, "/api/survey-editor/pets/state", {"action": "close"})
    assert code == 200 and closed["survey"]["availability"] == "closed"
    code, reopened = await post(logged_in, "/api/survey-editor/pets/state", {"action": "reopen"})
    assert reopened["survey"]["availability"] == "open"
    code, scheduled = await post(
        logged_in,
        "/api/survey-editor/pets/state",
        {"action": "schedule", "opens_at": "2099-01-01T09:00", "closes_at": None},
    )
    assert code == 200 and scheduled["survey"]["availability"] == "not_yet"
    assert scheduled["survey"]["opens_at"] == "2099-01-01T01:00:00.000Z"  # 09:00 Beijing time
    code, archived = await post(logged_in, "/api/survey-editor/pets/state", {"action": "archive"})
    assert archived["survey"]["availability"] == "archived"
    assert (await post(logged_in, "/api/survey-editor/pets/state", {"action": "x"}))[0] == 400
    assert (await post(logged_in, "/api/survey-editor/nope/state", {"action": "close"}))[0] == 404
    assert (await post(logged_in, "/api/survey-editor/Bad!/draft", {"text": "x"}))[0] == 400
    assert (await post(logged_in, "/api/survey-editor/pets/draft", {"text": 5}))[0] == 400

    huge = PETS_V1 + "intro: " + "长" * 90_000 + "\n"
    assert (await post(logged_in, "/api/survey-editor/pets/draft", {"text": huge}))[0] == 413
    assert (
        await logged_in.post_json("/api/survey-editor/pets/draft", {"text": "id: x"}, xsrf=False)
    ).code == 403
    assert (await db.surveys.find_one({"_id": "pets"}))["draft"]["text"] == PETS_V1


@pytest.mark.gen_test(timeout=60)
async def test_the_editor_page_renders_in_both_languages(logged_in, app):
    zh = (await logged_in.get("/dashboard/survey-editor/pets")).body.decode()
    assert "编辑问卷" in zh and "在模拟器中试答" in zh and "survey_edit" in zh
    en = (await logged_in.get("/dashboard/survey-editor/pets", lang="en")).body.decode()
    assert "Edit survey" in en and "Try in the simulator" in en
    listing = (await logged_in.get("/dashboard/surveys", lang="zh")).body.decode()
    assert "新建问卷" in listing
