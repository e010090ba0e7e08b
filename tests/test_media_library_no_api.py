"""Without AppID/AppSecret the media library says so and the rest of the dashboard works."""

from __future__ import annotations

import pytest

from tests.test_media_library import PNG, upload


@pytest.mark.gen_test(timeout=60)
async def test_without_credentials(logged_in, app):
    listing = await logged_in.get_json("/api/media", type="image")
    assert listing["configured"] is False and listing["items"] == []
    code, answer = await upload(logged_in, "image", "a.png", PNG)
    assert code == 409 and "AppID/AppSecret are not configured" in answer["error"]
    assert (await logged_in.get("/dashboard/replies")).code == 200
