"""``parse_xml``: WeChat's XML into a flat dict, refusing DTDs, entities and external references.

The endpoint tests send the same bodies through ``/wechat``; these pin down the parser itself:
every message shape WeChat sends, the text rules, and each hostile construct.
"""

from __future__ import annotations

import pytest

from service.wechat import (
    MAX_DEPTH,
    MAX_ELEMENTS,
    MAX_TEXT_CHARS,
    ProtocolError,
    message_from_xml,
    parse_xml,
)
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


# -- bounds: nothing deeper, larger or stranger than a WeChat message (issue 14) ----------------


def _text_with(extra: str) -> bytes:
    return side.text("o-1", "hi", msg_id=1).replace("</xml>", extra + "</xml>").encode("utf-8")


def test_the_deepest_wechat_block_is_accepted():
    # <xml> > CopyrightCheckResult > ResultList > item > ArticleIdx: depth 5.
    block = "<CopyrightCheckResult><ResultList><item><ArticleIdx>1</ArticleIdx></item>"
    fields = parse_xml(_text_with(block + "</ResultList></CopyrightCheckResult>"))
    assert fields["CopyrightCheckResult"] == {"ResultList": {"item": {"ArticleIdx": "1"}}}
    assert parse_xml(_text_with("<a>" * (MAX_DEPTH - 1) + "</a>" * (MAX_DEPTH - 1)))


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ("<a>" * MAX_DEPTH + "</a>" * MAX_DEPTH, "nested deeper"),
        ("<a>" * 600 + "</a>" * 600, "nested deeper"),
        ("<a>" * 100_000, "nested deeper"),  # refused at the first excess, not at the end
        ("<b/>" * MAX_ELEMENTS, "elements"),
        ("<Content2>" + "x" * (MAX_TEXT_CHARS + 1) + "</Content2>", "characters of text"),
        ("<a.b>1</a.b>", "not a WeChat field name"),
        ("<x:y>1</x:y>", "not a WeChat field name"),
        ("<名字>1</名字>", "not a WeChat field name"),
        ("<" + "n" * 65 + "/>", "not a WeChat field name"),
    ],
)
def test_bodies_over_the_bounds_are_refused(extra, reason):
    with pytest.raises(ProtocolError) as caught:
        parse_xml(_text_with(extra))
    assert caught.value.status == 400
    assert reason in caught.value.reason


# -- numbers are checked at parse time ----------------------------------------------------------


def _message(**fields):
    base = {"ToUserName": "gh_a", "FromUserName": "o-1", "CreateTime": "1700000000"}
    return message_from_xml({**base, **fields}, "<xml/>")


@pytest.mark.parametrize(
    "fields",
    [
        dict(MsgType="text", CreateTime="0"),
        dict(MsgType="text", CreateTime=str(2**32 - 1)),
        dict(MsgType="text", MsgId=str(2**64 - 1)),
        dict(MsgType="location", Location_X="-90", Location_Y="180.000000", Scale="15"),
        dict(MsgType="event", Event="LOCATION", Latitude="23.137466", Longitude="113.352425"),
        dict(MsgType="event", Event="LOCATION", Latitude="23.1", Longitude="1", Precision=""),
        dict(
            MsgType="event",
            Event="location_select",
            SendLocationInfo={"Location_X": "23", "Location_Y": "113", "Scale": "15"},
        ),
    ],
)
def test_numbers_in_range_are_accepted_and_kept_as_sent(fields):
    message = _message(**fields)
    for name, value in fields.items():
        assert message.fields[name] == value


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        (dict(CreateTime="1000000000000"), "CreateTime"),
        (dict(CreateTime="100000000000000000000"), "CreateTime"),
        (dict(CreateTime="-1000000000000"), "CreateTime"),
        (dict(CreateTime="１２３"), "CreateTime"),  # int() would take full-width digits
        (dict(CreateTime="1_000"), "CreateTime"),
        (dict(CreateTime=" 12"), "CreateTime"),
        (dict(CreateTime={"a": "1"}), "CreateTime"),
        (dict(MsgId=str(2**64)), "MsgId"),
        (dict(MsgId="12ab"), "MsgId"),
        (dict(MsgID="-1"), "MsgID"),
        (dict(Location_X="90.5"), "Location_X"),
        (dict(Location_Y="nan"), "Location_Y"),
        (dict(Latitude="1e3"), "Latitude"),
        (dict(Longitude="inf"), "Longitude"),
        (dict(Precision="-1"), "Precision"),
        (dict(Scale="9" * 30), "Scale"),
        (dict(SendPicsInfo={"Count": "many"}), "Count"),
        (dict(SendLocationInfo={"Location_X": "500"}), "Location_X"),
    ],
)
def test_numbers_out_of_range_or_malformed_are_400(fields, name):
    with pytest.raises(ProtocolError) as caught:
        _message(MsgType="text", **fields)
    assert caught.value.status == 400
    assert name in caught.value.reason


@pytest.mark.parametrize(
    "fields",
    [
        dict(FromUserName={"a": "b"}),
        dict(FromUserName="o" * 129),
        dict(ToUserName="g" * 129),
        dict(MsgType={"x": "text"}),
        dict(MsgType="event", Event="e" * 65),
    ],
)
def test_envelope_names_are_bounded_strings(fields):
    with pytest.raises(ProtocolError) as caught:
        _message(**{"MsgType": "text", **fields})
    assert caught.value.status == 400
