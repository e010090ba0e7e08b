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
    assert "immutable" in versioned.headers["Cache-Control"]

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


ASSET = re.compile(r'(?:src|href)="(/static/[^"]+)"')
MODULE_IMPORT = re.compile(r'from\s+"\./([A-Za-z0-9_-]+\.js)"')


async def first_visit(session, path: str, *, gzip: bool) -> dict[str, int]:
    """The bytes a first visit to ``path`` transfers: the page, its assets, their module imports.

    ``gzip``: whether the browser accepts gzip (every browser does); the bytes are those on the
    wire, compressed or not.
    """
    headers = {"Accept-Encoding": "gzip" if gzip else "identity"}
    if session.cookies:
        headers["Cookie"] = session.cookie_header()
    sizes: dict[str, int] = {}

    async def get(url: str) -> bytes:
        response = await session.client.fetch(
            session.base_url + url, headers=headers, decompress_response=False
        )
        assert response.code == 200, url
        if gzip and len(response.body) > 1024:
            assert response.headers.get("Content-Encoding") == "gzip", url
        sizes[url.split("?")[0]] = len(response.body)
        if response.headers.get("Content-Encoding") == "gzip":
            import gzip as gz

            return gz.decompress(response.body)
        return response.body

    html = (await get(path)).decode()
    pending = ASSET.findall(html)
    while pending:
        url = pending.pop()
        if url.split("?")[0] in sizes:
            continue
        body = await get(url)
        if url.split("?")[0].endswith(".js"):
            pending += [f"/static/js/{name}" for name in MODULE_IMPORT.findall(body.decode())]
    return sizes


@pytest.mark.gen_test(timeout=60)
async def test_a_first_visit_is_compressed_and_small(logged_in):
    for page in ("/dashboard/", "/dashboard/surveys/baogan"):
        plain = await first_visit(logged_in, page, gzip=False)
        compressed = await first_visit(logged_in, page, gzip=True)
        assert plain.keys() == compressed.keys()
        total, wire = sum(plain.values()), sum(compressed.values())
        print(f"{page}: {len(plain)} files, {total} bytes, {wire} bytes gzipped")
        # The budget of a first visit on a phone's mobile connection, ECharts included. (Before
        # gzip and the modular ECharts build: 1,165,390 bytes for the overview; now ~204,000.)
        assert wire < 250_000, compressed
        assert wire < total / 2.5


@pytest.mark.gen_test
async def test_wechat_replies_are_never_compressed(http_client, base_url, wechat):
    from urllib.parse import urlencode

    query = wechat.handshake("x" * 2000)
    response = await http_client.fetch(
        f"{base_url}/wechat?{urlencode(query)}",
        headers={"Accept-Encoding": "gzip"},
        decompress_response=False,
    )
    assert response.body == b"x" * 2000
    assert "Content-Encoding" not in response.headers
