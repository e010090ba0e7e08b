"""A user's page: their answers in every survey (what they chose, the score, the result)."""

from __future__ import annotations

import pytest

from tests.test_dashboard_api import answer_survey


@pytest.fixture
def answered(io_loop, send, wechat, app):
    async def run():
        await answer_survey(send, wechat, "u-done", ["1"] * 10)
        await answer_survey(send, wechat, "u-half", ["2", "3"])
        await app.settings["users"].flush()  # the user counters are written in batches

    io_loop.run_sync(run, timeout=120)


@pytest.mark.gen_test(timeout=60)
async def test_a_user_shows_every_answer_with_score_and_result(logged_in, answered):
    done = (await logged_in.get_json("/api/users/u-done"))["surveys"][0]
    assert done["state"] == "finished" and done["score"] == 0
    assert done["result_title"] == "作息模范生"
    assert [a["position"] for a in done["answers"]] == list(range(1, 11))
    first = done["answers"][0]
    assert first["question"].startswith("最近一个月")
    assert first["answer"] == "晚上 11 点以前" and first["score"] == 0

    half = (await logged_in.get_json("/api/users/u-half"))["surveys"][0]
    assert half["state"] == "in_progress" and half["position"] == 3
    assert [(a["position"], a["score"]) for a in half["answers"]] == [(1, 1), (2, 2)]
    assert half["answers"][1]["answer"] != ""
