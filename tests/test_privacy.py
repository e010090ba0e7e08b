"""Respondents' data (issue 12): 「删除我的数据」 in the chat, the owner's export and delete, and
pseudonyms. Through the real /wechat and the dashboard's API."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from service.privacy import ASK_TEXT, DONE_TEXT, NOTHING_PENDING_TEXT
from service.store import privacy
from tests.survey_helpers import Chat

PERSONAL = ("messages", "survey_sessions", "users", "privacy_requests")


async def kept_about(db, openid: str) -> dict[str, int]:
    counts = {}
    for name in PERSONAL:
        field = "_id" if name in ("users", "privacy_requests") else "openid"
        counts[name] = await db[name].count_documents({field: openid})
    return {k: v for k, v in counts.items() if v}


@pytest.mark.gen_test(timeout=60)
async def test_delete_my_data_in_the_middle_of_a_survey_leaves_nothing(send, wechat, db, app):
    alice = Chat(send, wechat, "user-alice")
    bob = Chat(send, wechat, "user-bob")
    assert "第 1/10 题" in await alice.say("爆肝度调查")
    assert "第 2/10 题" in await alice.say("1")
    await bob.say("爆肝度调查")
    await app.settings["users"].flush()
    assert (await kept_about(db, "user-alice")).keys() == {"messages", "survey_sessions", "users"}

    assert await alice.say("删除我的数据") == ASK_TEXT  # not taken for an answer to question 2
    confirm = alice.xml("确认删除")
    reply = await alice.post(confirm)
    assert reply == DONE_TEXT.format(messages=3, sessions=1)
    await app.settings["users"].flush()
    assert await kept_about(db, "user-alice") == {}
    # WeChat's retry of the confirmation gets the same answer, and still nothing is kept.
    assert await alice.post(confirm) == reply
    stored = await db.messages.find_one({"forgotten": True})
    assert stored is not None
    assert (stored["openid"], stored["raw"], stored["text"]) == ("", "", "")
    assert "user-alice" not in json.dumps(stored, default=str)
    await app.settings["users"].flush()
    assert await kept_about(db, "user-alice") == {}
    # Someone else's data is untouched.
    assert await kept_about(db, "user-bob") == {"messages": 1, "survey_sessions": 1, "users": 1}
    # And the survey starts afresh for alice, as for a new user.
    assert "第 1/10 题" in await alice.say("爆肝度调查")


@pytest.mark.gen_test(timeout=60)
async def test_a_confirmation_needs_a_fresh_request(send, wechat, db):
    carol = Chat(send, wechat, "user-carol")
    assert await carol.say("确认删除") == NOTHING_PENDING_TEXT
    assert await carol.say("delete my data") == ASK_TEXT
    # Five minutes later (moved back in the database: the server's TTL sweep is coarse).
    await db.privacy_requests.update_one(
        {"_id": "user-carol"}, {"$set": {"expires_at": dt.datetime.now(dt.UTC)}}
    )
    assert await carol.say("Confirm Delete") == NOTHING_PENDING_TEXT
    assert await db.messages.count_documents({"openid": "user-carol"}) == 3


@pytest.mark.gen_test(timeout=60)
async def test_the_owner_exports_and_deletes_a_users_data_and_it_is_logged(
    logged_in, send, wechat, db, app
):
    dave = Chat(send, wechat, "user-dave")
    await dave.say("爆肝度调查")
    await dave.say("2")
    await app.settings["users"].flush()

    response = await logged_in.get("/api/users/user-dave/export")
    assert response.code == 200
    assert "attachment" in response.headers["Content-Disposition"]
    data = json.loads(response.body)
    assert [m["text"] for m in data["messages"]] == ["爆肝度调查", "2"]
    assert data["survey_sessions"][0]["survey"] == "baogan"
    assert data["user"]["messages"] == 2
    assert (await logged_in.get("/api/users/nobody/export")).code == 404

    refused = await logged_in.post_json("/api/users/user-dave/delete", {"confirm": "someone"})
    assert refused.code == 400
    assert await kept_about(db, "user-dave") != {}
    done = await logged_in.post_json("/api/users/user-dave/delete", {"confirm": "user-dave"})
    assert done.code == 200
    assert json.loads(done.body)["deleted"] == {"messages": 2, "survey_sessions": 1, "users": 1}
    assert await kept_about(db, "user-dave") == {}

    entries = await db.privacy_log.find({}, {"_id": 0}).sort("at", 1).to_list()
    assert [(e["owner"], e["action"]) for e in entries] == [("boss", "export"), ("boss", "delete")]
    key = await privacy.pseudonym_key(db)
    assert {e["person"] for e in entries} == {privacy.pseudonymize(key, "user-dave")}
    assert "user-dave" not in json.dumps(entries, default=str)


@pytest.mark.gen_test(timeout=60)
async def test_pseudonyms_are_stable_keyed_and_shared_by_processes(db):
    first = await privacy.pseudonym_key(db)
    assert await privacy.pseudonym_key(db) == first  # created once, then read
    name = privacy.pseudonymize(first, "user-erin")
    assert name == privacy.pseudonymize(first, "user-erin")
    assert name != privacy.pseudonymize(first, "user-frank")
    assert name != privacy.pseudonymize(b"another secret", "user-erin")
    assert "erin" not in name
