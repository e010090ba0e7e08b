"""A survey quota across two ``python -m service serve`` processes on one database: eight users
answer into a quota of three at once, four through each process; exactly three get a place."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from pymongo import MongoClient

from service.wechat_client import WeChatSide
from tests.conftest import TOKEN
from tests.survey_helpers import write_surveys
from tests.test_shutdown import Service, post, services  # noqa: F401 - fixture
from tests.test_survey_logic import QUOTA_YAML

pytestmark = pytest.mark.slow
FULL = "这一组的名额已满，谢谢参与！"


def test_quota_exact_across_two_processes(tmp_path, services, mongo_uri):  # noqa: F811
    name = f"test_{uuid.uuid4().hex[:12]}"
    folder = write_surveys(tmp_path / "surveys", quota=QUOTA_YAML)
    env = {"MONGODB_URI": mongo_uri, "MONGODB_DB": name, "SURVEYS_DIR": str(folder)}
    for i in range(2):
        (tmp_path / f"p{i}").mkdir()
        services.append(Service(tmp_path / f"p{i}", DATA_DIR=str(tmp_path / f"d{i}"), **env))
    for service in services:
        service.wait_ready()
    wechat = WeChatSide(TOKEN)

    def say(i: int, text: str) -> str:
        service = services[i % 2]
        body = post(service.url, wechat.sign(wechat.text(f"proc-owl-{i}", text)))
        return str(wechat.open_reply(body)["Content"])

    users = range(8)
    with ThreadPoolExecutor(max_workers=8) as pool:
        starts = list(pool.map(lambda i: say(i, "名额问卷"), users))
        assert all("第 1/2 题" in s for s in starts), starts
        replies = list(pool.map(lambda i: say(i, "2"), users))

    admitted = [i for i, r in zip(users, replies, strict=True) if r.startswith("第 2/2 题")]
    full = [i for i, r in zip(users, replies, strict=True) if r == FULL]
    assert (len(admitted), len(full)) == (3, 5), replies
    assert {i % 2 for i in users} == {0, 1}
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
    try:
        db = client[name]
        counter = db.survey_quotas.find_one({"_id": "quota:owls"})
        assert counter is not None and counter["n"] == 3
        assert sorted(counter["members"]) == sorted(f"quota:proc-owl-{i}#1" for i in admitted)
        assert db.survey_sessions.count_documents({"state": "quota_full"}) == 5
    finally:
        client.drop_database(name)
        client.close()
    for service in services:
        assert "Traceback" not in service.log
