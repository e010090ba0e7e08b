"""Static files: versioned URLs are cached for long, unversioned ones (ES-module imports such as
``./common.js``) are revalidated, so a new page script never runs against a cached old module."""

from __future__ import annotations

import re

import pytest


@pytest.mark.gen_test
async def test_module_imports_are_revalidated_and_versioned_scripts_cached(logged_in):
    html = (await logged_in.get("/dashboard/")).body.decode()
    entry = re.search(r'src="(/static/js/[a-z]+\.js\?v=[0-9a-f]+)"', html)
    assert entry, html[:2000]
    versioned = await logged_in.get(entry.group(1))
    assert "max-age=31536000" in versioned.headers["Cache-Control"]

    script = versioned.body.decode()
    imports = re.findall(r'from "\./([a-z]+\.js)"', script)
    assert imports, "the entry script imports modules"
    for name in imports:
        module = await logged_in.get(f"/static/js/{name}")
        assert module.code == 200
        assert module.headers["Cache-Control"] == "no-cache", name
        # Revalidation is cheap: the ETag answers 304.
        again = await logged_in.client.fetch(
            logged_in.base_url + f"/static/js/{name}",
            headers={"If-None-Match": module.headers["Etag"]},
            raise_error=False,
        )
        assert again.code == 304
