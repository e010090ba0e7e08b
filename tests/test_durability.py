"""The writes behind an answer are journaled (``j: true``): an answer WeChat has received
survives a crash of the database right after it (issue: durability)."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import WriteConcern, monitoring
from tornado.httpclient import AsyncHTTPClient

from service.app import make_app
from service.db import connect
from service.store import journaled
from tests.ops_helpers import serve_app


class WriteConcerns(monitoring.CommandListener):
    """The write concern of every insert/update the client sends, per collection."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, Any]]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name in ("insert", "update"):
            collection = str(event.command[event.command_name])
            self.seen.append(
                (event.command_name, collection, dict(event.command.get("writeConcern", {})))
            )

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.mark.gen_test(timeout=60)
async def test_message_and_survey_writes_wait_for_the_journal(settings, db, wechat):
    listener = WriteConcerns()
    client, database = connect(settings, event_listeners=[listener])
    app = make_app(settings, db=database)
    server, url = serve_app(app)
    try:
        http = AsyncHTTPClient()
        for text in ("你好", "爆肝度调查", "1"):
            signed = wechat.sign(wechat.text("user-j", text))
            response = await http.fetch(signed.url(url), method="POST", body=signed.body)
            assert response.code == 200
    finally:
        server.stop()
        await app.settings["process"].close()
        await client.close()
    writes = {(cmd, coll): concern for cmd, coll, concern in listener.seen}
    assert writes[("insert", "messages")].get("j") is True
    assert writes[("insert", "survey_sessions")].get("j") is True
    assert writes[("update", "survey_sessions")].get("j") is True


def test_journaled_keeps_the_connection_write_concern(db):
    database = db.with_options(write_concern=WriteConcern(w="majority", wtimeout=5000))
    concern = journaled(database, "messages").write_concern.document
    assert concern == {"w": "majority", "wtimeout": 5000, "j": True}
