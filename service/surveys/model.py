"""A survey as loaded from YAML: questions, options, scoring, result bands, availability.

Everything here is immutable and free of I/O; ``loader`` builds it (after validation) and
``engine`` walks it one answer at a time.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from ..clock import iso
from .logic import Condition, answer_env, shown_answers

__all__ = [
    "BACK_WORDS",
    "COMMAND_WORDS",
    "END",
    "EXIT_WORDS",
    "KINDS",
    "ON_EXPIRE",
    "RESTART_WORDS",
    "SKIP_WORDS",
    "Band",
    "Dimension",
    "Option",
    "Question",
    "Quota",
    "Result",
    "Survey",
]

END = "end"  # the jump target that ends the survey
ON_EXPIRE = ("restart", "resume")  # what the next keyword does after a session expired
# The words the engine reads as commands (``normalize_keyword`` form); no survey keyword may be one.
EXIT_WORDS = frozenset({"退出", "quit", "exit", "暂停"})
RESTART_WORDS = frozenset({"重新开始", "restart"})
BACK_WORDS = frozenset({"上一题", "返回", "back"})
SKIP_WORDS = frozenset({"跳过", "skip"})
COMMAND_WORDS = EXIT_WORDS | RESTART_WORDS | BACK_WORDS | SKIP_WORDS
KINDS = ("single", "multiple", "rating", "number", "text")
KIND_NAMES = {
    "single": "单选",
    "multiple": "多选",
    "rating": "评分",
    "number": "数字",
    "text": "填空",
}


@dataclasses.dataclass(frozen=True)
class Option:
    label: str
    score: int = 0
    dims: Mapping[str, int] = dataclasses.field(default_factory=dict)
    next: str | None = None  # a question id, END, or None (the question's own ``next``)


@dataclasses.dataclass(frozen=True)
class Question:
    id: str
    kind: str
    text: str
    options: tuple[Option, ...] = ()
    next: str | None = None
    hint: str = ""
    # multiple
    min_choices: int = 1
    max_choices: int = 0  # 0: as many as there are options
    # rating
    scale_min: int = 1
    scale_max: int = 5
    min_label: str = ""
    max_label: str = ""
    scored: bool = False
    dimension: str = ""
    # number
    min_value: float | None = None
    max_value: float | None = None
    integer: bool = False
    unit: str = ""
    # text
    max_length: int = 200
    # logic
    show_if: Condition | None = None  # asked only when this holds (else skipped, unanswered)
    optional: bool = False  # 「跳过」/skip leaves it unanswered
    screen_out_if: Condition | None = None  # once answered: end the survey, screened out
    screen_out_text: str = ""

    @property
    def kind_name(self) -> str:
        return KIND_NAMES[self.kind]

    @property
    def most_choices(self) -> int:
        return self.max_choices or len(self.options)

    def score_range(self) -> tuple[int, int]:
        """The lowest and highest score one answer to this question can add to the total."""
        if self.kind == "single":
            scores = [o.score for o in self.options]
            return min(scores), max(scores)
        if self.kind == "multiple":
            scores = sorted(o.score for o in self.options)
            low = sum(scores[: self.min_choices])
            low += sum(s for s in scores[self.min_choices : self.most_choices] if s < 0)
            high_sorted = scores[::-1]
            high = sum(high_sorted[: self.min_choices])
            high += sum(s for s in high_sorted[self.min_choices : self.most_choices] if s > 0)
            return low, high
        if self.kind == "rating" and self.scored:
            return self.scale_min, self.scale_max
        return 0, 0


@dataclasses.dataclass(frozen=True)
class Quota:
    """At most ``limit`` users whose answers match ``when``; decided when ``decided_by`` (the
    last question ``when`` names) is answered. A full quota ends the survey for new matches."""

    id: str
    when: Condition
    limit: int
    text: str
    decided_by: str


@dataclasses.dataclass(frozen=True)
class Band:
    """A score range ``[low, high]`` (inclusive) and what it means."""

    id: str
    low: int
    high: int
    title: str
    comment: str = ""

    def contains(self, score: int) -> bool:
        return self.low <= score <= self.high


@dataclasses.dataclass(frozen=True)
class Dimension:
    id: str
    title: str
    bands: tuple[Band, ...] = ()


@dataclasses.dataclass(frozen=True)
class Result:
    """A finished attempt's outcome, as stored in the session document."""

    score: int
    band: Band | None
    dims: Mapping[str, int]
    dim_bands: Mapping[str, Band | None]

    def document(self) -> dict[str, Any]:
        return {
            "band": self.band.id if self.band else None,
            "title": self.band.title if self.band else None,
            "comment": self.band.comment if self.band else None,
            "dims": {
                key: {"score": value, "band": b.id if b else None, "title": b.title if b else None}
                for key, value in self.dims.items()
                for b in [self.dim_bands.get(key)]
            },
        }


@dataclasses.dataclass(frozen=True)
class Survey:
    id: str
    title: str
    keywords: tuple[str, ...]
    questions: tuple[Question, ...]
    intro: str = ""
    outro: str = ""
    # What is collected and why, who sees it, how to have it deleted: shown before question 1.
    privacy: str = ""
    bands: tuple[Band, ...] = ()
    dimensions: tuple[Dimension, ...] = ()
    quotas: tuple[Quota, ...] = ()
    allow_retake: bool = False
    open: bool = True
    opens_at: dt.datetime | None = None
    closes_at: dt.datetime | None = None
    # Reminders and expiry (``service.reminders``), in seconds: one customer-service message to a
    # user idle ``remind_after`` since their last answer; the session ``expired`` after
    # ``expire_after``, the next keyword then starting over (``restart``) or resuming (``resume``).
    remind_after: int | None = None
    expire_after: int | None = None
    on_expire: str = "restart"
    source: str = ""
    version: int = 1  # the published version (``service.surveys.catalog``); files are version 1
    archived: bool = False  # set aside by the owner: closed, its keywords free, results kept
    _positions: Mapping[str, int] = dataclasses.field(
        default_factory=dict, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        positions = {q.id: i for i, q in enumerate(self.questions)}
        object.__setattr__(self, "_positions", MappingProxyType(positions))

    # -- structure ------------------------------------------------------------------------------
    @property
    def total(self) -> int:
        return len(self.questions)

    @property
    def first(self) -> Question:
        return self.questions[0]

    def question(self, qid: str) -> Question | None:
        index = self._positions.get(qid)
        return None if index is None else self.questions[index]

    def position(self, qid: str) -> int:
        """1-based position of a question (``第 k/n 题``)."""
        return self._positions[qid] + 1

    @property
    def kinds(self) -> Mapping[str, str]:
        return {q.id: q.kind for q in self.questions}

    def env(self, answers: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """The names the conditions see after ``answers``."""
        return answer_env(answers, self.kinds, (d.id for d in self.dimensions))

    def shown(self, answers: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        """The piped text of each answer (``{question_id}`` in texts)."""
        labels = {q.id: [o.label for o in q.options] for q in self.questions if q.options}
        return shown_answers(answers, labels)

    def next_shown(
        self,
        question: Question,
        answers: Sequence[Mapping[str, Any]],
        choices: Iterable[int] = (),
    ) -> str | None:
        """The next question to ask after ``question`` (answered: ``answers`` includes it):
        its jump, or the next in order, passing over those whose ``show_if`` does not hold."""
        target = self.next_after(question, choices)
        env: dict[str, Any] | None = None
        while target is not None:
            candidate = self.question(target)
            assert candidate is not None  # noqa: S101 - jumps are validated at load time
            if candidate.show_if is None:
                return target
            env = env if env is not None else self.env(answers)
            if candidate.show_if.holds(env):
                return target
            target = self.next_after(candidate)
        return None

    def next_after(self, question: Question, choices: Iterable[int] = ()) -> str | None:
        """The id of the question after ``question`` given the chosen options; None at the end."""
        target: str | None = None
        if question.kind == "single":
            for n in choices:
                target = question.options[n - 1].next
        target = target or question.next
        if target == END:
            return None
        if target:
            return target
        index = self._positions[question.id] + 1
        return self.questions[index].id if index < len(self.questions) else None

    # -- scoring --------------------------------------------------------------------------------
    @property
    def scored(self) -> bool:
        return bool(self.bands or self.dimensions)

    def score_range(self) -> tuple[int, int]:
        """Lowest and highest total score over every path through the survey (jumps included)."""
        low: dict[str | None, int] = {None: 0}
        high: dict[str | None, int] = {None: 0}
        for q in reversed(self.questions):
            after = self.next_after(q)
            if q.kind == "single":
                los = [o.score + low[self.next_after(q, [i])] for i, o in enumerate(q.options, 1)]
                his = [o.score + high[self.next_after(q, [i])] for i, o in enumerate(q.options, 1)]
                low[q.id], high[q.id] = min(los), max(his)
            else:
                q_low, q_high = q.score_range()
                low[q.id], high[q.id] = q_low + low[after], q_high + high[after]
            if q.show_if is not None or q.optional:  # passed over, or skipped: nothing added
                low[q.id], high[q.id] = min(low[q.id], low[after]), max(high[q.id], high[after])
        return low[self.first.id], high[self.first.id]

    def band_for(self, score: int) -> Band | None:
        return _band(self.bands, score)

    def result(self, answers: Iterable[Mapping[str, Any]]) -> Result:
        total = 0
        dims: dict[str, int] = {d.id: 0 for d in self.dimensions}
        for answer in answers:
            total += int(answer.get("score") or 0)
            for key, value in (answer.get("dims") or {}).items():
                dims[key] = dims.get(key, 0) + int(value)
        dim_bands = {d.id: _band(d.bands, dims.get(d.id, 0)) for d in self.dimensions}
        return Result(total, self.band_for(total), dims, dim_bands)

    # -- availability ---------------------------------------------------------------------------
    def availability(self, now: dt.datetime | None = None) -> str:
        """``open``, ``closed`` (switched off), ``archived``, ``not_yet`` or ``ended``."""
        if self.archived:
            return "archived"
        if not self.open:
            return "closed"
        now = now or dt.datetime.now(dt.UTC)
        if self.opens_at is not None and now < self.opens_at:
            return "not_yet"
        if self.closes_at is not None and now >= self.closes_at:
            return "ended"
        return "open"

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly summary (the dashboard and ``surveys list`` show it)."""
        return {
            "id": self.id,
            "title": self.title,
            "keywords": list(self.keywords),
            "questions": self.total,
            "scored": self.scored,
            "allow_retake": self.allow_retake,
            "open": self.open,
            "opens_at": iso(self.opens_at),
            "closes_at": iso(self.closes_at),
            "remind_after": self.remind_after,
            "expire_after": self.expire_after,
            "on_expire": self.on_expire,
            "availability": self.availability(),
            "source": self.source,
            "version": self.version,
            "archived": self.archived,
        }


def _band(bands: Iterable[Band], score: int) -> Band | None:
    for band in bands:
        if band.contains(score):
            return band
    return None
