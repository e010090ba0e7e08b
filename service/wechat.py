"""The WeChat passive-reply protocol: signatures, AES (wechatpy's crypto), parsing, rendering.

No Tornado in here: the handler turns a ``ProtocolError`` into the HTTP status it carries.
"""

from __future__ import annotations

import binascii
import dataclasses
import hashlib
import hmac
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn
from xml.parsers import expat
from xml.sax.saxutils import escape

from wechatpy.crypto import PrpCrypto
from wechatpy.exceptions import InvalidAppIdException

__all__ = [
    "MAX_DEPTH",
    "MAX_ELEMENTS",
    "MAX_TEXT_CHARS",
    "NEWS_MAX_ARTICLES",
    "REPLY_KINDS",
    "TEXT_LIMIT_BYTES",
    "Article",
    "Crypto",
    "Message",
    "ProtocolError",
    "Reply",
    "check_signature",
    "check_timestamp",
    "message_from_xml",
    "parse_xml",
    "render_reply",
    "sign",
    "truncate_utf8",
]

# WeChat rejects passive text replies whose Content exceeds 2048 bytes.
TEXT_LIMIT_BYTES = 2048
MESSAGE_TYPES = frozenset({"text", "image", "voice", "video", "shortvideo", "location", "link"})

# Bounds of what ``parse_xml`` accepts. WeChat's messages are flat: one level under <xml>, and a
# few known nested blocks (SendPicsInfo > PicList > item > PicMd5Sum, CopyrightCheckResult >
# ResultList > item > ...) reach depth 5 counting <xml>. These bounds keep every parsed message a
# small document MongoDB can store and read back (its nesting limit is 100 levels).
MAX_DEPTH = 6
MAX_ELEMENTS = 256
# Characters of text in the whole document: a safe-mode Encrypt is base64 of the whole message,
# so this admits messages far longer than any WeChat sends (a text message is a few KB).
MAX_TEXT_CHARS = 512 * 1024
# Element names WeChat uses: ASCII letters, digits and "_" (Location_X, MsgID, ...). Anything else
# ("a.b", "x:y", non-ASCII) is refused: a dotted key is awkward for MongoDB queries.
_ELEMENT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


class ProtocolError(ValueError):
    """A request WeChat would never send; ``status`` is the HTTP answer (400, 403).

    ``reason`` is for the log; ``kind`` is a short, bounded label for metrics (the
    ``REFUSAL_REASONS`` of ``service/metrics.py``).
    """

    def __init__(self, status: int, reason: str, *, kind: str = "bad-request") -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.kind = kind


def sign(*parts: str) -> str:
    """WeChat's signature: SHA-1 of the parts sorted and concatenated."""
    return hashlib.sha1("".join(sorted(parts)).encode("utf-8")).hexdigest()  # noqa: S324 - protocol


def check_signature(token: str, signature: str, timestamp: str, nonce: str, *extra: str) -> bool:
    """Constant-time check of ``signature`` (or ``msg_signature`` when ``extra`` holds Encrypt)."""
    expected = sign(token, timestamp, nonce, *extra)
    return hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii", "replace"))


_TIMESTAMP = re.compile(r"[0-9]{1,12}")


def check_timestamp(timestamp: str, max_age: float, now: float | None = None) -> None:
    """Refuse (403) a signed URL's ``timestamp`` that is not a number or is more than
    ``max_age`` seconds away from ``now``: the plain signature does not cover the body, so
    without this window a signed URL could be replayed forever."""
    if _TIMESTAMP.fullmatch(timestamp) is None:
        raise ProtocolError(403, "timestamp is not a number", kind="bad-timestamp")
    skew = int(timestamp) - (time.time() if now is None else now)
    if abs(skew) > max_age:
        raise ProtocolError(
            403,
            f"timestamp is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} our clock "
            f"(SIGNATURE_MAX_AGE is {max_age:g} s)",
            kind="stale-timestamp",
        )


class _Forbidden(Exception):
    """A DTD, an entity declaration or an external reference: refused before it takes effect."""


def _forbid(construct: str) -> Callable[..., NoReturn]:
    def refuse(*args: object) -> NoReturn:
        raise _Forbidden(construct)

    return refuse


_REFUSE_DTD = _forbid("DTDForbidden")
_REFUSE_ENTITY = _forbid("EntitiesForbidden")
_REFUSE_EXTERNAL = _forbid("ExternalReferenceForbidden")


class _OverLimit(Exception):
    """The document is deeper, larger or stranger than any message WeChat sends."""


class _Fields:
    """Expat callbacks that build the flat dict WeChat's XML maps to, without a tree.

    Each child of the root becomes a key; an element with children becomes a nested dict, a leaf
    its text, stripped except ``Content`` (what the user typed is kept as typed).
    """

    __slots__ = ("elements", "open", "root", "text_chars")

    def __init__(self) -> None:
        # One entry per open element: [tag, its child fields (None while it has none), texts]
        self.open: list[list[Any]] = []
        self.root: tuple[str, dict[str, Any]] | None = None
        self.elements = 0
        self.text_chars = 0

    def start(self, tag: str, attributes: object) -> None:
        self.elements += 1
        if self.elements > MAX_ELEMENTS:
            raise _OverLimit(f"more than {MAX_ELEMENTS} elements")
        if len(self.open) >= MAX_DEPTH:
            raise _OverLimit(f"elements nested deeper than {MAX_DEPTH} levels")
        if _ELEMENT_NAME.fullmatch(tag) is None:
            raise _OverLimit(f"element name {tag[:64]!r} is not a WeChat field name")
        if self.open and self.open[-1][1] is None:
            self.open[-1][1] = {}
        self.open.append([tag, None, []])

    def text(self, data: str) -> None:
        self.text_chars += len(data)
        if self.text_chars > MAX_TEXT_CHARS:
            raise _OverLimit(f"more than {MAX_TEXT_CHARS} characters of text")
        top = self.open[-1]
        if top[1] is None:  # text after a child element is not the element's text
            top[2].append(data)

    def end(self, tag: str) -> None:
        _, children, texts = self.open.pop()
        if children is not None:
            value: Any = children
        else:
            value = "".join(texts)
            if tag != "Content":
                value = value.strip()
        if self.open:
            self.open[-1][1][tag] = value
        else:
            self.root = (tag, children or {})


def parse_xml(body: bytes) -> dict[str, Any]:
    """Parse WeChat's ``<xml>`` body safely: UTF-8 only, no DTD, no entities, no external refs.

    Expat straight into a dict (what defusedxml does to expat, without building a tree): any
    DOCTYPE is refused at its start, before an entity can be declared, so no entity expansion
    or external reference can happen; the declared encoding is ignored (always UTF-8). Depth,
    element count, text size and element names are bounded (``MAX_DEPTH``, ``MAX_ELEMENTS``,
    ``MAX_TEXT_CHARS``), checked as expat goes, so a hostile body stops at the first excess.
    """
    if not body or not body.strip():
        raise ProtocolError(400, "empty body", kind="malformed-xml")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProtocolError(400, "body is not UTF-8", kind="malformed-xml") from e
    parser = expat.ParserCreate("UTF-8")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _REFUSE_DTD
    parser.EntityDeclHandler = _REFUSE_ENTITY
    parser.UnparsedEntityDeclHandler = _REFUSE_ENTITY
    parser.ExternalEntityRefHandler = _REFUSE_EXTERNAL
    fields = _Fields()
    parser.StartElementHandler = fields.start
    parser.EndElementHandler = fields.end
    parser.CharacterDataHandler = fields.text
    parser.buffer_text = True
    try:
        parser.Parse(body, True)
    except _Forbidden as e:
        raise ProtocolError(400, f"forbidden XML construct: {e}", kind="forbidden-xml") from e
    except _OverLimit as e:
        raise ProtocolError(
            400, f"XML over the limits of a WeChat message: {e}", kind="xml-limits"
        ) from e
    except expat.ExpatError as e:
        raise ProtocolError(400, f"malformed XML: {e}", kind="malformed-xml") from e
    if fields.root is None:  # pragma: no cover - expat reports a document without an element
        raise ProtocolError(400, "malformed XML: no element", kind="malformed-xml")
    tag, values = fields.root
    if tag != "xml":
        raise ProtocolError(400, f"root element must be <xml>, got <{tag}>", kind="malformed-xml")
    return values


@dataclasses.dataclass(frozen=True)
class Message:
    """One inbound message or event, with the key that makes WeChat's retries idempotent."""

    key: str
    openid: str
    account: str
    msg_type: str
    create_time: int
    fields: dict[str, Any]
    raw: str
    event: str = ""
    msg_id: str = ""

    @property
    def is_event(self) -> bool:
        return self.msg_type == "event"

    @property
    def content(self) -> str:
        return str(self.fields.get("Content", "")) if self.msg_type == "text" else ""

    @property
    def recognition(self) -> str:
        """What WeChat's speech recognition (语音识别, when the account has it on) heard in a voice
        message, without the full stop it adds at the end; "" otherwise."""
        if self.msg_type != "voice":
            return ""
        value = self.fields.get("Recognition")
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            return ""
        return str(value).strip().rstrip("。.").strip()

    @property
    def event_key(self) -> str:
        value = self.fields.get("EventKey", "")
        return value if isinstance(value, str) else ""

    @property
    def kind(self) -> str:
        """``text``, ``image``, ... or ``event:subscribe``, ``event:click``, ..."""
        return f"event:{self.event}" if self.is_event else self.msg_type

    def summary(self) -> str:
        """A one-line description for logs of what the user sent (media described, not stored)."""
        f = self.fields
        match self.msg_type:
            case "text":
                return self.content
            case "image":
                return "[图片]"
            case "voice":
                recognition = f.get("Recognition") or ""
                return f"[语音] {recognition}".strip()
            case "video" | "shortvideo":
                return "[视频]"
            case "location":
                label = f.get("Label") or ""
                return f"[位置] {label} ({f.get('Location_X', '')}, {f.get('Location_Y', '')})"
            case "link":
                return f"[链接] {f.get('Title', '')} {f.get('Url', '')}".strip()
            case "event":
                key = self.event_key
                return f"[事件] {self.event}" + (f" {key}" if key else "")
            case _:
                return f"[{self.msg_type}]"


# Numeric fields WeChat sends, wherever they appear (top level or in a nested block such as
# SendLocationInfo or SendPicsInfo): (integer only, lowest, highest). Checked at parse time, so
# nothing downstream (datetime.fromtimestamp on CreateTime, say) can fail on a number after the
# bot has run. They stay strings in ``fields``, as WeChat sent them.
_NUMBERS: dict[str, tuple[bool, float, float]] = {
    "CreateTime": (True, 0, 2**32 - 1),
    "MsgId": (True, 0, 2**64 - 1),
    "MsgID": (True, 0, 2**64 - 1),
    "MsgDataId": (True, 0, 2**64 - 1),
    "Idx": (True, 0, 2**32 - 1),
    "Count": (True, 0, 2**32 - 1),
    "TotalCount": (True, 0, 2**32 - 1),
    "FilterCount": (True, 0, 2**32 - 1),
    "SentCount": (True, 0, 2**32 - 1),
    "ErrorCount": (True, 0, 2**32 - 1),
    "ArticleIdx": (True, 0, 2**32 - 1),
    "Latitude": (False, -90, 90),
    "Longitude": (False, -180, 180),
    "Location_X": (False, -90, 90),  # latitude
    "Location_Y": (False, -180, 180),  # longitude
    "Precision": (False, 0, 1e7),  # metres
    "Scale": (False, 0, 1000),  # map zoom level
}
_INTEGER = re.compile(r"[0-9]{1,20}")
_DECIMAL = re.compile(r"[+-]?[0-9]{1,12}(?:\.[0-9]{1,20})?")
# Envelope fields that name things (message key, user record, metrics): strings, bounded length.
_NAMES: dict[str, int] = {"ToUserName": 128, "FromUserName": 128, "MsgType": 32, "Event": 64}


def _check_number(name: str, value: object) -> None:
    integer, low, high = _NUMBERS[name]
    if not isinstance(value, str):
        raise ProtocolError(
            400, f"{name} must be a number, got an element with children", kind="bad-field"
        )
    if value == "" and name != "CreateTime":
        return  # an optional number WeChat left empty
    pattern = _INTEGER if integer else _DECIMAL
    if pattern.fullmatch(value) is None:
        expected = "an integer" if integer else "a decimal number"
        raise ProtocolError(400, f"{name} must be {expected}, got {value[:32]!r}", kind="bad-field")
    number = int(value) if integer else float(value)
    if not (math.isfinite(number) and low <= number <= high):
        raise ProtocolError(
            400, f"{name} {value[:32]} is outside {low:g}..{high:g}", kind="bad-field"
        )


def _check_numbers(fields: dict[str, Any]) -> None:
    for name, value in fields.items():
        if name in _NUMBERS:
            _check_number(name, value)
        elif isinstance(value, dict):
            _check_numbers(value)  # depth bounded by parse_xml's MAX_DEPTH


def message_from_xml(fields: dict[str, Any], raw: str) -> Message:
    """Build a ``Message`` from parsed fields; a missing or malformed field is a 400.

    Every known numeric field is checked (``_NUMBERS``) and the envelope's names are bounded
    strings, so the stored form of any message this returns can be built and stored.
    """
    missing = [
        k for k in ("ToUserName", "FromUserName", "CreateTime", "MsgType") if not fields.get(k)
    ]
    if missing:
        raise ProtocolError(400, "missing field(s): " + ", ".join(missing), kind="bad-field")
    for name, limit in _NAMES.items():
        value = fields.get(name, "")
        if not isinstance(value, str) or len(value) > limit:
            raise ProtocolError(
                400, f"{name} must be text of at most {limit} characters", kind="bad-field"
            )
    _check_numbers(fields)
    create_time = int(fields["CreateTime"])
    msg_type = str(fields["MsgType"]).lower()
    openid = str(fields["FromUserName"])
    event = str(fields.get("Event") or "").lower() if msg_type == "event" else ""
    msg_id = str(fields.get("MsgId") or fields.get("MsgID") or "")
    if msg_id and msg_type != "event":
        key = f"msg:{msg_id}"
    else:
        # Events carry no MsgId: WeChat's own dedup advice is FromUserName + CreateTime.
        key = f"ev:{openid}:{create_time}:{event or msg_type}"
    return Message(
        key=key,
        openid=openid,
        account=str(fields["ToUserName"]),
        msg_type=msg_type,
        create_time=create_time,
        fields=fields,
        raw=raw,
        event=event,
        msg_id=msg_id,
    )


@dataclasses.dataclass(frozen=True)
class Article:
    """One item of a news (图文) reply."""

    title: str
    description: str = ""
    picurl: str = ""
    url: str = ""


# The passive-reply kinds WeChat supports (``success`` is "nothing to say").
REPLY_KINDS = ("text", "image", "voice", "video", "music", "news")
NEWS_MAX_ARTICLES = 8


@dataclasses.dataclass(frozen=True)
class Reply:
    """What the bot answers: one of WeChat's passive replies, or ``success`` (nothing).

    ``text`` (content); ``image``/``voice`` (media_id); ``video`` (media_id, title,
    description); ``music`` (title, description, music_url, hq_music_url, thumb_media_id);
    ``news`` (1–8 ``Article``). Media ids are permanent material (the media library).
    """

    kind: str
    content: str = ""
    media_id: str = ""
    title: str = ""
    description: str = ""
    music_url: str = ""
    hq_music_url: str = ""
    thumb_media_id: str = ""
    articles: tuple[Article, ...] = ()
    # The message asked us to delete its sender's data: it is stored without who sent it.
    forget: bool = False

    @classmethod
    def text(cls, content: str) -> Reply:
        return cls("text", content=truncate_utf8(content, TEXT_LIMIT_BYTES))

    @classmethod
    def image(cls, media_id: str) -> Reply:
        return cls("image", media_id=media_id)

    @classmethod
    def voice(cls, media_id: str) -> Reply:
        return cls("voice", media_id=media_id)

    @classmethod
    def video(cls, media_id: str, title: str = "", description: str = "") -> Reply:
        return cls("video", media_id=media_id, title=title, description=description)

    @classmethod
    def music(
        cls,
        *,
        thumb_media_id: str,
        title: str = "",
        description: str = "",
        music_url: str = "",
        hq_music_url: str = "",
    ) -> Reply:
        return cls(
            "music",
            title=title,
            description=description,
            music_url=music_url,
            hq_music_url=hq_music_url or music_url,
            thumb_media_id=thumb_media_id,
        )

    @classmethod
    def news(cls, articles: Sequence[Article]) -> Reply:
        if not 1 <= len(articles) <= NEWS_MAX_ARTICLES:
            raise ValueError(f"a news reply has 1 to {NEWS_MAX_ARTICLES} articles")
        return cls("news", articles=tuple(articles))

    @classmethod
    def nothing(cls) -> Reply:
        return cls("success")

    def describe(self) -> str:
        """One line for the dashboard's message log."""
        match self.kind:
            case "text":
                return self.content
            case "image":
                return f"[图片 {self.media_id}]"
            case "voice":
                return f"[语音 {self.media_id}]"
            case "video":
                return f"[视频 {self.title or self.media_id}]"
            case "music":
                return f"[音乐 {self.title or self.music_url}]"
            case "news":
                return f"[图文 {self.articles[0].title}]" if self.articles else "[图文]"
        return ""

    def document(self) -> dict[str, Any]:
        """The stored form (what ``from_document`` reads back): only the fields that are set."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "content": self.content,
            "media_id": self.media_id,
        }
        for name in ("title", "description", "music_url", "hq_music_url", "thumb_media_id"):
            value = getattr(self, name)
            if value:
                out[name] = value
        if self.articles:
            out["articles"] = [dataclasses.asdict(a) for a in self.articles]
        return out

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> Reply:
        def s(name: str) -> str:
            value = doc.get(name, "")
            return value if isinstance(value, str) else ""

        articles = tuple(
            Article(
                title=str(a.get("title", "")),
                description=str(a.get("description", "")),
                picurl=str(a.get("picurl", "")),
                url=str(a.get("url", "")),
            )
            for a in doc.get("articles") or ()
            if isinstance(a, Mapping)
        )
        return cls(
            s("kind") or "success",
            content=s("content"),
            media_id=s("media_id"),
            title=s("title"),
            description=s("description"),
            music_url=s("music_url"),
            hq_music_url=s("hq_music_url"),
            thumb_media_id=s("thumb_media_id"),
            articles=articles,
        )


def truncate_utf8(text: str, limit: int, ellipsis: str = "…") -> str:
    """Cut ``text`` to at most ``limit`` UTF-8 bytes on a character boundary, marking the cut."""
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    room = limit - len(ellipsis.encode("utf-8"))
    cut = encoded[:room].decode("utf-8", errors="ignore")
    return cut + ellipsis


def _cdata(value: str) -> str:
    # "]]>" cannot appear inside CDATA: split it across two sections.
    return "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def render_reply(reply: Reply, message: Message, now: int | None = None) -> str:
    """The plaintext passive reply XML, or ``success`` when there is nothing to say."""
    if reply.kind == "success":
        return "success"
    head = (
        f"<xml><ToUserName>{_cdata(message.openid)}</ToUserName>"
        f"<FromUserName>{_cdata(message.account)}</FromUserName>"
        f"<CreateTime>{int(now if now is not None else time.time())}</CreateTime>"
    )
    return head + f"<MsgType>{_cdata(reply.kind)}</MsgType>" + _body(reply) + "</xml>"


def _body(reply: Reply) -> str:
    """The elements after ``MsgType``, as in WeChat's 被动回复用户消息 reference."""
    match reply.kind:
        case "text":
            return f"<Content>{_cdata(reply.content)}</Content>"
        case "image":
            return f"<Image><MediaId>{_cdata(reply.media_id)}</MediaId></Image>"
        case "voice":
            return f"<Voice><MediaId>{_cdata(reply.media_id)}</MediaId></Voice>"
        case "video":
            return (
                f"<Video><MediaId>{_cdata(reply.media_id)}</MediaId>"
                f"<Title>{_cdata(reply.title)}</Title>"
                f"<Description>{_cdata(reply.description)}</Description></Video>"
            )
        case "music":
            return (
                f"<Music><Title>{_cdata(reply.title)}</Title>"
                f"<Description>{_cdata(reply.description)}</Description>"
                f"<MusicUrl>{_cdata(reply.music_url)}</MusicUrl>"
                f"<HQMusicUrl>{_cdata(reply.hq_music_url)}</HQMusicUrl>"
                f"<ThumbMediaId>{_cdata(reply.thumb_media_id)}</ThumbMediaId></Music>"
            )
        case "news":
            items = "".join(
                f"<item><Title>{_cdata(a.title)}</Title>"
                f"<Description>{_cdata(a.description)}</Description>"
                f"<PicUrl>{_cdata(a.picurl)}</PicUrl><Url>{_cdata(a.url)}</Url></item>"
                for a in reply.articles
            )
            return f"<ArticleCount>{len(reply.articles)}</ArticleCount><Articles>{items}</Articles>"
    raise ValueError(f"unknown reply kind {reply.kind!r}")


class Crypto:
    """Safe/compatible mode: wechatpy's AES (PrpCrypto) and a constant-time signature check."""

    def __init__(self, token: str, encoding_aes_key: str, app_id: str) -> None:
        self.token = token
        self.app_id = app_id
        try:
            self.key = binascii.a2b_base64(encoding_aes_key + "=")
        except binascii.Error as e:
            raise ValueError("WECHAT_ENCODING_AES_KEY is not valid base64") from e
        if len(self.key) != 32:
            raise ValueError("WECHAT_ENCODING_AES_KEY must decode to 32 bytes")
        # One for the process: it holds only the key's cipher description; every call makes its
        # own encryptor/decryptor, so nothing carries over from one message to the next.
        self._prp = PrpCrypto(self.key)

    def decrypt(self, encrypt: str, msg_signature: str, timestamp: str, nonce: str) -> str:
        """Check ``msg_signature``, decrypt ``Encrypt``, check the AppID inside; return the XML."""
        if not check_signature(self.token, msg_signature, timestamp, nonce, encrypt):
            raise ProtocolError(403, "msg_signature does not match", kind="msg-signature")
        try:
            plain = self._prp.decrypt(encrypt, self.app_id)
        except InvalidAppIdException as e:
            raise ProtocolError(
                400, "AppID inside the encrypted message does not match", kind="decrypt"
            ) from e
        except Exception as e:  # corrupt base64, padding, length: all of them mean a bad request
            raise ProtocolError(
                400, f"cannot decrypt Encrypt: {type(e).__name__}", kind="decrypt"
            ) from e
        return plain if isinstance(plain, str) else plain.decode("utf-8")

    def encrypt(self, xml: str, nonce: str, timestamp: str | None = None) -> str:
        """Wrap a plaintext reply the way WeChat expects it in safe mode."""
        timestamp = timestamp or str(int(time.time()))
        encrypt = self._prp.encrypt(xml, self.app_id)
        encrypt = encrypt if isinstance(encrypt, str) else encrypt.decode("ascii")
        signature = sign(self.token, timestamp, nonce, encrypt)
        return (
            f"<xml><Encrypt>{_cdata(encrypt)}</Encrypt>"
            f"<MsgSignature>{_cdata(signature)}</MsgSignature>"
            f"<TimeStamp>{escape(timestamp)}</TimeStamp>"
            f"<Nonce>{_cdata(nonce)}</Nonce></xml>"
        )
