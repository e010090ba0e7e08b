"""Read survey YAML files, validate them and build ``Survey`` objects, all or nothing.

Every mistake is collected (not just the first) and reported with the file name, the line and
column, and the path inside the document, e.g.::

    baogan.yaml:41:11: questions[3].options[1].next: unknown question id 'q11'

A folder loads only when every file in it is valid: an invalid survey never half-loads.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import re
import unicodedata
import zoneinfo
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..config import DEFAULT_TIMEZONE, ConfigError
from ..wechat import TEXT_LIMIT_BYTES
from .logic import Condition, check_condition, check_placeholders
from .model import (
    COMMAND_WORDS,
    END,
    KINDS,
    ON_EXPIRE,
    Band,
    Dimension,
    Option,
    Question,
    Quota,
    Survey,
)
from .render import REPLY_HEADROOM, fits, question_text, start_text

__all__ = [
    "COMMAND_WORDS",
    "SHIPPED_DIR",
    "Issue",
    "SurveyLoadError",
    "check_paths",
    "load_dir",
    "load_file",
    "load_shipped",
    "normalize_keyword",
    "parse_survey",
    "survey_files",
]

SHIPPED_DIR = Path(__file__).resolve().parent
SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MAX_OPTIONS = 26  # letters A–Z
# remind_after / expire_after: a whole number and a unit (seconds are for tests).
DURATION = re.compile(r"^([0-9]+)\s*([smhd])$")
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# WeChat lets a customer-service message reach a user within 48 hours of their last message.
REMIND_WINDOW = 48 * 3600

Path_ = tuple[str | int, ...]


@dataclasses.dataclass(frozen=True)
class Issue:
    """One validation mistake: where it is and what is wrong."""

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        return f"{where}: {self.path + ': ' if self.path else ''}{self.message}"


class SurveyLoadError(ConfigError):
    """Surveys failed validation; ``issues`` lists every mistake found.

    A ``ConfigError``: ``serve`` reports it (every mistake) and exits with status 2.
    """

    def __init__(self, issues: Sequence[Issue]) -> None:
        self.issues = list(issues)
        lines = "\n".join(f"  {issue}" for issue in self.issues)
        super().__init__(f"{len(self.issues)} mistake(s) in survey definitions:\n{lines}")


def normalize_keyword(text: str) -> str:
    """The form keywords and commands are compared in: NFKC, case-folded, no spaces or quotes."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = re.sub(r"\s+", "", text)
    return text.strip("!?.,;:~。、…「」『』“”\"'《》【】()（）[]")


def _path_str(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


class _Doc:
    """A YAML document turned into plain Python values, remembering where each value came from."""

    def __init__(self, file: str, text: str) -> None:
        self.file = file
        self.issues: list[Issue] = []
        self.marks: dict[Path_, tuple[int, int]] = {}
        self.quoted: set[Path_] = set()  # scalars written in quotes (their text starts one later)
        self.data: Any = None
        self.fatal = False  # the YAML itself could not be read
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is not None:
                self.data = self._walk(loader, node, ())
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
            problem = " ".join(str(p) for p in (e.context, e.problem) if p)
            self.issues.append(Issue(file, line, column, "", f"invalid YAML: {problem}"))
            self.fatal = True
        except yaml.YAMLError as e:
            self.issues.append(Issue(file, 0, 0, "", f"invalid YAML: {e}"))
            self.fatal = True
        finally:
            loader.dispose()

    def _walk(self, loader: yaml.SafeLoader, node: Node, path: Path_) -> Any:
        self.marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, MappingNode):
            loader.flatten_mapping(node)
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = loader.construct_object(key_node, deep=True)
                if not isinstance(key, str | int | float | bool) or key is None:
                    self.error(path, f"unsupported key {key!r}", key_node)
                    continue
                key = str(key)
                if key in out:
                    self.error((*path, key), f"duplicate key {key!r}", key_node)
                out[key] = self._walk(loader, value_node, (*path, key))
            return out
        if isinstance(node, SequenceNode):
            return [self._walk(loader, item, (*path, i)) for i, item in enumerate(node.value)]
        assert isinstance(node, ScalarNode)  # noqa: S101 - the three YAML node kinds
        if node.style in ("'", '"'):
            self.quoted.add(path)
        return loader.construct_object(node, deep=True)

    def where(self, path: Path_) -> tuple[int, int]:
        while path and path not in self.marks:
            path = path[:-1]
        return self.marks.get(path, (0, 0))

    def error_at(self, path: Path_, offset: int, message: str) -> None:
        """A mistake ``offset`` characters into the one-line scalar at ``path``."""
        line, column = self.where(path)
        if line:
            column += offset + (1 if path in self.quoted else 0)
        self.issues.append(Issue(self.file, line, column, _path_str(path), message))

    def error(self, path: Path_, message: str, node: Node | None = None) -> None:
        if node is not None:
            line, column = node.start_mark.line + 1, node.start_mark.column + 1
        else:
            line, column = self.where(path)
        self.issues.append(Issue(self.file, line, column, _path_str(path), message))


class _Validator:
    """Checks one survey document and builds the ``Survey`` when it is valid."""

    TOP_KEYS = frozenset(
        {
            "id",
            "title",
            "keywords",
            "intro",
            "outro",
            "privacy",
            "questions",
            "results",
            "allow_retake",
            "open",
            "opens_at",
            "closes_at",
            "quotas",
            "remind_after",
            "expire_after",
            "on_expire",
        }
    )
    QUESTION_KEYS: ClassVar[dict[str, set[str]]] = {
        "single": {"options", "next"},
        "multiple": {"options", "next", "min_choices", "max_choices"},
        "rating": {"min", "max", "min_label", "max_label", "scored", "dimension", "next"},
        "number": {"min", "max", "integer", "unit", "next"},
        "text": {"max_length", "next"},
    }
    COMMON_KEYS = frozenset(
        {"id", "kind", "text", "hint", "show_if", "optional", "screen_out_if", "screen_out_text"}
    )
    OPTION_KEYS = frozenset({"text", "score", "dims", "next"})
    BAND_KEYS = frozenset({"id", "min", "max", "title", "comment"})

    def __init__(self, doc: _Doc, tz: dt.tzinfo) -> None:
        self.doc = doc
        self.tz = tz  # the zone of times written without an offset
        self.dimension_ids: set[str] = set()
        self.dimensions: tuple[Dimension, ...] = ()
        self.kinds: dict[str, str] = {}  # question id -> kind, in order

    def error(self, path: Path_, message: str) -> None:
        self.doc.error(path, message)

    # -- small typed getters -------------------------------------------------------------------
    def _keys(self, value: dict[str, Any], allowed: Iterable[str], path: Path_) -> None:
        allowed = set(allowed)
        for key in value:
            if key not in allowed:
                hint = ", ".join(sorted(allowed))
                self.error((*path, key), f"unknown key {key!r} (allowed: {hint})")

    def _str(
        self,
        value: dict[str, Any],
        key: str,
        path: Path_,
        *,
        required: bool = False,
        default: str = "",
    ) -> str:
        if key not in value or value[key] is None:
            if required:
                self.error(path, f"{key!r} is required")
            return default
        raw = value[key]
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            self.error((*path, key), f"{key!r} must be text")
            return default
        text = str(raw).strip()
        if required and not text:
            self.error((*path, key), f"{key!r} must not be empty")
        return text

    def _int(
        self,
        value: dict[str, Any],
        key: str,
        path: Path_,
        default: int | None = None,
        *,
        required: bool = False,
    ) -> int | None:
        if key not in value or value[key] is None:
            if required:
                self.error(path, f"{key!r} is required")
            return default
        raw = value[key]
        if isinstance(raw, bool) or not isinstance(raw, int):
            self.error((*path, key), f"{key!r} must be a whole number, got {raw!r}")
            return default
        return raw

    def _number(self, value: dict[str, Any], key: str, path: Path_) -> float | None:
        raw = value.get(key)
        if raw is None:
            return None
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            self.error((*path, key), f"{key!r} must be a number, got {raw!r}")
            return None
        return float(raw)

    def _bool(self, value: dict[str, Any], key: str, path: Path_, default: bool) -> bool:
        raw = value.get(key)
        if raw is None:
            return default
        if not isinstance(raw, bool):
            self.error((*path, key), f"{key!r} must be true or false, got {raw!r}")
            return default
        return raw

    def _time(self, value: dict[str, Any], key: str, path: Path_) -> dt.datetime | None:
        raw = value.get(key)
        if raw is None:
            return None
        if isinstance(raw, dt.datetime):
            moment = raw
        elif isinstance(raw, dt.date):
            moment = dt.datetime.combine(raw, dt.time())
        elif isinstance(raw, str):
            try:
                moment = dt.datetime.fromisoformat(raw.strip())
            except ValueError:
                self.error((*path, key), f"{key!r} must be a date and time like 2026-12-01 09:00")
                return None
        else:
            self.error((*path, key), f"{key!r} must be a date and time like 2026-12-01 09:00")
            return None
        if moment.tzinfo is None:  # a wall-clock time in the owner's time zone (TIMEZONE)
            moment = moment.replace(tzinfo=self.tz)
        return moment.astimezone(dt.UTC)

    def _mapping(self, raw: Any, path: Path_, what: str) -> dict[str, Any] | None:
        if not isinstance(raw, dict):
            self.error(path, f"{what} must be a mapping (key: value), got {type(raw).__name__}")
            return None
        return raw

    def _list(self, raw: Any, path: Path_, what: str) -> list[Any] | None:
        if not isinstance(raw, list):
            self.error(path, f"{what} must be a list, got {type(raw).__name__}")
            return None
        return raw

    # -- the survey --------------------------------------------------------------------------
    def survey(self) -> Survey | None:
        top = self._mapping(self.doc.data, (), "a survey")
        if top is None:
            return None
        errors_before = len(self.doc.issues)
        self._keys(top, self.TOP_KEYS, ())
        survey_id = self._str(top, "id", (), required=True)
        if survey_id and not SLUG.match(survey_id):
            self.error(("id",), f"id {survey_id!r} must be lowercase letters, digits, '-' or '_'")
        title = self._str(top, "title", (), required=True)
        keywords = self._keywords(top)
        self.dimensions = self._dimensions(top)
        questions = self._questions(top)
        bands = self._results_bands(top)
        quotas = self._quotas(top)
        opens_at = self._time(top, "opens_at", ())
        closes_at = self._time(top, "closes_at", ())
        if opens_at and closes_at and opens_at >= closes_at:
            self.error(("closes_at",), "closes_at must be after opens_at")
        intro = self._str(top, "intro", ())
        outro = self._str(top, "outro", ())
        privacy = self._str(top, "privacy", ())
        self._placeholders(top, "outro", (), self.kinds)
        results = top.get("results")
        raw_bands = results.get("bands") if isinstance(results, dict) else None
        for i, band in enumerate(raw_bands if isinstance(raw_bands, list) else ()):
            if isinstance(band, dict):
                self._placeholders(band, "comment", ("results", "bands", i), self.kinds)
        allow_retake = self._bool(top, "allow_retake", (), False)
        is_open = self._bool(top, "open", (), True)
        remind_after, expire_after, on_expire = self._follow_up(top)
        if len(self.doc.issues) > errors_before or not questions:
            return None
        survey = Survey(
            id=survey_id,
            title=title,
            keywords=keywords,
            questions=tuple(questions),
            intro=intro,
            outro=outro,
            privacy=privacy,
            bands=bands,
            dimensions=self.dimensions,
            quotas=quotas,
            allow_retake=allow_retake,
            open=is_open,
            opens_at=opens_at,
            closes_at=closes_at,
            remind_after=remind_after,
            expire_after=expire_after,
            on_expire=on_expire,
            source=self.doc.file,
        )
        self._check_coverage(survey)
        self._check_sizes(survey)
        return None if len(self.doc.issues) > errors_before else survey

    def _duration(self, value: dict[str, Any], key: str, path: Path_) -> int | None:
        """``30m``, ``6h``, ``2d`` (``2s``: seconds, for tests) as seconds; None when absent."""
        raw = value.get(key)
        if raw is None:
            return None
        match = DURATION.match(raw.strip().lower()) if isinstance(raw, str) else None
        if match is None:
            self.error((*path, key), f"{key!r} must be a duration like 30m, 6h or 2d, got {raw!r}")
            return None
        seconds = int(match.group(1)) * DURATION_UNITS[match.group(2)]
        if seconds <= 0:
            self.error((*path, key), f"{key!r} must be longer than zero")
            return None
        return seconds

    def _follow_up(self, top: dict[str, Any]) -> tuple[int | None, int | None, str]:
        """``remind_after``, ``expire_after`` and ``on_expire`` (default ``restart``)."""
        remind_after = self._duration(top, "remind_after", ())
        expire_after = self._duration(top, "expire_after", ())
        if remind_after is not None and remind_after >= REMIND_WINDOW:
            self.error(
                ("remind_after",),
                "'remind_after' must be under 48h: WeChat delivers a customer-service message "
                "only within 48 hours of the user's last message",
            )
        if remind_after is not None and expire_after is not None and remind_after >= expire_after:
            self.error(
                ("remind_after",),
                "'remind_after' must be shorter than 'expire_after' "
                "(the session expires before the reminder is due)",
            )
        on_expire = self._str(top, "on_expire", ()) or "restart"
        if "on_expire" in top and on_expire not in ON_EXPIRE:
            self.error(("on_expire",), f"'on_expire' must be restart or resume, got {on_expire!r}")
            on_expire = "restart"
        elif "on_expire" in top and expire_after is None:
            self.error(("on_expire",), "'on_expire' needs 'expire_after' (when a session expires)")
        return remind_after, expire_after, on_expire

    def _quotas(self, top: dict[str, Any]) -> tuple[Quota, ...]:
        if top.get("quotas") is None:
            return ()
        items = self._list(top["quotas"], ("quotas",), "quotas")
        out: list[Quota] = []
        ids: set[str] = set()
        order = list(self.kinds)
        for i, raw in enumerate(items or []):
            path: Path_ = ("quotas", i)
            item = self._mapping(raw, path, "a quota")
            if item is None:
                continue
            self._keys(item, {"id", "when", "max", "text"}, path)
            quota_id = self._str(item, "id", path, required=True)
            if quota_id and not SLUG.match(quota_id):
                self.error((*path, "id"), f"quota id {quota_id!r} must be a simple slug")
            if quota_id in ids:
                self.error((*path, "id"), f"duplicate quota id {quota_id!r}")
            ids.add(quota_id)
            limit = self._int(item, "max", path, required=True)
            if limit is not None and limit < 1:
                self.error((*path, "max"), "a quota's max must be at least 1")
            text = self._str(item, "text", path, required=True)
            if "when" not in item:
                self.error(path, "'when' is required (which answers the quota counts)")
                continue
            when = self._condition(item, "when", path, self.kinds, ())
            if when is not None and not when.names:
                self.error((*path, "when"), "a quota's condition must use a question's answer")
            if when is None or not when.names or limit is None or not quota_id or not text:
                continue
            decided_by = max(when.names, key=order.index)
            out.append(Quota(quota_id, when, limit, text, decided_by))
        return tuple(out)

    def _keywords(self, top: dict[str, Any]) -> tuple[str, ...]:
        raw = top.get("keywords")
        if raw is None:
            self.error((), "'keywords' is required (the words that start the survey)")
            return ()
        if isinstance(raw, str):
            raw = [raw]
        items = self._list(raw, ("keywords",), "keywords")
        if items is None:
            return ()
        if not items:
            self.error(("keywords",), "at least one keyword is required")
        out: list[str] = []
        seen: set[str] = set()
        for i, word in enumerate(items):
            path: Path_ = ("keywords", i)
            if not isinstance(word, str | int) or isinstance(word, bool) or not str(word).strip():
                self.error(path, "a keyword must be non-empty text")
                continue
            word = str(word).strip()
            key = normalize_keyword(word)
            if not key:
                self.error(path, f"keyword {word!r} is only punctuation")
            elif key in COMMAND_WORDS:
                self.error(path, f"keyword {word!r} is reserved as a command")
            elif key in seen:
                self.error(path, f"duplicate keyword {word!r}")
            else:
                seen.add(key)
                out.append(word)
        return tuple(out)

    def _dimensions(self, top: dict[str, Any]) -> tuple[Dimension, ...]:
        results = top.get("results")
        if not isinstance(results, dict) or results.get("dimensions") is None:
            return ()
        path: Path_ = ("results", "dimensions")
        items = self._list(results["dimensions"], path, "dimensions")
        out: list[Dimension] = []
        for i, raw in enumerate(items or []):
            item = self._mapping(raw, (*path, i), "a dimension")
            if item is None:
                continue
            self._keys(item, {"id", "title", "bands"}, (*path, i))
            dim_id = self._str(item, "id", (*path, i), required=True)
            if dim_id and not SLUG.match(dim_id):
                self.error((*path, i, "id"), f"dimension id {dim_id!r} must be a simple slug")
            if dim_id in self.dimension_ids:
                self.error((*path, i, "id"), f"duplicate dimension id {dim_id!r}")
            self.dimension_ids.add(dim_id)
            title = self._str(item, "title", (*path, i), required=True)
            bands = self._bands(item.get("bands"), (*path, i, "bands")) if "bands" in item else ()
            out.append(Dimension(dim_id, title, bands))
        return tuple(out)

    def _results_bands(self, top: dict[str, Any]) -> tuple[Band, ...]:
        if top.get("results") is None:
            return ()
        results = self._mapping(top["results"], ("results",), "results")
        if results is None:
            return ()
        self._keys(results, {"bands", "dimensions"}, ("results",))
        if results.get("bands") is None:
            if not self.dimensions:
                self.error(("results",), "results need 'bands' or 'dimensions'")
            return ()
        return self._bands(results["bands"], ("results", "bands"))

    def _bands(self, raw: Any, path: Path_) -> tuple[Band, ...]:
        items = self._list(raw, path, "bands")
        if items is None:
            return ()
        if not items:
            self.error(path, "at least one band is required")
        out: list[Band] = []
        where: list[int] = []  # each band's index in the YAML list
        ids: set[str] = set()
        for i, raw_band in enumerate(items):
            here: Path_ = (*path, i)
            band = self._mapping(raw_band, here, "a band")
            if band is None:
                continue
            self._keys(band, self.BAND_KEYS, here)
            low = self._int(band, "min", here, required=True)
            high = self._int(band, "max", here, required=True)
            title = self._str(band, "title", here, required=True)
            band_id = self._str(band, "id", here, default=title)
            if band_id in ids:
                self.error(
                    (*here, "id" if "id" in band else "title"), f"duplicate band {band_id!r}"
                )
            ids.add(band_id)
            if low is None or high is None:
                continue
            if low > high:
                self.error(here, f"band min {low} is greater than max {high}")
                continue
            out.append(Band(band_id, low, high, title, self._str(band, "comment", here)))
            where.append(i)
        # Overlaps, reported on the later band of each overlapping pair.
        indexed = sorted(zip(where, out, strict=True), key=lambda pair: (pair[1].low, pair[1].high))
        for (_, a), (j, b) in itertools.pairwise(indexed):
            if b.low <= a.high:
                self.error(
                    (*path, j),
                    f"band {b.title!r} ({b.low}–{b.high}) overlaps {a.title!r} ({a.low}–{a.high})",
                )
        return tuple(out)

    def _questions(self, top: dict[str, Any]) -> list[Question]:
        raw = top.get("questions")
        if raw is None:
            self.error((), "'questions' is required")
            return []
        items = self._list(raw, ("questions",), "questions")
        if items is None:
            return []
        if not items:
            self.error(("questions",), "a survey needs at least one question")
            return []
        ids: dict[str, int] = {}
        self.kinds = {}
        for i, item in enumerate(items):
            if isinstance(item, dict) and isinstance(item.get("id"), str | int):
                qid = str(item["id"]).strip()
                if qid not in ids:
                    kind = item.get("kind", "single")
                    self.kinds[qid] = kind if isinstance(kind, str) else "?"
                if qid in ids:
                    self.error(
                        ("questions", i, "id"),
                        f"duplicate question id {qid!r} (also questions[{ids[qid]}])",
                    )
                else:
                    ids[qid] = i
        questions: list[Question] = []
        for i, item in enumerate(items):
            question = self._question(item, ("questions", i), i, ids)
            if question is not None:
                questions.append(question)
        return questions

    def _jump(
        self, value: dict[str, Any], path: Path_, index: int, ids: dict[str, int]
    ) -> str | None:
        if value.get("next") is None:
            return None
        target = str(value["next"]).strip()
        if target == END:
            return END
        if target not in ids:
            self.error((*path, "next"), f"unknown question id {target!r} (or 'end')")
            return None
        if ids[target] <= index:
            self.error((*path, "next"), f"jump to {target!r} goes backwards; jumps must go forward")
            return None
        return target

    def _question(self, raw: Any, path: Path_, index: int, ids: dict[str, int]) -> Question | None:
        item = self._mapping(raw, path, "a question")
        if item is None:
            return None
        qid = self._str(item, "id", path, required=True)
        if qid and not SLUG.match(qid):
            self.error((*path, "id"), f"question id {qid!r} must be a simple slug (a-z, 0-9, _ -)")
        text = self._str(item, "text", path, required=True)
        kind = self._str(item, "kind", path, default="single")
        if kind not in KINDS:
            self.error((*path, "kind"), f"unknown kind {kind!r} (one of: {', '.join(KINDS)})")
            return None
        self._keys(item, self.COMMON_KEYS | self.QUESTION_KEYS[kind], path)
        common: dict[str, Any] = {
            "id": qid,
            "kind": kind,
            "text": text,
            "hint": self._str(item, "hint", path),
            "next": self._jump(item, path, index, ids),
            "optional": self._bool(item, "optional", path, False),
            "screen_out_text": self._str(item, "screen_out_text", path),
        }
        earlier = {q: k for q, k in self.kinds.items() if ids.get(q, index) < index}
        later = [q for q, i in ids.items() if i > index]
        if "show_if" in item and index == 0:
            self.error((*path, "show_if"), "the first question is always asked")
        else:
            common["show_if"] = self._condition(item, "show_if", path, earlier, [qid, *later])
        common["screen_out_if"] = self._condition(
            item, "screen_out_if", path, {**earlier, qid: kind}, later
        )
        if item.get("screen_out_if") is not None and not common["screen_out_text"]:
            self.error(path, "screen_out_if needs a screen_out_text (what the user is told)")
        if common["screen_out_text"] and "screen_out_if" not in item:
            self.error((*path, "screen_out_text"), "screen_out_text without screen_out_if")
        for key in ("text", "hint"):
            self._placeholders(item, key, path, earlier, [qid, *later])
        if kind in ("single", "multiple"):
            options = self._options(item, path, index, ids, kind)
            common["options"] = options
            if kind == "multiple" and options:
                low = self._int(item, "min_choices", path, 1) or 0
                high = self._int(item, "max_choices", path, 0) or 0
                if low < 1 or low > len(options):
                    self.error((*path, "min_choices"), f"min_choices must be 1–{len(options)}")
                if high and (high < low or high > len(options)):
                    self.error(
                        (*path, "max_choices"),
                        f"max_choices must be between min_choices and {len(options)}",
                    )
                common.update(min_choices=low, max_choices=high)
        elif kind == "rating":
            scale_min = self._int(item, "min", path, 1)
            scale_max = self._int(item, "max", path, 5)
            if scale_min is not None and scale_max is not None:
                if scale_min >= scale_max:
                    self.error(path, f"rating min {scale_min} must be below max {scale_max}")
                elif scale_max - scale_min > 100:
                    self.error(path, "a rating scale may have at most 101 steps")
            dimension = self._str(item, "dimension", path)
            if dimension and dimension not in self.dimension_ids:
                self.error((*path, "dimension"), f"unknown dimension {dimension!r}")
            common.update(
                scale_min=scale_min if scale_min is not None else 1,
                scale_max=scale_max if scale_max is not None else 5,
                min_label=self._str(item, "min_label", path),
                max_label=self._str(item, "max_label", path),
                scored=self._bool(item, "scored", path, bool(dimension)),
                dimension=dimension,
            )
        elif kind == "number":
            low_n, high_n = self._number(item, "min", path), self._number(item, "max", path)
            if low_n is not None and high_n is not None and low_n > high_n:
                self.error(path, f"number min {low_n:g} is greater than max {high_n:g}")
            common.update(
                min_value=low_n,
                max_value=high_n,
                integer=self._bool(item, "integer", path, False),
                unit=self._str(item, "unit", path),
            )
        elif kind == "text":
            length = self._int(item, "max_length", path, 200)
            if length is not None and not 1 <= length <= 1000:
                self.error((*path, "max_length"), "max_length must be between 1 and 1000")
            common["max_length"] = length or 200
        return Question(**common)

    def _condition(
        self,
        item: dict[str, Any],
        key: str,
        path: Path_,
        earlier: dict[str, str],
        later: Iterable[str],
    ) -> Condition | None:
        raw = item.get(key)
        if raw is None:
            return None
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            self.error((*path, key), f'{key!r} must be an expression like "bedtime >= 3"')
            return None
        source = str(raw)
        if "\n" in source.strip():
            self.error((*path, key), f"{key!r} must be written on one line")
            return None
        condition, problems = check_condition(
            source, earlier, later, (d.id for d in self.dimensions)
        )
        lead = len(source) - len(source.lstrip())
        for problem in problems:
            self.doc.error_at((*path, key), lead + problem.column, problem.message)
        return condition

    def _placeholders(
        self,
        item: dict[str, Any],
        key: str,
        path: Path_,
        earlier: Iterable[str],
        later: Iterable[str] = (),
    ) -> None:
        raw = item.get(key)
        if not isinstance(raw, str):
            return
        for problem in check_placeholders(raw, earlier, later):
            self.error((*path, key), problem)

    def _options(
        self, item: dict[str, Any], path: Path_, index: int, ids: dict[str, int], kind: str
    ) -> tuple[Option, ...]:
        raw = item.get("options")
        here: Path_ = (*path, "options")
        if raw is None:
            self.error(path, f"a {kind}-choice question needs 'options'")
            return ()
        items = self._list(raw, here, "options")
        if items is None:
            return ()
        if len(items) < 2:
            self.error(
                here,
                "a choice question needs at least two options"
                if items
                else "options must not be empty",
            )
        if len(items) > MAX_OPTIONS:
            self.error(here, f"at most {MAX_OPTIONS} options (A–Z)")
        out: list[Option] = []
        labels: set[str] = set()
        for i, raw_option in enumerate(items):
            opath: Path_ = (*here, i)
            if isinstance(raw_option, str | int | float) and not isinstance(raw_option, bool):
                raw_option = {"text": raw_option}
            option = self._mapping(raw_option, opath, "an option")
            if option is None:
                continue
            self._keys(option, self.OPTION_KEYS, opath)
            self._placeholders(option, "text", opath, [q for q, n in ids.items() if n < index])
            label = self._str(option, "text", opath, required=True)
            folded = normalize_keyword(label)
            if label and folded in labels:
                self.error((*opath, "text"), f"duplicate option {label!r}")
            labels.add(folded)
            score = self._int(option, "score", opath, 0) or 0
            dims = self._option_dims(option, opath)
            jump = self._jump(option, opath, index, ids)
            if jump is not None and kind != "single":
                self.error((*opath, "next"), "only single-choice options can jump")
                jump = None
            out.append(Option(label, score, dims, jump))
        return tuple(out)

    def _option_dims(self, option: dict[str, Any], path: Path_) -> dict[str, int]:
        if option.get("dims") is None:
            return {}
        raw = self._mapping(option["dims"], (*path, "dims"), "dims")
        out: dict[str, int] = {}
        for key, value in (raw or {}).items():
            if key not in self.dimension_ids:
                self.error((*path, "dims", key), f"unknown dimension {key!r}")
            elif isinstance(value, bool) or not isinstance(value, int):
                self.error((*path, "dims", key), "a dimension score must be a whole number")
            else:
                out[key] = value
        return out

    def _check_sizes(self, survey: Survey) -> None:
        """Every message must fit in one WeChat reply (2048 bytes), or users see it cut off."""
        limit = TEXT_LIMIT_BYTES - REPLY_HEADROOM
        ok, size = fits(start_text(survey) + "\n\n" + question_text(survey, survey.first))
        if not ok:
            self.error(
                ("intro",),
                f"the intro with question 1 is {size} bytes; at most {limit} "
                "fit in one WeChat reply",
            )
        for i, question in enumerate(survey.questions):
            ok, size = fits(question_text(survey, question))
            if not ok:
                self.error(
                    ("questions", i),
                    f"question {question.id!r} is {size} bytes as sent; "
                    f"at most {limit} fit in one WeChat reply",
                )
        for i, band in enumerate(survey.bands):
            ok, size = fits(f"{band.title}\n{band.comment}\n\n{survey.outro}")
            if not ok:
                self.error(
                    ("results", "bands", i),
                    f"band {band.title!r} with the outro is {size} bytes; at most "
                    f"{limit} fit in one WeChat reply",
                )

    def _check_coverage(self, survey: Survey) -> None:
        """Every reachable total score must fall in exactly one band (no gaps at the ends)."""
        if not survey.bands:
            return
        low, high = survey.score_range()
        bands = sorted(survey.bands, key=lambda b: b.low)
        path: Path_ = ("results", "bands")
        gaps: list[str] = []
        cursor = low
        for band in bands:
            if band.low > cursor and cursor <= high:
                gaps.append(f"{cursor}–{min(band.low - 1, high)}")
            cursor = max(cursor, band.high + 1)
        if cursor <= high:
            gaps.append(f"{cursor}–{high}")
        for gap in gaps:
            self.error(path, f"total scores {gap} are possible ({low}–{high}) but in no band")


def _read(path: Path) -> _Doc:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        doc = _Doc(str(path), "")
        doc.issues.append(Issue(str(path), 0, 0, "", f"cannot read: {e}"))
        doc.fatal = True
        return doc
    return _Doc(str(path), text)


def _zone(tz: dt.tzinfo | None) -> dt.tzinfo:
    return tz if tz is not None else zoneinfo.ZoneInfo(DEFAULT_TIMEZONE)


def parse_survey(
    text: str, file: str = "<string>", *, tz: dt.tzinfo | None = None
) -> tuple[Survey | None, list[Issue]]:
    """Validate one survey from YAML text; return it (or None) and the mistakes found.

    ``tz`` (``Settings.tzinfo``; default ``DEFAULT_TIMEZONE``) is the zone of ``opens_at`` /
    ``closes_at`` written without an offset. So for every function here that takes ``tz``.
    """
    doc = _Doc(file, text)
    if doc.fatal:
        return None, doc.issues
    survey = _Validator(doc, _zone(tz)).survey()
    doc.issues.sort(key=lambda issue: (issue.line, issue.column))
    return survey, doc.issues


def _check_one(path: Path, tz: dt.tzinfo) -> tuple[Survey | None, list[Issue], _Doc]:
    doc = _read(path)
    if doc.fatal:
        return None, doc.issues, doc
    survey = _Validator(doc, tz).survey()
    doc.issues.sort(key=lambda issue: (issue.line, issue.column))
    return survey, doc.issues, doc


def survey_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def check_paths(
    paths: Iterable[Path], *, tz: dt.tzinfo | None = None
) -> tuple[list[Survey], list[Issue]]:
    """Validate files (and the ``*.yaml`` files in folders) together, across files too.

    Ids and keywords must be unique across all of them. Returns the surveys and every issue,
    in the order the paths were given (and line order within a file).
    """
    zone = _zone(tz)
    surveys: list[Survey] = []
    issues: list[Issue] = []
    seen_ids: dict[str, str] = {}
    seen_keywords: dict[str, tuple[str, str]] = {}
    for path in paths:
        if path.is_dir():
            files = survey_files(path)
            if not files:
                issues.append(Issue(str(path), 0, 0, "", "no *.yaml survey files in this folder"))
        elif path.is_file():
            files = [path]
        else:
            issues.append(Issue(str(path), 0, 0, "", "no such file or folder"))
            continue
        for file in files:
            survey, found, doc = _check_one(file, zone)
            issues.extend(found)
            if survey is None:
                continue
            before = len(doc.issues)
            if survey.id in seen_ids:
                doc.error(("id",), f"survey id {survey.id!r} is also used by {seen_ids[survey.id]}")
            seen_ids.setdefault(survey.id, str(file))
            for i, word in enumerate(survey.keywords):
                key = normalize_keyword(word)
                if key in seen_keywords and seen_keywords[key][0] != survey.id:
                    other_id, other_file = seen_keywords[key]
                    doc.error(
                        ("keywords", i),
                        f"keyword {word!r} also starts survey {other_id!r} ({other_file})",
                    )
                seen_keywords.setdefault(key, (survey.id, str(file)))
            if len(doc.issues) > before:
                issues.extend(doc.issues[before:])
                continue
            surveys.append(survey)
    return surveys, issues


def load_file(path: Path, *, tz: dt.tzinfo | None = None) -> Survey:
    """Load one file; raise ``SurveyLoadError`` listing every mistake."""
    surveys, issues = check_paths([path], tz=tz)
    if issues:
        raise SurveyLoadError(issues)
    return surveys[0]


def load_dir(folder: Path | None = None, *, tz: dt.tzinfo | None = None) -> list[Survey]:
    """Load every ``*.yaml`` survey in ``folder`` (default: the shipped ones), all or nothing."""
    folder = folder or SHIPPED_DIR
    if not folder.is_dir():
        raise SurveyLoadError([Issue(str(folder), 0, 0, "", "surveys folder does not exist")])
    surveys, issues = check_paths([folder], tz=tz)
    if issues:
        raise SurveyLoadError(issues)
    return surveys


def load_shipped(*, tz: dt.tzinfo | None = None) -> list[Survey]:
    """The surveys shipped with the service (``service/surveys/*.yaml``)."""
    return load_dir(SHIPPED_DIR, tz=tz)
