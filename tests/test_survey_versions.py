"""Surveys as versioned data: published versions in MongoDB, sessions pinned to their version,
start-up imports, bad input, and a publish reaching a second app instance within 2 seconds."""

from __future__ import annotations

import asyncio
import logging
import textwrap
import time
from typing import Any

import pytest

from service.app import make_app
from service.db import connect
from service.surveys import SHIPPED_DIR, SurveyCatalog, SurveyEngine
from service.surveys.catalog import MAX_DEFINITION_BYTES, definition_digest
from tests.ops_helpers import until
from tests.survey_helpers import Chat

PETS_V1 = textwrap.dedent(
    """\
    id: pets
    title: 宠物问卷
    keywords: [宠物问卷]
    questions:
      - id: kind
        text: 你养什么？
        options: [猫, 狗]
      - id: count
        text: 养了几只？
        options: [一只, 两只]
      - id: happy
        text: 开心吗？
        options: [开心, 很开心]
    """
)
# Version 2: question 2 asks something else, with three options; a question is added.
PETS_V2 = (
    PETS_V1.replace("养了几只？", "每天遛几次？")
    .replace("[一只, 两只]", "[不遛, 一次, 两次]")
    .replace(
        "  - id: happy\n",
        "  - id: food\n    text: 吃什么？\n    options: [粮, 罐头]\n  - id: happy\n",
    )
)


@pytest.fixture
def settings(settings: Any, tmp_path: Any) -> Any:
    """The service imports the files of SURVEYS_DIR: here only the 爆肝度调查."""
    folder = tmp_path / "surveys"
    folder.mkdir()
    (folder / "baogan.yaml").write_text(
        (SHIPPED_DIR / "baogan.yaml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    return settings.replace(surveys_dir=folder)


def engine_of(app: Any) -> SurveyEngine:
    engine = app.settings["surveys"]
    assert isinstance(engine, SurveyEngine) and engine.catalog is not None
    return engine


def catalog_of(app: Any) -> SurveyCatalog:
    catalog = engine_of(app).catalog
    assert catalog is not None
    return catalog


async def session(db: Any, survey: str, openid: str) -> Any:
    return await db.survey_sessions.find_one({"_id": f"{survey}:{openid}"})


# -- start-up imports ------------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=60)
async def test_the_survey_files_are_imported_once_as_version_1(app, db, settings, caplog):
    caplog.set_level(logging.INFO, "service.surveys.catalog")
    await asyncio.wait_for(engine_of(app).ready(), 20)
    versions = await db.survey_versions.find({"survey": "baogan"}).to_list()
    assert [(v["n"], v["source"], v["published_by"]) for v in versions] == [
        (1, "dir:baogan.yaml", "start-up")
    ]
    assert versions[0]["text"] == (settings.surveys_dir / "baogan.yaml").read_text("utf-8")
    assert "survey baogan: dir:baogan.yaml imported as version 1" in caplog.text

    # A restart (another process on the same database) makes no version 2.
    other = make_app(settings, db=db)
    try:
        await asyncio.wait_for(engine_of(other).ready(), 20)
        assert engine_of(other).surveys["baogan"].version == 1
    finally:
        await other.settings["process"].close()
    assert await db.survey_versions.count_documents({"survey": "baogan"}) == 1

    # A newer file does, and the log says so.
    path = settings.surveys_dir / "baogan.yaml"
    path.write_text(
        path.read_text("utf-8").replace("爆肝度调查\n", "爆肝度调查（新版）\n", 1), "utf-8"
    )
    newer = make_app(settings, db=db)
    try:
        await asyncio.wait_for(engine_of(newer).ready(), 20)
        assert engine_of(newer).surveys["baogan"].version == 2
        assert engine_of(newer).surveys["baogan"].title == "爆肝度调查（新版）"
    finally:
        await newer.settings["process"].close()
    assert "survey baogan: dir:baogan.yaml imported as version 2" in caplog.text


@pytest.mark.gen_test(timeout=60)
async def test_an_unchanged_file_does_not_undo_a_dashboard_publish(app, db, settings):
    catalog = catalog_of(app)
    await asyncio.wait_for(catalog.ready(), 20)
    text = (settings.surveys_dir / "baogan.yaml").read_text("utf-8")
    result = await catalog.publish(
        text.replace("爆肝度调查\n", "爆肝度调查 2.0\n", 1), by="owner", source="dashboard"
    )
    assert result.ok and result.created and result.version == 2
    restarted = make_app(settings, db=db)
    try:
        await asyncio.wait_for(engine_of(restarted).ready(), 20)
        assert engine_of(restarted).surveys["baogan"].title == "爆肝度调查 2.0"
    finally:
        await restarted.settings["process"].close()
    assert await db.survey_versions.count_documents({"survey": "baogan"}) == 2


@pytest.mark.gen_test(timeout=60)
async def test_concurrent_first_starts_make_one_version(settings, db):
    apps = [make_app(settings, db=db) for _ in range(3)]
    try:
        await asyncio.wait_for(asyncio.gather(*(engine_of(a).ready() for a in apps)), 30)
    finally:
        for a in apps:
            await a.settings["process"].close()
    assert await db.survey_versions.count_documents({"survey": "baogan"}) == 1


# -- sessions pinned to their version --------------------------------------------------------------


@pytest.mark.gen_test(timeout=90)
async def test_a_session_finishes_on_its_version_while_new_users_get_the_newest(
    app, db, send, wechat
):
    catalog = catalog_of(app)
    await asyncio.wait_for(catalog.ready(), 20)
    v1 = await catalog.publish(PETS_V1, by="owner", source="dashboard")
    assert (v1.survey_id, v1.version, v1.created) == ("pets", 1, True)

    early = Chat(send, wechat, "early-user")
    assert "第 1/3 题：你养什么？" in await early.say("宠物问卷")
    assert "第 2/3 题：养了几只？" in await early.say("1")

    v2 = await catalog.publish(PETS_V2, by="owner", source="dashboard")
    assert (v2.version, v2.created) == (2, True)
    again = await catalog.publish(PETS_V2 + "# a comment only\n", by="owner", source="cli")
    assert (again.version, again.created) == (2, False)  # the same definition: no version 3

    late = Chat(send, wechat, "late-user")
    first = await late.say("宠物问卷")
    assert "第 1/4 题：你养什么？" in first
    assert "第 2/4 题：每天遛几次？" in await late.say("2")

    # The early user is still on version 1: question 2 of 3, two options, then the end.
    assert "请回复" in await early.say("3")  # version 1's question 2 has no option 3
    assert "第 3/3 题：开心吗？" in await early.say("2")
    assert "答完啦" in await early.say("1")
    assert "第 3/4 题：吃什么？" in await late.say("3")

    early_doc = await session(db, "pets", "early-user")
    late_doc = await session(db, "pets", "late-user")
    assert (early_doc["sv"], early_doc["state"]) == (1, "finished")
    assert [a["q"] for a in early_doc["answers"]] == ["kind", "count", "happy"]
    assert early_doc["answers"][1]["label"] == "两只"
    assert (late_doc["sv"], late_doc["state"], late_doc["current"]) == (2, "in_progress", "food")


@pytest.mark.gen_test(timeout=60)
async def test_a_paused_session_resumes_on_its_version(app, db, send, wechat):
    catalog = catalog_of(app)
    await asyncio.wait_for(catalog.ready(), 20)
    await catalog.publish(PETS_V1, by="owner", source="dashboard")
    user = Chat(send, wechat, "pauser")
    await user.say("宠物问卷")
    await user.say("1")
    assert "已暂停" in await user.say("退出")
    await catalog.publish(PETS_V2, by="owner", source="dashboard")
    assert "第 2/3 题：养了几只？" in await user.say("宠物问卷")


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=60)
async def test_an_invalid_definition_is_never_published(app, db):
    catalog = catalog_of(app)
    await asyncio.wait_for(catalog.ready(), 20)
    broken = PETS_V1.replace("options: [猫, 狗]", "options: [猫]")
    broken = broken.replace("  - id: count\n", "  - id: kind\n")  # and a duplicate id
    result = await catalog.publish(broken, by="owner", source="cli", name="pets.yaml")
    assert not result.ok and not result.created
    assert [str(i) for i in result.issues] == [  # every mistake, at its line and column
        "pets.yaml:7:14: questions[0].options: a choice question needs at least two options",
        "pets.yaml:8:9: questions[1].id: duplicate question id 'kind' (also questions[0])",
    ]
    assert await db.survey_versions.count_documents({"survey": "pets"}) == 0

    # A keyword another survey uses is refused, as the loader refuses it across files.
    taken = PETS_V1.replace("keywords: [宠物问卷]", "keywords: [宠物问卷, 爆肝度调查]")
    result = await catalog.publish(taken, by="owner", source="cli", name="pets.yaml")
    assert [str(i) for i in result.issues] == [
        "pets.yaml:3:18: keywords[1]: keyword '爆肝度调查' also starts survey 'baogan' (version 1)"
    ]
    assert await db.survey_versions.count_documents({"survey": "pets"}) == 0

    huge = PETS_V1 + "intro: " + "长" * (MAX_DEFINITION_BYTES // 3 + 10) + "\n"
    result = await catalog.publish(huge, by="owner", source="cli")
    assert not result.ok and "256 KiB" in str(result.issues[0])


@pytest.mark.gen_test(timeout=60)
async def test_a_survey_broken_by_hand_is_left_out_and_the_others_work(
    app, db, send, wechat, caplog
):
    catalog = catalog_of(app)
    await asyncio.wait_for(catalog.ready(), 20)
    caplog.set_level(logging.ERROR, "service.surveys.catalog")
    bad = PETS_V1.replace("options: [猫, 狗]", "options: 7")
    await db.survey_versions.insert_one(
        {"_id": "pets:1", "survey": "pets", "n": 1, "text": bad, "digest": definition_digest(bad)}
    )
    await db.surveys.insert_one({"_id": "lab", "latest": 1, "open": "yes please"})
    await db.survey_versions.insert_one({"_id": "lab:1", "survey": "lab", "n": 1, "text": 42})
    await db.surveys.insert_one({"_id": "pets", "latest": 1})
    await catalog.refresh()
    assert "survey version pets:1 fails validation" in caplog.text
    assert "survey lab: its document is broken" in caplog.text
    assert sorted(catalog.snapshot.current) == ["baogan"]
    assert "欢迎参加「爆肝度调查」" in await Chat(send, wechat, "still-fine").say("爆肝度调查")


# -- the owner's controls --------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=60)
async def test_close_reopen_archive_and_schedule(app, db, send, wechat):
    import datetime as dt

    catalog = catalog_of(app)
    await asyncio.wait_for(catalog.ready(), 20)
    await catalog.publish(PETS_V1, by="owner", source="dashboard")
    user = Chat(send, wechat, "controlled")
    assert await catalog.set_open("pets", False)
    assert "暂未开放" in await user.say("宠物问卷")
    assert await catalog.set_open("pets", True)
    assert "第 1/3 题" in await user.say("宠物问卷")
    await user.say("退出")

    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    assert await catalog.schedule("pets", soon, None)
    assert "将于" in await user.say("宠物问卷")
    assert await catalog.schedule("pets", None, None)

    assert await catalog.set_archived("pets", True) == []
    assert await user.say("宠物问卷") not in ("", "success")
    assert "宠物问卷" not in engine_of(app).start_hint()
    # Its keyword is free now; bringing it back checks the keyword again.
    other = PETS_V1.replace("id: pets", "id: pets2")
    assert (await catalog.publish(other, by="owner", source="dashboard")).created
    issues = await catalog.set_archived("pets", False)
    assert [i.message for i in issues] == ["keyword '宠物问卷' starts another survey"]
    assert await db.survey_versions.count_documents({"survey": "pets"}) == 1  # never deleted


# -- live in every process -------------------------------------------------------------------------


async def _propagation(app: Any, settings: Any, *, polling: bool) -> float:
    """Publish in app 1; seconds until app 2 (its own client and catalog) serves version 2."""
    client, db2 = connect(settings)
    other = make_app(settings, db=db2)
    try:
        catalog2 = catalog_of(other)
        if polling:
            catalog2.watcher.mode = "polling"
        catalog1 = catalog_of(app)
        await asyncio.wait_for(asyncio.gather(catalog1.ready(), catalog2.ready()), 20)
        await catalog1.publish(PETS_V1, by="owner", source="dashboard")
        await until(lambda: "pets" in catalog2.snapshot.current, timeout=10)
        assert catalog2.watcher.mode == ("polling" if polling else "change-stream")
        started = time.monotonic()
        await catalog1.publish(PETS_V2, by="owner", source="dashboard")
        await until(lambda: catalog2.snapshot.current["pets"].version == 2, timeout=10)
        return time.monotonic() - started
    finally:
        await other.settings["process"].close()
        await client.close()


@pytest.mark.gen_test(timeout=60)
async def test_a_publish_reaches_another_app_instance_within_2_seconds(app, settings):
    assert await _propagation(app, settings, polling=False) < 2.0


@pytest.mark.gen_test(timeout=60)
async def test_the_polling_fallback_also_within_2_seconds(app, settings):
    assert await _propagation(app, settings, polling=True) < 2.0


@pytest.mark.gen_test(timeout=60)
async def test_a_publish_elsewhere_reaches_a_chatting_user(app, db, settings, send, wechat):
    """End to end: version 2 published by another process is what a new user gets here."""
    await asyncio.wait_for(catalog_of(app).ready(), 20)
    client, db2 = connect(settings)
    try:
        elsewhere = SurveyCatalog(db2, tz=settings.tzinfo)
        await elsewhere.refresh()
        assert (await elsewhere.publish(PETS_V1, by="cli-user", source="cli")).created
        await until(lambda: "pets" in catalog_of(app).snapshot.current, timeout=5)
        assert "第 1/3 题" in await Chat(send, wechat, "fresh").say("宠物问卷")
    finally:
        await client.close()


# -- results per version ---------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=90)
async def test_results_per_version_and_across_versions(app, db, send, wechat, logged_in):
    catalog = catalog_of(app)
    await asyncio.wait_for(catalog.ready(), 20)
    await catalog.publish(PETS_V1, by="owner", source="dashboard")
    first = Chat(send, wechat, "v1-user")
    for text in ("宠物问卷", "1", "2", "1"):  # 猫, 两只, 开心
        await first.say(text)
    await catalog.publish(PETS_V2, by="owner", source="dashboard")
    second = Chat(send, wechat, "v2-user")
    for text in ("宠物问卷", "2", "3", "1", "2"):  # 狗, 两次, 粮, 很开心
        await second.say(text)

    one = await logged_in.get_json("/api/surveys/pets", version=1)
    assert one["version"] == 1 and one["survey"]["version"] == 1
    assert [v["version"] for v in one["versions"]] == [1, 2]
    by_id = {q["id"]: q for q in one["questions"]}
    assert [o["label"] for o in by_id["count"]["options"]] == ["一只", "两只"]
    assert [o["count"] for o in by_id["count"]["options"]] == [0, 1]
    assert "food" not in by_id and one["funnel"]["finished"] == 1

    two = await logged_in.get_json("/api/surveys/pets", version=2)
    by_id = {q["id"]: q for q in two["questions"]}
    assert [o["count"] for o in by_id["count"]["options"]] == [0, 0, 1]
    assert by_id["food"]["answered"] == 1 and two["funnel"]["started"] == 1

    both = await logged_in.get_json("/api/surveys/pets")
    by_id = {q["id"]: q for q in both["questions"]}
    assert both["version"] is None and both["funnel"]["finished"] == 2
    assert [o["count"] for o in by_id["kind"]["options"]] == [1, 1]  # the same in both
    assert "versions" not in by_id["kind"]
    assert by_id["count"]["versions"] == [2]  # changed: counted where it is as now
    assert [o["count"] for o in by_id["count"]["options"]] == [0, 0, 1]
    assert [o["count"] for o in by_id["happy"]["options"]] == [1, 1]

    assert (await logged_in.get("/api/surveys/pets", version=7)).code == 404
    assert (await logged_in.get("/api/surveys/pets", version="x")).code == 400
