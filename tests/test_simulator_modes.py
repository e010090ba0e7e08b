"""The simulator offers and sends only what the endpoint accepts in its message mode."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.config import Settings


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.replace(message_mode="safe")  # the default with an AES key


@pytest.mark.gen_test(timeout=60)
async def test_safe_mode_simulator_sends_encrypted_and_refuses_plaintext_clearly(logged_in, app):
    page = (await logged_in.get("/dashboard/simulator")).body.decode()
    assert 'data-mode="aes"' in page and 'data-modes="aes compat"' in page

    default = await logged_in.post_json(
        "/api/simulator/send", {"user": "safe", "type": "text", "content": "你好"}
    )
    assert default.code == 200, default.body
    result: dict[str, Any] = json.loads(default.body)
    assert result["mode"] == "aes" and result["status"] == 200

    plain = await logged_in.post_json(
        "/api/simulator/send", {"user": "safe", "type": "text", "content": "你好", "mode": "plain"}
    )
    assert plain.code == 400
    assert "safe mode" in plain.body.decode() and "plain" in plain.body.decode()
