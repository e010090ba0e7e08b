"""Turn what a user typed on a phone into an answer, or a short explanation of what is accepted.

Users type full-width digits (``２``), Chinese punctuation (``1，3``、``1、3``), letters in either
case, circled numbers (``①``), Chinese numerals (``三``), the option text itself, or a rating as
stars (``★★★★``). Everything goes through NFKC first, which folds the full-width forms.
"""

from __future__ import annotations

import dataclasses
import math
import re
import unicodedata
from typing import Any

from .model import Question

__all__ = ["Answer", "Invalid", "accepted_hint", "normalize", "parse_answer"]

CN_NUMERALS = {
    "零": 0,
    "〇": 0,
    "一": 1,
    "二": 2,
    "两": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
    "十": 10,
}
# Separators between several choices, after NFKC ("，" → ",", "；" → ";", "　" → " ").
SEPARATORS = re.compile(r"[\s,;/|+&、和与及]+")
EDGE_PUNCTUATION = "!?.,;:~。、…「」『』“”\"'《》【】()[]（）"
STARS = frozenset("★☆⭐*")
NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")


@dataclasses.dataclass(frozen=True)
class Answer:
    """A valid answer: ``value`` as stored, ``choices`` (1-based) to count, ``label`` to show."""

    value: Any
    label: str
    choices: tuple[int, ...] = ()
    score: int = 0
    dims: dict[str, int] = dataclasses.field(default_factory=dict)

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"value": self.value, "label": self.label, "score": self.score}
        if self.choices:
            doc["choices"] = list(self.choices)
        if self.dims:
            doc["dims"] = dict(self.dims)
        return doc


@dataclasses.dataclass(frozen=True)
class Invalid:
    """Not an acceptable answer; ``message`` says what is accepted."""

    message: str


def normalize(text: str) -> str:
    """NFKC (folds full-width digits, letters and punctuation), trimmed of edge punctuation."""
    text = unicodedata.normalize("NFKC", text).strip()
    return text.strip(EDGE_PUNCTUATION + " \t\r\n")


def _fold(text: str) -> str:
    return re.sub(r"\s+", "", normalize(text).casefold())


def _small_int(token: str) -> int | None:
    """``3``, ``三``, ``十二``; None when the token is not a whole number."""
    if token.isascii() and token.isdigit():
        return int(token)
    if token and all(ch in CN_NUMERALS for ch in token):
        if len(token) == 1:
            return CN_NUMERALS[token]
        if len(token) == 2 and token[0] == "十":  # 十一 … 十九
            return 10 + CN_NUMERALS[token[1]]
        if len(token) == 2 and token[1] == "十":  # 二十 …
            return CN_NUMERALS[token[0]] * 10
        if len(token) == 3 and token[1] == "十":  # 二十一 …
            return CN_NUMERALS[token[0]] * 10 + CN_NUMERALS[token[2]]
    return None


def _strip_affixes(token: str) -> str:
    """``选2`` / ``第 2 项`` / ``2号`` / ``B.`` → the bare choice."""
    token = re.sub(r"^\s*(?:选项|选|第)\s*", "", token)
    token = re.sub(r"\s*(?:选项|项|个|号)\s*$", "", token)
    return token.strip(EDGE_PUNCTUATION + " ")


def _label(text: str, question: Question) -> int | None:
    """The option whose text is exactly what the user typed (ignoring case and spaces)."""
    folded = _fold(text)
    for i, option in enumerate(question.options, 1):
        if folded == _fold(option.label):
            return i
    return None


def _tokens(text: str) -> list[str]:
    """The pieces of a reply: normalized, case-folded, affixes removed, split on separators."""
    cleaned = _strip_affixes(normalize(text).casefold())
    return [t for t in (_strip_affixes(p) for p in SEPARATORS.split(cleaned)) if t]


def _choice(token: str, question: Question) -> int | None:
    """One option number (1-based) from a token, or None."""
    n = len(question.options)
    labelled = _label(token, question)
    if labelled is not None:
        return labelled
    number = _small_int(token)
    if number is not None:
        return number if 1 <= number <= n else None
    if len(token) == 1 and token.isascii() and token.isalpha():
        index = ord(token) - ord("a") + 1
        return index if index <= n else None
    return None


def _expand_run(token: str, question: Question) -> list[int] | None:
    """``13`` → [1, 3] (when every option number is one digit), ``ac`` → [1, 3]."""
    n = len(question.options)
    if token.isascii() and token.isdigit() and n <= 9:
        picks = [int(ch) for ch in token]
        return picks if all(1 <= p <= n for p in picks) else None
    if token.isascii() and token.isalpha():
        picks = [ord(ch) - ord("a") + 1 for ch in token]
        return picks if all(1 <= p <= n for p in picks) else None
    return None


def accepted_hint(question: Question) -> str:
    """What the user may reply, in one short sentence."""
    n = len(question.options)
    if question.kind == "single":
        letters = f"或字母 A–{chr(ord('A') + n - 1)}" if n > 1 else ""
        return f"请回复选项前的数字 1–{n}{letters}，选一项。"
    if question.kind == "multiple":
        most = question.most_choices
        if question.min_choices == most:
            count = f"选 {most} 项"
        elif question.min_choices > 1:
            count = f"选 {question.min_choices}–{most} 项"
        else:
            count = f"最多选 {most} 项" if most < n else "可多选"
        return f"请回复选项数字，如「1 3」或「1,3」（{count}）。"
    if question.kind == "rating":
        return f"请回复 {question.scale_min} 到 {question.scale_max} 之间的整数。"
    if question.kind == "number":
        kind = "整数" if question.integer else "数字"
        if question.min_value is not None and question.max_value is not None:
            return f"请回复 {question.min_value:g} 到 {question.max_value:g} 之间的{kind}。"
        if question.min_value is not None:
            return f"请回复不小于 {question.min_value:g} 的{kind}。"
        if question.max_value is not None:
            return f"请回复不大于 {question.max_value:g} 的{kind}。"
        return f"请回复一个{kind}。"
    return f"请直接回复文字，不超过 {question.max_length} 字。"


def parse_answer(text: str, question: Question) -> Answer | Invalid:
    """Parse ``text`` as an answer to ``question``."""
    match question.kind:
        case "single":
            return _single(text, question)
        case "multiple":
            return _multiple(text, question)
        case "rating":
            return _rating(text, question)
        case "number":
            return _number(text, question)
        case _:
            return _text(text, question)


def _option_answer(question: Question, picks: list[int]) -> Answer:
    picks = sorted(set(picks))
    options = [question.options[p - 1] for p in picks]
    dims: dict[str, int] = {}
    for option in options:
        for key, points in option.dims.items():
            dims[key] = dims.get(key, 0) + points
    label = "；".join(o.label for o in options)
    value: Any = picks[0] if question.kind == "single" else picks
    return Answer(value, label, tuple(picks), sum(o.score for o in options), dims)


def _single(text: str, question: Question) -> Answer | Invalid:
    pick = _label(text, question)
    tokens = _tokens(text)
    if pick is None and len(tokens) == 1:
        pick = _choice(tokens[0], question)
    if pick is not None:
        return _option_answer(question, [pick])
    if len(tokens) > 1 and all(_choice(t, question) is not None for t in tokens):
        return Invalid("这是单选题，只能选一项。" + accepted_hint(question))
    return Invalid(accepted_hint(question))


def _multiple(text: str, question: Question) -> Answer | Invalid:
    whole = _label(text, question)
    picks: list[int] = [whole] if whole is not None else []
    tokens = [] if whole is not None else _tokens(text)
    if whole is None and not tokens:
        return Invalid(accepted_hint(question))
    for token in tokens:
        pick = _choice(token, question)
        if pick is not None:
            picks.append(pick)
            continue
        run = _expand_run(token, question)
        if run is None:
            return Invalid(accepted_hint(question))
        picks.extend(run)
    count = len(set(picks))
    if count < question.min_choices or count > question.most_choices:
        return Invalid(accepted_hint(question))
    return _option_answer(question, picks)


def _rating(text: str, question: Question) -> Answer | Invalid:
    token = _fold(text)
    value: int | None
    if token and all(ch in STARS for ch in token.replace("\ufe0f", "")):
        value = len(token.replace("\ufe0f", ""))
    else:
        value = _small_int(re.sub(r"(?:分|星|颗星)$", "", token))
    if value is None or not question.scale_min <= value <= question.scale_max:
        return Invalid(accepted_hint(question))
    score = value if question.scored else 0
    dims = {question.dimension: value} if question.dimension else {}
    return Answer(value, str(value), (value,), score, dims)


def _number(text: str, question: Question) -> Answer | Invalid:
    token = _fold(text)
    for prefix in ("大约", "约"):
        token = token.removeprefix(prefix)
    unit = _fold(question.unit) if question.unit else ""
    if unit:
        token = token.removesuffix(unit)
    if not NUMBER.fullmatch(token):
        cn = _small_int(token)
        if cn is None:
            return Invalid(accepted_hint(question))
        token = str(cn)
    number = float(token)
    if not math.isfinite(number):
        return Invalid(accepted_hint(question))
    if question.integer and not number.is_integer():
        return Invalid(accepted_hint(question))
    if (question.min_value is not None and number < question.min_value) or (
        question.max_value is not None and number > question.max_value
    ):
        return Invalid(accepted_hint(question))
    value: int | float = int(number) if number.is_integer() else number
    return Answer(value, f"{value}{question.unit}")


def _text(text: str, question: Question) -> Answer | Invalid:
    cleaned = text.strip()
    if not cleaned:
        return Invalid(accepted_hint(question))
    if len(cleaned) > question.max_length:
        return Invalid(f"回答太长了（{len(cleaned)} 字）。" + accepted_hint(question))
    return Answer(cleaned, cleaned)
