"""``parse_xml``: WeChat's XML into a flat dict, refusing DTDs, entities and external references.

The endpoint tests send the same bodies through ``/wechat``; these pin down the parser itself:
every message shape WeChat sends, the text rules, and each hostile construct.
"""

from __future__ import annotations

import pytest

from service.wechat import ProtocolError, parse_xml
from service.wechat_client import WeChatSide
from tests.conftest import AES_KEY, APP_ID, TOKEN

side = WeChatSide(TOKEN, encoding_aes_key=AES_KEY, app_id=APP_ID, account="gh_a")


def test_text_message_fields():
    xml = side.text("o-1", "  你好，世界 \n", create_time=1700000000, msg_id=42)
    assert parse_xml(xml.encode("utf-8")) == {
        "ToUserName": "gh_a",
        "FromUserName": "o-1",
        "CreateTime": "1700000000",
        "MsgType": "text",
        "Content": "  你好，世界 \n",  # what the user typed, as typed
        "MsgId": "42",
    }


def test_nested_elements_become_nested_dicts_and_other_text_is_stripped():
    xml = side.message_xml(
        "o-1",
        "event",
        Event="pic_sysphoto",
        EventKey=" k ",
        SendPicsInfo={"Count": 1, "PicList": {"item": {"PicMd5Sum": " abc "}}},
    )
    fields = parse_xml(xml.encode("utf-8"))
    assert fields["EventKey"] == "k"
    assert fields["SendPicsInfo"] == {"Count": "1", "PicList": {"item": {"PicMd5Sum": "abc"}}}


def test_entities_cdata_comments_and_processing_instructions():
    body = (
        b"<xml><!-- note --><?pi ignored?>"
        b"<Content>a &amp; b &lt;c&gt; &#20320;<![CDATA[ <raw> & ]]></Content>"
        b"<Title> t <Sub>1</Sub> tail </Title><Empty/><Blank></Blank></xml>"
    )
    assert parse_xml(body) == {
        "Content": "a & b <c> 你 <raw> & ",
        "Title": {"Sub": "1"},  # an element with children is a dict; its loose text is dropped
        "Empty": "",
        "Blank": "",
    }


def test_safe_mode_envelope():
    signed = side.sign(side.text("o-1", "hi"), "aes")
    fields = parse_xml(signed.body)
    assert set(fields) == {"ToUserName", "Encrypt"}
    assert fields["Encrypt"]


def test_declared_encoding_is_ignored_the_body_is_utf8():
    body = '<?xml version="1.0" encoding="ISO-8859-1"?><xml><A>é</A></xml>'.encode()
    assert parse_xml(body) == {"A": "é"}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty body"),
        (b"  \n", "empty body"),
        ("<xml><A>é</A></xml>".encode("latin-1"), "not UTF-8"),
        (b"<xml><A></xml>", "malformed"),
        (b"<xml/>junk", "malformed"),
        (b"<xml>&undefined;</xml>", "malformed"),
        (b"<root><A>1</A></root>", "root element must be <xml>"),
        (b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY x "boom">]><xml>&x;</xml>', "DTD"),
        (
            b'<!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]><xml>&b;</xml>',
            "DTD",
        ),
        (b'<!DOCTYPE xml SYSTEM "http://127.0.0.1:9/evil.dtd"><xml/>', "DTD"),
        (b'<!DOCTYPE x [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]><xml/>', "DTD"),
        (b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml>&e;</xml>', "DTD"),
    ],
)
def test_refused_bodies(body, reason):
    with pytest.raises(ProtocolError) as caught:
        parse_xml(body)
    assert caught.value.status == 400
    assert reason in caught.value.reason
