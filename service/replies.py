"""Reply rules as data: the owner's keyword auto-replies and special replies.

The definition (YAML for ``replies export|publish``, the same shape as JSON for the dashboard)::

    welcome: 欢迎关注！          # subscribe; the open surveys' hint follows it
    welcome_hint: true           # false: no hint
    default: greeting            # text nothing claims: the seed's 你好 in six languages, or a reply
    unknown: {text: 对不起，不能识别您发的内容！}   # content we cannot handle (voice, ...)
    image: configured            # an image: the configured image (media upload), or a reply
    rules:                       # top to bottom, the first match wins
      - {match: exact, keyword: 菜单, reply: {text: "..."}, hours: "09:00-18:00", enabled: true}

A rule matches text (and menu CLICK keys) by ``exact`` keyword (after the folding survey keywords
get: ``normalize_keyword``), ``contains`` (the folded keyword inside the folded text) or
``regex`` (searched in the text as sent, with Google's RE2: linear time, so no pattern can run
away; what RE2 cannot guarantee, back-references and look-arounds, is refused at save). ``hours``
limits a rule to a daily window in ``TIMEZONE`` (``22:00-06:00`` crosses midnight);
``enabled: false`` keeps a rule without using it.

A reply is one of ``text``, ``image`` / ``voice`` (a permanent media_id), ``video`` (media_id,
title, description), ``music`` (title, description, url, hq_url, thumb_media_id), ``news`` (1–8
articles of title, description, picurl, url) or ``survey`` (starts or continues that survey,
as its keyword does).

``validate(data)`` lists every mistake (with its line and column when the data came from YAML)
and builds an immutable ``ReplyBook``; ``ReplyRules`` keeps the saved one in memory in every
process through the one ``DefinitionWatcher`` (the surveys' mechanism).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

import re2
import yaml

from .definitions import LiveSnapshot
from .store import Db
from .store import replies as store
from .surveys.loader import Issue, _Doc, normalize_keyword
from .wechat import NEWS_MAX_ARTICLES, TEXT_LIMIT_BYTES, Article, Reply

__all__ = [
    "DEFAULT_UNKNOWN",
    "DEFAULT_WELCOME",
    "MATCH_KINDS",
    "MAX_DEFINITION_BYTES",
    "MAX_RULES",
    "REPLY_FIELDS",
    "PublishResult",
    "ReplyBook",
    "ReplyRules",
    "ReplySpec",
    "Rule",
    "dump_yaml",
    "parse_yaml",
    "validate",
]

log = logging.getLogger(__name__)

DEFAULT_WELCOME = "欢迎关注！"
DEFAULT_UNKNOWN = "对不起，不能识别您发的内容！"
MATCH_KINDS = ("exact", "contains", "regex")
MAX_RULES = 500
MAX_KEYWORD_CHARS = 128
MAX_PATTERN_CHARS = 512
MAX_MEDIA_ID_CHARS = 128
MAX_TITLE_CHARS = 64
MAX_DESCRIPTION_CHARS = 512
MAX_URL_BYTES = 1024
MAX_DEFINITION_BYTES = 512 * 1024
# The reply kinds of a definition and the fields each takes (``text``/``image``/``voice``/
# ``survey`` take a string).
REPLY_FIELDS: dict[str, tuple[str, ...]] = {
    "text": (),
    "image": (),
    "voice": (),
    "video": ("media_id", "title", "description"),
    "music": ("title", "description", "url", "hq_url", "thumb_media_id"),
    "news": ("title", "description", "picurl", "url"),
    "survey": (),
}
TOP_KEYS = ("welcome", "welcome_hint", "default", "unknown", "image", "rules")
RULE_KEYS = ("match", "keyword", "pattern", "reply", "enabled", "hours", "name")
_HOURS = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_SURVEY_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")

Path_ = tuple[str | int, ...]


def _re2_options() -> Any:
    options = re2.Options()
    options.log_errors = False  # RE2 would print every refused pattern to stderr
    options.max_mem = 1 << 20  # a bounded automaton per pattern (1 MiB)
    return options


_OPTIONS = _re2_options()


@dataclasses.dataclass(frozen=True)
class ReplySpec:
    """A reply a rule (or a special reply) gives: a fixed passive reply, or a survey."""

    reply: Reply | None = None
    survey: str = ""

    def document(self) -> dict[str, Any]:
        """The definition's form (what ``validate`` reads back)."""
        if self.survey:
            return {"survey": self.survey}
        r = self.reply
        assert r is not None  # noqa: S101 - one of the two is set by construction
        match r.kind:
            case "text":
                return {"text": r.content}
            case "image" | "voice":
                return {r.kind: r.media_id}
            case "video":
                return {
                    "video": _drop_empty(
                        media_id=r.media_id, title=r.title, description=r.description
                    )
                }
            case "music":
                return {
                    "music": _drop_empty(
                        title=r.title,
                        description=r.description,
                        url=r.music_url,
                        hq_url=r.hq_music_url,
                        thumb_media_id=r.thumb_media_id,
                    )
                }
        return {"news": [_drop_empty(**dataclasses.asdict(a)) for a in r.articles]}


def _drop_empty(**fields: str) -> dict[str, str]:
    return {k: v for k, v in fields.items() if v}


@dataclasses.dataclass(frozen=True)
class Rule:
    match: str
    keyword: str  # the keyword as written, or the regular expression
    reply: ReplySpec
    enabled: bool = True
    hours: tuple[int, int] | None = None  # minutes after midnight: from (inclusive), to (exclusive)
    name: str = ""
    folded: str = ""
    pattern: Any = None  # the compiled RE2 pattern

    def in_window(self, minute: int) -> bool:
        if self.hours is None:
            return True
        start, end = self.hours
        return start <= minute < end if start < end else minute >= start or minute < end

    def matches(self, text: str, folded: str) -> bool:
        if self.match == "exact":
            return folded == self.folded
        if self.match == "contains":
            return bool(self.folded) and self.folded in folded
        return self.pattern is not None and self.pattern.search(text) is not None

    def document(self) -> dict[str, Any]:
        out: dict[str, Any] = {"match": self.match}
        out["pattern" if self.match == "regex" else "keyword"] = self.keyword
        out["reply"] = self.reply.document()
        if self.hours is not None:
            out["hours"] = "%02d:%02d-%02d:%02d" % (  # noqa: UP031 - four fields, one shape
                *divmod(self.hours[0], 60),
                *divmod(self.hours[1], 60),
            )
        if not self.enabled:
            out["enabled"] = False
        if self.name:
            out["name"] = self.name
        return out


@dataclasses.dataclass(frozen=True)
class ReplyBook:
    """One immutable set of replies; swapped whole when the owner saves."""

    welcome: ReplySpec = ReplySpec(Reply.text(DEFAULT_WELCOME))
    welcome_hint: bool = True
    default: ReplySpec | None = None  # None: the greeting
    unknown: ReplySpec = ReplySpec(Reply.text(DEFAULT_UNKNOWN))
    image: ReplySpec | None = None  # None: the configured image
    rules: tuple[Rule, ...] = ()
    version: int = 0  # 0: nothing saved yet (these defaults)
    updated_at: dt.datetime | None = None
    updated_by: str = ""

    def match(self, text: str, now: dt.datetime) -> Rule | None:
        """The first enabled rule, in its time window at ``now`` (aware, in the owner's zone),
        that matches ``text``."""
        if not self.rules:
            return None
        folded = normalize_keyword(text)
        stripped = text.strip()
        minute = now.hour * 60 + now.minute
        for rule in self.rules:
            if rule.enabled and rule.in_window(minute) and rule.matches(stripped, folded):
                return rule
        return None

    def claims(self, text: str) -> bool:
        """An enabled rule answers ``text`` at some time of day (the menu editor's check)."""
        folded, stripped = normalize_keyword(text), text.strip()
        return any(r.enabled and r.matches(stripped, folded) for r in self.rules)

    def document(self) -> dict[str, Any]:
        """The definition (``export``, the dashboard editor)."""
        out: dict[str, Any] = {"welcome": self.welcome.document()}
        welcome = out["welcome"]
        if list(welcome) == ["text"]:
            out["welcome"] = welcome["text"]
        out["welcome_hint"] = self.welcome_hint
        out["default"] = "greeting" if self.default is None else self.default.document()
        out["unknown"] = self.unknown.document()
        out["image"] = "configured" if self.image is None else self.image.document()
        out["rules"] = [rule.document() for rule in self.rules]
        return out


class _Checker:
    """Checks one definition, collecting every mistake."""

    def __init__(self, doc: _Doc | None, name: str, survey_ids: Sequence[str] | None) -> None:
        self.doc = doc
        self.name = name
        self.survey_ids = None if survey_ids is None else set(survey_ids)
        self.issues: list[Issue] = []

    def error(self, path: Path_, message: str) -> None:
        if self.doc is not None:
            self.doc.error(path, message)
        else:
            where = ""
            for part in path:
                where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else part)
            self.issues.append(Issue(self.name, 0, 0, where, message))

    def all_issues(self) -> list[Issue]:
        return [*(self.doc.issues if self.doc is not None else ()), *self.issues]

    # -- pieces --------------------------------------------------------------------------------
    def _string(self, value: Any, path: Path_, *, limit: int, required: bool = True) -> str:
        if value is None and not required:
            return ""
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.error(path, "expected text")
            return ""
        text = str(value)
        if required and not text.strip():
            self.error(path, "must not be empty")
        if len(text) > limit:
            self.error(path, f"{len(text)} characters, at most {limit}")
        return text

    def _url(self, value: Any, path: Path_, *, required: bool = False) -> str:
        text = self._string(value, path, limit=MAX_URL_BYTES, required=required)
        if not text:
            return ""
        parsed = urllib.parse.urlsplit(text)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            self.error(path, f"{text[:80]!r} is not an http(s) URL")
        elif len(text.encode("utf-8")) > MAX_URL_BYTES:
            self.error(path, f"at most {MAX_URL_BYTES} bytes")
        return text

    def _media(self, value: Any, path: Path_) -> str:
        text = self._string(value, path, limit=MAX_MEDIA_ID_CHARS)
        if text and not text.isprintable():
            self.error(path, "a media_id is printable text")
        return text

    def _fields(self, value: Any, kind: str, path: Path_) -> dict[str, Any] | None:
        if not isinstance(value, Mapping):
            self.error(path, f"{kind}: expected a mapping with {', '.join(REPLY_FIELDS[kind])}")
            return None
        for key in value:
            if key not in REPLY_FIELDS[kind]:
                self.error(
                    (*path, str(key)),
                    f"unknown key {key!r} (allowed: {', '.join(REPLY_FIELDS[kind])})",
                )
        return dict(value)

    def reply(self, value: Any, path: Path_) -> ReplySpec | None:
        if isinstance(value, str):  # a bare string is a text reply
            value = {"text": value}
        if not isinstance(value, Mapping) or len(value) != 1:
            self.error(path, f"a reply is one of {', '.join(REPLY_FIELDS)}, e.g. {{text: 你好}}")
            return None
        ((kind, body),) = value.items()
        where = (*path, str(kind))
        if kind not in REPLY_FIELDS:
            self.error(where, f"unknown reply kind {kind!r} (one of {', '.join(REPLY_FIELDS)})")
            return None
        if kind == "text":
            text = self._string(body, where, limit=TEXT_LIMIT_BYTES)
            size = len(text.encode("utf-8"))
            if size > TEXT_LIMIT_BYTES:
                self.error(
                    where,
                    f"{size} bytes, WeChat takes at most {TEXT_LIMIT_BYTES} (UTF-8; "
                    "a Chinese character is 3 bytes)",
                )
            return ReplySpec(Reply("text", content=text))
        if kind in ("image", "voice"):
            return ReplySpec(Reply(kind, media_id=self._media(body, where)))
        if kind == "survey":
            sid = self._string(body, where, limit=64)
            if sid and not _SURVEY_ID.match(sid):
                self.error(where, f"{sid!r} is not a survey id")
            elif sid and self.survey_ids is not None and sid not in self.survey_ids:
                known = ", ".join(sorted(self.survey_ids)) or "none"
                self.error(where, f"no published survey {sid!r} (published: {known})")
            return ReplySpec(survey=sid)
        if kind == "video":
            f = self._fields(body, kind, where)
            if f is None:
                return None
            return ReplySpec(
                Reply.video(
                    self._media(f.get("media_id"), (*where, "media_id")),
                    self._string(
                        f.get("title"), (*where, "title"), limit=MAX_TITLE_CHARS, required=False
                    ),
                    self._string(
                        f.get("description"),
                        (*where, "description"),
                        limit=MAX_DESCRIPTION_CHARS,
                        required=False,
                    ),
                )
            )
        if kind == "music":
            f = self._fields(body, kind, where)
            if f is None:
                return None
            return ReplySpec(
                Reply.music(
                    title=self._string(
                        f.get("title"), (*where, "title"), limit=MAX_TITLE_CHARS, required=False
                    ),
                    description=self._string(
                        f.get("description"),
                        (*where, "description"),
                        limit=MAX_DESCRIPTION_CHARS,
                        required=False,
                    ),
                    music_url=self._url(f.get("url"), (*where, "url"), required=True),
                    hq_music_url=self._url(f.get("hq_url"), (*where, "hq_url")),
                    thumb_media_id=self._media(f.get("thumb_media_id"), (*where, "thumb_media_id")),
                )
            )
        # news
        if not isinstance(body, list) or not 1 <= len(body) <= NEWS_MAX_ARTICLES:
            self.error(where, f"news: a list of 1 to {NEWS_MAX_ARTICLES} articles")
            return None
        articles = []
        for i, item in enumerate(body):
            f = self._fields(item, kind, (*where, i))
            if f is None:
                continue
            articles.append(
                Article(
                    title=self._string(f.get("title"), (*where, i, "title"), limit=MAX_TITLE_CHARS),
                    description=self._string(
                        f.get("description"),
                        (*where, i, "description"),
                        limit=MAX_DESCRIPTION_CHARS,
                        required=False,
                    ),
                    picurl=self._url(f.get("picurl"), (*where, i, "picurl")),
                    url=self._url(f.get("url"), (*where, i, "url")),
                )
            )
        return ReplySpec(Reply.news(articles)) if articles else None

    def hours(self, value: Any, path: Path_) -> tuple[int, int] | None:
        found = _HOURS.match(value) if isinstance(value, str) else None
        if found is None:
            self.error(path, 'hours: "HH:MM-HH:MM" in TIMEZONE, e.g. "09:00-18:00"')
            return None
        h1, m1, h2, m2 = (int(g) for g in found.groups())
        if h1 > 24 or h2 > 24 or m1 > 59 or m2 > 59 or (h1 == 24 and m1) or (h2 == 24 and m2):
            self.error(path, f"{value!r}: not a time of day")
            return None
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if start == end:
            self.error(path, f"{value!r}: an empty window")
            return None
        return start, end

    def rule(self, value: Any, path: Path_) -> Rule | None:
        if not isinstance(value, Mapping):
            self.error(path, "a rule is a mapping with match, keyword (or pattern) and reply")
            return None
        for key in value:
            if key not in RULE_KEYS:
                self.error(
                    (*path, str(key)), f"unknown key {key!r} (allowed: {', '.join(RULE_KEYS)})"
                )
        kind = value.get("match", "exact")
        if kind not in MATCH_KINDS:
            self.error((*path, "match"), f"{kind!r} is not one of {', '.join(MATCH_KINDS)}")
            return None
        compiled: Any = None
        folded = ""
        if kind == "regex":
            if "keyword" in value:
                self.error((*path, "keyword"), "a regex rule takes pattern, not keyword")
            keyword = self._string(
                value.get("pattern"), (*path, "pattern"), limit=MAX_PATTERN_CHARS
            )
            if keyword:
                try:
                    compiled = re2.compile(keyword, _OPTIONS)
                except re2.error as e:
                    why = (
                        e.args[0].decode("utf-8", "replace")
                        if e.args and isinstance(e.args[0], bytes)
                        else str(e)
                    )
                    self.error(
                        (*path, "pattern"),
                        f"refused ({why}): patterns run in RE2, in "
                        "linear time; back-references and look-arounds, which can make "
                        "a pattern run for minutes, are not supported",
                    )
        else:
            if "pattern" in value:
                self.error((*path, "pattern"), f"a {kind} rule takes keyword, not pattern")
            keyword = self._string(
                value.get("keyword"), (*path, "keyword"), limit=MAX_KEYWORD_CHARS
            )
            folded = normalize_keyword(keyword)
            if keyword and not folded:
                self.error(
                    (*path, "keyword"),
                    f"{keyword!r} is empty once spaces and punctuation are folded away",
                )
        enabled = value.get("enabled", True)
        if not isinstance(enabled, bool):
            self.error((*path, "enabled"), "true or false")
            enabled = True
        hours = self.hours(value["hours"], (*path, "hours")) if value.get("hours") else None
        name = self._string(
            value.get("name"), (*path, "name"), limit=MAX_TITLE_CHARS, required=False
        )
        if "reply" not in value:
            self.error(path, "reply: required")
            return None
        reply = self.reply(value["reply"], (*path, "reply"))
        if reply is None:
            return None
        return Rule(kind, keyword, reply, enabled, hours, name, folded, compiled)

    def book(self, data: Any) -> ReplyBook | None:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            self.error((), "the replies are a mapping: welcome, default, unknown, image, rules")
            return None
        for key in data:
            if key not in TOP_KEYS:
                self.error((str(key),), f"unknown key {key!r} (allowed: {', '.join(TOP_KEYS)})")
        defaults = ReplyBook()
        welcome = defaults.welcome
        if "welcome" in data:
            welcome = self.reply(data["welcome"], ("welcome",)) or welcome
            if welcome.survey:
                self.error(("welcome",), "the welcome cannot start a survey (no text to answer)")
        hint = data.get("welcome_hint", True)
        if not isinstance(hint, bool):
            self.error(("welcome_hint",), "true or false")
            hint = True
        default = None
        if data.get("default", "greeting") != "greeting":
            default = self.reply(data["default"], ("default",))
        unknown = defaults.unknown
        if "unknown" in data:
            unknown = self.reply(data["unknown"], ("unknown",)) or unknown
        image = None
        if data.get("image", "configured") != "configured":
            image = self.reply(data["image"], ("image",))
        rules: list[Rule] = []
        raw_rules = data.get("rules") or []
        if not isinstance(raw_rules, list):
            self.error(("rules",), "a list of rules, top to bottom")
            raw_rules = []
        if len(raw_rules) > MAX_RULES:
            self.error(("rules",), f"{len(raw_rules)} rules, at most {MAX_RULES}")
        seen: dict[tuple[str, str], int] = {}
        for i, raw in enumerate(raw_rules[:MAX_RULES]):
            rule = self.rule(raw, ("rules", i))
            if rule is None:
                continue
            key = (rule.match, rule.folded or rule.keyword)
            if rule.match == "exact" and key in seen:
                self.error(
                    ("rules", i, "keyword"),
                    f"the same keyword as rules[{seen[key]}], which comes first and is always "
                    "on: this rule would never answer",
                )
            if rule.enabled and rule.hours is None:
                seen.setdefault(key, i)
            rules.append(rule)
        return ReplyBook(
            welcome=welcome,
            welcome_hint=hint,
            default=default,
            unknown=unknown,
            image=image,
            rules=tuple(rules),
        )


def validate(
    data: Any,
    *,
    name: str = "replies",
    survey_ids: Sequence[str] | None = None,
    survey_keywords: Mapping[str, str] | None = None,
    doc: _Doc | None = None,
) -> tuple[ReplyBook | None, list[Issue]]:
    """The replies of ``data`` (the YAML's or the editor's), or every mistake in it.

    ``survey_ids``: the surveys a ``survey`` reply may name (None: not checked).
    ``survey_keywords`` (folded keyword -> survey id): an exact rule on a survey's keyword
    would never answer (surveys come first), so it is a mistake.
    """
    checker = _Checker(doc, name, survey_ids)
    book = checker.book(data)
    if book is not None and survey_keywords:
        for i, rule in enumerate(book.rules):
            sid = survey_keywords.get(rule.folded) if rule.match == "exact" else None
            if sid is not None:
                checker.error(
                    ("rules", i, "keyword"),
                    f"{rule.keyword!r} starts survey {sid!r}, "
                    "which comes before the rules: use reply: {survey: "
                    f"{sid}}} or another keyword",
                )
    issues = checker.all_issues()
    return (None, issues) if issues or book is None else (book, [])


def parse_yaml(
    text: str,
    name: str = "replies.yaml",
    *,
    survey_ids: Sequence[str] | None = None,
    survey_keywords: Mapping[str, str] | None = None,
) -> tuple[ReplyBook | None, list[Issue]]:
    """``validate`` a YAML text, each mistake with its line and column."""
    if len(text.encode("utf-8")) > MAX_DEFINITION_BYTES:
        return None, [Issue(name, 0, 0, "", f"over {MAX_DEFINITION_BYTES // 1024} KiB")]
    doc = _Doc(name, text)
    if doc.fatal:
        return None, list(doc.issues)
    return validate(
        doc.data, name=name, survey_ids=survey_ids, survey_keywords=survey_keywords, doc=doc
    )


def dump_yaml(book: ReplyBook) -> str:
    header = (
        "# Reply rules (python -m service replies publish FILE); see README「自动回复」.\n"
        f"# version {book.version}"
        + (
            f", saved {book.updated_at:%Y-%m-%d %H:%M} UTC by {book.updated_by}"
            if book.updated_at
            else ""
        )
        + "\n"
    )
    body = yaml.dump(
        book.document(), Dumper=_Dumper, allow_unicode=True, sort_keys=False, width=100
    )
    return header + body


class _Dumper(yaml.SafeDumper):
    """Multi-line texts as ``|`` blocks, readable and diffable in git."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


@dataclasses.dataclass(frozen=True)
class PublishResult:
    version: int  # the version saved (0: nothing saved)
    issues: Sequence[Issue] = ()
    conflict: bool = False  # the expected version was no longer the stored one

    @property
    def ok(self) -> bool:
        return not self.issues and not self.conflict


class ReplyRules(LiveSnapshot[ReplyBook]):
    """The saved replies of one database, in memory, following every change.

    ``snapshot`` is what the bot reads on the hot path; ``surveys`` (optional) gives the
    published survey ids and keywords a save is checked against.
    """

    def __init__(
        self,
        db: Db,
        *,
        surveys: Any = None,
        poll_interval: float = 1.0,
        polling: bool = False,
    ) -> None:
        super().__init__(
            "reply rules",
            ReplyBook(),
            watch=lambda token: store.watch(db, resume_after=token),
            stamp=lambda: store.stamp(db),
            poll_interval=poll_interval,
            polling=polling,
        )
        self.db = db
        self.surveys = surveys  # a SurveyEngine (its snapshot's ids and keywords), or None

    async def _build(self) -> ReplyBook | None:
        doc = await store.get_rules(self.db)
        book = ReplyBook()
        if doc is not None:
            parsed, issues = validate(doc.get("data"), name="reply_rules (database)")
            if parsed is None:
                # Saved only after validation: a document broken by hand keeps the last good one.
                log.error(
                    "reply rules version %s fail validation (%s); keeping version %d",
                    doc.get("version"),
                    "; ".join(str(i) for i in issues[:5]),
                    self.snapshot.version,
                )
                return None
            updated = doc.get("updated_at")
            if isinstance(updated, dt.datetime) and updated.tzinfo is None:
                updated = updated.replace(tzinfo=dt.UTC)
            book = dataclasses.replace(
                parsed,
                version=int(doc.get("version") or 0),
                updated_at=updated if isinstance(updated, dt.datetime) else None,
                updated_by=str(doc.get("updated_by") or ""),
            )
        return book

    def _survey_context(self) -> tuple[list[str] | None, dict[str, str] | None]:
        if self.surveys is None:
            return None, None
        snap = self.surveys.snapshot
        return list(snap.current), {k: s.id for k, s in snap.keywords.items()}

    def check(self, data: Any, name: str = "replies") -> tuple[ReplyBook | None, list[Issue]]:
        ids, keywords = self._survey_context()
        return validate(data, name=name, survey_ids=ids, survey_keywords=keywords)

    def check_yaml(
        self, text: str, name: str = "replies.yaml"
    ) -> tuple[ReplyBook | None, list[Issue]]:
        ids, keywords = self._survey_context()
        return parse_yaml(text, name, survey_ids=ids, survey_keywords=keywords)

    async def publish(
        self,
        book: ReplyBook,
        *,
        by: str,
        source: str,
        expected_version: int | None = None,
    ) -> PublishResult:
        """Save a validated book as the next version (every process follows within ~1 s)."""
        version = await store.save_rules(
            self.db, book.document(), by=by, source=source, expected_version=expected_version
        )
        if version is None:
            return PublishResult(0, conflict=True)
        log.info("reply rules: version %d saved by %s (%s)", version, by, source)
        await self.refresh()
        return PublishResult(version)
