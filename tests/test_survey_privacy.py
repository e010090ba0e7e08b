"""A survey's ``privacy:`` notice: shown after the intro, before question 1, through /wechat."""

from __future__ import annotations

from typing import Any

import pytest

from service.surveys import SHIPPED_DIR, SurveyEngine, load_dir
from tests.survey_helpers import Chat


@pytest.fixture
def app_extra(tmp_path: Any) -> dict[str, Any]:
    folder = tmp_path / "surveys"
    folder.mkdir()
    (folder / "baogan.yaml").write_bytes((SHIPPED_DIR / "baogan.yaml").read_bytes())
    return {"surveys": SurveyEngine(load_dir(folder))}


def test_the_shipped_surveys_carry_a_privacy_notice():
    for survey in load_dir(SHIPPED_DIR):
        assert survey.privacy.startswith("隐私说明"), survey.id


@pytest.mark.gen_test(timeout=60)
async def test_privacy_notice_comes_before_question_1(send, wechat, app):
    reply = await Chat(send, wechat, "u-privacy").say("爆肝度调查")
    intro = reply.index("欢迎参加「爆肝度调查」")
    notice = reply.index("隐私说明：")
    first = reply.index("第 1/10 题")
    assert intro < notice < first
