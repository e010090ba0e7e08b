"""The auto-reply editor's API: the replies in force, every mistake of a save (422, nothing
saved), a stale save (409), YAML import/export, 413, login and XSRF; a save answers on /wechat."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.test_replies_cli import REPLIES
from tests.test_survey_editor import post


@pytest.mark.gen_test(timeout=60)
async def test_edit_save_and_answer(logged_in, app, db, send, wechat):
    state = await logged_in.get_json("/api/replies")
    assert state["version"] == 0 and state["data"]["rules"] == []
    assert state["data"]["default"] == "greeting" and state["data"]["image"] == "configured"
    assert {"id": "baogan", "title": "爆肝度调查"} in state["surveys"]
    data = state["data"]
    data["rules"] = [
        {"match": "exact", "keyword": "地址", "reply": {"text": "北京市海淀区"}},
        {"match": "regex", "pattern": "(?<=x)y", "reply": {"text": "x"}},
        {"match": "exact", "keyword": "开始", "reply": {"survey": "nope"}},
    ]
    code, refused = await post(logged_in, "/api/replies", {"data": data, "version": 0})
    assert code == 422
    paths = [i["path"] for i in refused["issues"]]
    assert paths == ["rules[1].pattern", "rules[2].reply.survey"]
    assert await db.reply_rules.find_one({}) is None  # nothing half-applied

    code, checked = await post(logged_in, "/api/replies/check", {"data": data})
    assert code == 200 and len(checked["issues"]) == 2
    data["rules"] = [data["rules"][0], {"keyword": "开始", "reply": {"survey": "baogan"}}]
    code, saved = await post(logged_in, "/api/replies", {"data": data, "version": 0})
    assert code == 200 and saved["version"] == 1 and saved["updated_by"] == "boss"
    _, reply = await send(wechat.text("ed1", "地址"))
    assert reply["Content"] == "北京市海淀区"
    _, reply = await send(wechat.text("ed1", "开始"))
    assert "第 1/10 题" in reply["Content"]

    # A save based on version 0 after version 1: a conflict, nothing overwritten.
    code, stale = await post(logged_in, "/api/replies", {"data": {"rules": []}, "version": 0})
    assert code == 409 and stale["version"] == 1
    assert len((await db.reply_rules.find_one({}))["data"]["rules"]) == 2


@pytest.mark.gen_test(timeout=60)
async def test_yaml_import_and_export(logged_in, app, db):
    bad = REPLIES.replace("survey: pets", "survey: baogan").replace("^(hi|hello)", "(a)\\\\1")
    code, refused = await post(logged_in, "/api/replies/import", {"text": bad})
    assert code == 422
    assert [i["line"] for i in refused["issues"]] == [6]
    good = REPLIES.replace("survey: pets", "survey: baogan")
    code, saved = await post(logged_in, "/api/replies/import", {"text": good})
    assert code == 200 and saved["version"] == 1
    export = await logged_in.get("/dashboard/replies/export.yaml")
    assert export.headers["Content-Disposition"] == 'attachment; filename="replies.yaml"'
    assert yaml.safe_load(export.body)["rules"] == yaml.safe_load(good)["rules"]


@pytest.mark.gen_test(timeout=60)
async def test_limits_login_and_xsrf(logged_in, session, app):
    big = {"text": "x" * (600 * 1024)}
    response = await logged_in.post_json("/api/replies/import", big)
    assert response.code == 413
    response = await logged_in.post_json("/api/replies", {"data": {}}, xsrf=False)
    assert response.code == 403
    response = await logged_in.fetch("/api/replies", method="POST", body=b"[1]")
    assert response.code in (400, 403)
    code, _ = await post(logged_in, "/api/replies", {"data": "not a mapping"})
    assert code == 422
    page = await logged_in.get("/dashboard/replies")
    assert page.code == 200 and "自动回复" in page.body.decode()


@pytest.mark.gen_test(timeout=60)
async def test_anonymous_gets_nothing(http_client, base_url, app):
    response = await http_client.fetch(base_url + "/api/replies", raise_error=False)
    assert response.code == 403 and json.loads(response.body)["error"] == "login required"
    response = await http_client.fetch(
        base_url + "/dashboard/replies/export.yaml", raise_error=False, follow_redirects=False
    )
    assert response.code == 302
