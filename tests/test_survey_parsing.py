"""Answer parsing: what people type on phones (full-width digits, Chinese punctuation, letters,
option texts, stars) becomes an answer; anything else gets a short explanation."""

from __future__ import annotations

import pytest

from service.surveys.model import Option, Question
from service.surveys.parsing import Answer, Invalid, accepted_hint, normalize, parse_answer

FOUR = tuple(
    Option(label, score) for label, score in (("苹果", 1), ("香蕉", 2), ("橙子", 3), ("葡萄", 4))
)
SINGLE = Question("q", "single", "选一个", FOUR)
MULTIPLE = Question("m", "multiple", "选几个", FOUR, max_choices=3)
MULTIPLE_2_TO_3 = Question("m2", "multiple", "选两三个", FOUR, min_choices=2, max_choices=3)
TWELVE = Question("t", "multiple", "十二选", tuple(Option(f"选项{i}") for i in range(1, 13)))
RATING = Question("r", "rating", "打分", scale_min=1, scale_max=5, scored=True)
NUMBER = Question("n", "number", "几杯", min_value=0, max_value=10, unit="杯")
INTEGER = Question("i", "number", "几岁", min_value=0, max_value=120, integer=True)
TEXT = Question("x", "text", "说点什么", max_length=10)


def ok(text: str, question: Question) -> Answer:
    answer = parse_answer(text, question)
    assert isinstance(answer, Answer), (text, answer)
    return answer


def bad(text: str, question: Question) -> str:
    answer = parse_answer(text, question)
    assert isinstance(answer, Invalid), (text, answer)
    return answer.message


@pytest.mark.parametrize(
    ("text", "choice"),
    [
        ("2", 2),
        ("２", 2),
        (" 2 ", 2),
        ("2。", 2),
        ("2！", 2),
        ("(2)", 2),
        ("2.", 2),
        ("b", 2),
        ("B", 2),
        ("Ｂ", 2),
        ("二", 2),
        ("②", 2),
        ("选2", 2),
        ("第 2 项", 2),
        ("香蕉", 2),
        ("「香蕉」", 2),
        ("4", 4),
        ("D", 4),
    ],
)
def test_single_choice_accepts(text, choice):
    answer = ok(text, SINGLE)
    assert answer.choices == (choice,) and answer.value == choice
    assert answer.label == FOUR[choice - 1].label
    assert answer.score == FOUR[choice - 1].score


@pytest.mark.parametrize("text", ["0", "5", "E", "十", "", "   ", "香", "2 2 2 x", "-1", "1.5"])
def test_single_choice_rejects(text):
    assert bad(text, SINGLE) == "请回复选项前的数字 1–4或字母 A–D，选一项。"


def test_single_choice_refuses_several():
    assert bad("1，3", SINGLE).startswith("这是单选题，只能选一项。")
    assert bad("1 3", SINGLE).startswith("这是单选题，只能选一项。")


@pytest.mark.parametrize(
    ("text", "choices"),
    [
        ("1 3", (1, 3)),
        ("1,3", (1, 3)),
        ("1，3", (1, 3)),
        ("1、3", (1, 3)),
        ("1；3", (1, 3)),
        ("13", (1, 3)),
        ("１３", (1, 3)),
        ("１，３", (1, 3)),
        ("3 1", (1, 3)),
        ("1 1 3", (1, 3)),
        ("a c", (1, 3)),
        ("AC", (1, 3)),
        ("ａｃ", (1, 3)),
        ("1和3", (1, 3)),
        ("1/3", (1, 3)),
        ("苹果，橙子", (1, 3)),
        ("2", (2,)),
        ("1，", (1,)),
        ("124", (1, 2, 4)),
        ("1 2 4。", (1, 2, 4)),
    ],
)
def test_multiple_choice_accepts(text, choices):
    answer = ok(text, MULTIPLE)
    assert answer.choices == choices and answer.value == list(choices)
    assert answer.score == sum(FOUR[c - 1].score for c in choices)
    assert answer.label == "；".join(FOUR[c - 1].label for c in choices)


@pytest.mark.parametrize("text", ["1 5", "15", "1234", "1 2 3 4", "x", "", "，", "1,e"])
def test_multiple_choice_rejects(text):
    assert "请回复选项数字" in bad(text, MULTIPLE)


def test_multiple_choice_counts_and_two_digit_options():
    assert "选 2–3 项" in bad("1", MULTIPLE_2_TO_3)
    assert ok("1 2", MULTIPLE_2_TO_3).choices == (1, 2)
    # With more than nine options "12" is option 12, not 1 and 2; separators still split.
    assert ok("12", TWELVE).choices == (12,)
    assert ok("1 2", TWELVE).choices == (1, 2)
    assert ok("１０，１１", TWELVE).choices == (10, 11)
    assert "最多选 3 项" in accepted_hint(MULTIPLE)
    assert "可多选" in accepted_hint(TWELVE)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("4", 4),
        ("４", 4),
        ("4分", 4),
        ("4 分", 4),
        ("四", 4),
        ("★★★★", 4),
        ("⭐⭐⭐", 3),
        ("1", 1),
        ("5星", 5),
        ("5。", 5),
    ],
)
def test_rating_accepts(text, value):
    answer = ok(text, RATING)
    assert answer.value == value and answer.choices == (value,) and answer.score == value


@pytest.mark.parametrize("text", ["0", "6", "★★★★★★", "3.5", "好", "", "1 2"])
def test_rating_rejects(text):
    assert bad(text, RATING) == "请回复 1 到 5 之间的整数。"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("3", 3),
        ("３", 3),
        ("2.5", 2.5),
        ("２．５", 2.5),
        ("3杯", 3),
        ("3 杯", 3),
        ("约3杯", 3),
        ("0", 0),
        ("10", 10),
        ("三", 3),
    ],
)
def test_number_accepts(text, value):
    answer = ok(text, NUMBER)
    assert answer.value == value and answer.choices == ()


@pytest.mark.parametrize("text", ["11", "-1", "many", "", "1e3", "nan", "3 4"])
def test_number_rejects(text):
    assert bad(text, NUMBER) == "请回复 0 到 10 之间的数字。"


def test_integer_number():
    assert ok("18", INTEGER).value == 18
    assert bad("18.5", INTEGER) == "请回复 0 到 120 之间的整数。"


def test_free_text():
    assert ok("  很好，谢谢  ", TEXT).value == "很好，谢谢"
    assert "请直接回复文字" in bad("   ", TEXT)
    assert bad("很" * 11, TEXT).startswith("回答太长了（11 字）。")
    assert ok("很" * 10, TEXT).value == "很" * 10


def test_normalize_folds_full_width_forms():
    assert normalize("　ＡＢＣ１２３！") == "ABC123"
    assert normalize("「爆肝度调查」") == "爆肝度调查"
