"""Survey logic: conditions on earlier answers (``show_if``, ``screen_out_if``) and piping.

A condition is a small expression over earlier questions' answers by id, evaluated by
``simpleeval`` (a maintained, sandboxed evaluator of Python expressions: no attribute access but
the ones we allow, no calls but ``len``/``min``/``max``, bounded literals). Before that, the
loader checks every expression with ``check_condition``: the syntax, an allow-list of node kinds,
names that are earlier questions (or ``score`` / ``dims.<id>``), and comparisons whose types
cannot match, each mistake with its column in the expression.

What a name stands for (``answer_env``): a single choice is its option number (1-based), a
multiple choice the list of chosen numbers, rating and number answers are numbers, text is a
string; ``score`` is the running total, ``dims.<id>`` a dimension's; a question not asked or
skipped is ``None`` (null), and any comparison with null is false.
"""

from __future__ import annotations

import ast
import dataclasses
import operator
import string
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from simpleeval import EvalWithCompoundTypes, InvalidExpression

__all__ = [
    "MAX_EXPRESSION",
    "Condition",
    "ExpressionIssue",
    "answer_env",
    "check_condition",
    "check_placeholders",
    "pipe",
    "shown_answers",
]

MAX_EXPRESSION = 500  # characters
PIPE_TEXT_LIMIT = 50  # a piped text answer is cut here
FUNCTIONS = ("len", "min", "max")
SCALARS = ("single", "rating", "number")  # answers that are numbers
TOO_LONG = f"an expression may be at most {MAX_EXPRESSION} characters"
EARLIER_ONLY = "a condition may only use earlier answers"
PIPE_EARLIER = "only earlier answers can be shown"
IN_NEEDS = "'in' needs a multiple-choice answer, a text or a list on its right"
LIST_COMPARE = "a multiple-choice answer can only be compared with == or != (or use len)"


@dataclasses.dataclass(frozen=True)
class ExpressionIssue:
    """A mistake in an expression; ``column`` is 0-based within the expression text."""

    column: int
    message: str


def _null_safe(op: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def apply(a: Any, b: Any) -> Any:
        if a is None or b is None:
            return False
        try:
            return op(a, b)
        except TypeError:
            return False

    return apply


def _null_arith(op: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def apply(a: Any, b: Any) -> Any:
        if a is None or b is None:
            return None
        try:
            return op(a, b)
        except (TypeError, ZeroDivisionError):
            return None

    return apply


def _null_fn(fn: Callable[..., Any]) -> Callable[..., Any]:
    def apply(*args: Any) -> Any:
        if any(a is None for a in args):
            return None
        try:
            return fn(*args)
        except (TypeError, ValueError):
            return None

    return apply


OPERATORS: dict[type, Callable[..., Any]] = {
    ast.Add: _null_arith(operator.add),
    ast.Sub: _null_arith(operator.sub),
    ast.Mult: _null_arith(operator.mul),
    ast.Div: _null_arith(operator.truediv),
    ast.FloorDiv: _null_arith(operator.floordiv),
    ast.Mod: _null_arith(operator.mod),
    ast.USub: lambda a: None if a is None else -a,
    ast.UAdd: lambda a: a,
    ast.Not: operator.not_,
    ast.Eq: _null_safe(operator.eq),
    ast.NotEq: _null_safe(operator.ne),
    ast.Lt: _null_safe(operator.lt),
    ast.LtE: _null_safe(operator.le),
    ast.Gt: _null_safe(operator.gt),
    ast.GtE: _null_safe(operator.ge),
    ast.In: _null_safe(lambda a, b: a in b),
    ast.NotIn: _null_safe(lambda a, b: a not in b),
}
CALLS: dict[str, Callable[..., Any]] = {
    "len": _null_fn(len),
    "min": _null_fn(min),
    "max": _null_fn(max),
}
ALLOWED_NODES = (
    ast.Expression,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.UnaryOp,
    ast.BinOp,
    ast.Compare,
    ast.Name,
    ast.Load,
    ast.Constant,
    ast.Attribute,
    ast.Call,
    ast.List,
    ast.Tuple,
    *OPERATORS,
)


@dataclasses.dataclass(frozen=True)
class Condition:
    """A checked expression, ready to evaluate against ``answer_env``'s names."""

    source: str
    tree: ast.Expression = dataclasses.field(repr=False, compare=False)
    names: frozenset[str] = frozenset()

    def holds(self, env: Mapping[str, Any]) -> bool:
        evaluator = EvalWithCompoundTypes(
            operators=OPERATORS,
            functions=CALLS,
            names=dict(env),
            allowed_attrs={
                types.SimpleNamespace: frozenset(vars(env.get("dims") or types.SimpleNamespace()))
            },
        )
        try:
            return bool(evaluator.eval(self.source, previously_parsed=self.tree.body))
        except (InvalidExpression, TypeError, ValueError, ArithmeticError):
            return False  # checked at load time; an odd value at run time is "does not hold"


def check_condition(
    source: str,
    kinds: Mapping[str, str],
    later: Iterable[str] = (),
    dimensions: Iterable[str] = (),
) -> tuple[Condition | None, list[ExpressionIssue]]:
    """Parse and check ``source``; ``kinds`` maps each earlier question id to its kind, ``later``
    names the questions that come after (a reference to one is a mistake of its own)."""
    issues: list[ExpressionIssue] = []
    if len(source) > MAX_EXPRESSION:
        return None, [ExpressionIssue(0, TOO_LONG)]
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as e:
        column = max((e.offset or 1) - 1, 0)
        return None, [ExpressionIssue(column, f"invalid expression: {e.msg}")]
    later_set, dims = set(later), set(dimensions)
    names: set[str] = set()
    called = {
        id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)
    }  # a call's name is checked as a call, not as a question id
    for node in ast.walk(tree):
        col = getattr(node, "col_offset", 0)
        if not isinstance(node, ALLOWED_NODES):
            issues.append(ExpressionIssue(col, f"{type(node).__name__} is not allowed here"))
            continue
        if isinstance(node, ast.Constant) and not isinstance(
            node.value, int | float | str | type(None)
        ):
            issues.append(ExpressionIssue(col, f"unsupported value {node.value!r}"))
        elif isinstance(node, ast.Attribute):
            if not (isinstance(node.value, ast.Name) and node.value.id == "dims"):
                issues.append(ExpressionIssue(col, "only dims.<dimension> may use a dot"))
            elif node.attr not in dims:
                issues.append(ExpressionIssue(col, f"unknown dimension {node.attr!r}"))
        elif isinstance(node, ast.Call):
            if not (isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS) or node.keywords:
                issues.append(ExpressionIssue(col, "only len(), min() and max() may be called"))
            elif node.func.id == "len" and any(
                _family(_kind_of(arg, kinds)) == "num" for arg in node.args
            ):
                issues.append(ExpressionIssue(col, "len() of a number (it counts choices or text)"))
        elif isinstance(node, ast.Name) and id(node) not in called:
            name = node.id
            if name in ("score", "dims", "null", "true", "false") or name in FUNCTIONS:
                continue
            if name in later_set:
                issues.append(ExpressionIssue(col, f"{name!r} is asked later; {EARLIER_ONLY}"))
            elif name not in kinds:
                issues.append(ExpressionIssue(col, f"unknown question id {name!r}"))
            else:
                names.add(name)
        elif isinstance(node, ast.Compare):
            issues.extend(_check_types(node, kinds))
    if issues:
        # ast counts columns in UTF-8 bytes; the loader reports characters.
        encoded = source.strip().encode("utf-8")
        chars = [
            ExpressionIssue(len(encoded[: i.column].decode("utf-8", "ignore")), i.message)
            for i in issues
        ]
        return None, chars
    return Condition(source.strip(), tree, frozenset(names)), []


def _kind_of(node: ast.expr, kinds: Mapping[str, str]) -> str:
    """What an operand is, as far as the loader can tell: a question kind, ``num``, ``str``,
    ``list`` or ``?``."""
    if isinstance(node, ast.Name):
        if node.id in kinds:
            return kinds[node.id]
        return "num" if node.id == "score" else "?"
    if isinstance(node, ast.Attribute):
        return "num"
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or node.value is None:
            return "?"
        return "str" if isinstance(node.value, str) else "num"
    if isinstance(node, ast.List | ast.Tuple):
        return "list"
    if isinstance(node, ast.BinOp):
        return "num"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "len":
        return "num"
    return "?"


def _family(kind: str) -> str:
    if kind in SCALARS or kind == "num":
        return "num"
    if kind in ("text", "str"):
        return "str"
    if kind in ("multiple", "list"):
        return "list"
    return "?"


def _check_types(node: ast.Compare, kinds: Mapping[str, str]) -> list[ExpressionIssue]:
    out: list[ExpressionIssue] = []
    left = node.left
    for op, right in zip(node.ops, node.comparators, strict=True):
        a, b = _family(_kind_of(left, kinds)), _family(_kind_of(right, kinds))
        col = left.col_offset
        if isinstance(op, ast.In | ast.NotIn):
            if b == "num":
                out.append(ExpressionIssue(right.col_offset, IN_NEEDS))
            elif _kind_of(right, kinds) == "multiple" and a in ("str", "list"):
                out.append(
                    ExpressionIssue(
                        left.col_offset, "a multiple-choice answer holds option numbers"
                    )
                )
        elif "?" not in (a, b) and a != b:
            names = {"num": "a number", "str": "text", "list": "a list of option numbers"}
            hint = " (use 'N in id' or len(id))" if "list" in (a, b) else ""
            out.append(ExpressionIssue(col, f"compares {names[a]} with {names[b]}{hint}"))
        elif a == b == "list" and not isinstance(op, ast.Eq | ast.NotEq):
            out.append(ExpressionIssue(col, LIST_COMPARE))
        left = right
    return out


def answer_env(
    answers: Sequence[Mapping[str, Any]],
    kinds: Mapping[str, str],
    dimensions: Iterable[str] = (),
) -> dict[str, Any]:
    """The names a condition sees after ``answers`` (the session's, in order)."""
    env: dict[str, Any] = dict.fromkeys(kinds)
    total = 0
    dims: dict[str, int] = dict.fromkeys(dimensions, 0)
    for answer in answers:
        qid = str(answer.get("q"))
        total += int(answer.get("score") or 0)
        for key, value in (answer.get("dims") or {}).items():
            dims[key] = dims.get(key, 0) + int(value)
        if answer.get("skipped") or qid not in kinds:
            env[qid] = None
            continue
        kind = kinds[qid]
        choices = list(answer.get("choices") or [])
        if kind == "single":
            env[qid] = choices[0] if choices else None
        elif kind == "multiple":
            env[qid] = choices
        else:
            env[qid] = answer.get("value")
    env["score"] = total
    env["dims"] = types.SimpleNamespace(**dims)
    env["null"] = None
    env["true"], env["false"] = True, False
    return env


# -- piping --------------------------------------------------------------------------------------
_FORMATTER = string.Formatter()


def check_placeholders(text: str, earlier: Iterable[str], later: Iterable[str] = ()) -> list[str]:
    """The mistakes in ``text``'s ``{question_id}`` placeholders (``{{``/``}}`` are braces)."""
    try:
        parts = list(_FORMATTER.parse(text))
    except ValueError as e:
        return [f"{e} (write a brace as {{{{ or }}}})"]
    known, after = set(earlier), set(later)
    out: list[str] = []
    for _, field, spec, conversion in parts:
        if field is None:
            continue
        if spec or conversion:
            out.append(f"placeholder {{{field}}} may not have a format")
        elif field == "score" or field in known:
            continue
        elif field in after:
            out.append(f"placeholder {{{field}}} is answered later; {PIPE_EARLIER}")
        else:
            out.append(f"unknown placeholder {{{field}}} (a question id or score)")
    return out


def pipe(text: str, shown: Mapping[str, str] | None) -> str:
    """``text`` with each placeholder replaced by what ``shown`` holds for it (its answer as the
    user saw it); ``None`` leaves the text as written (a definition without answers)."""
    if shown is None or ("{" not in text and "}" not in text):
        return text
    out: list[str] = []
    for literal, field, _, _ in _FORMATTER.parse(text):
        out.append(literal)
        if field is not None:
            out.append(shown.get(field, ""))
    return "".join(out)


def shown_answers(
    answers: Sequence[Mapping[str, Any]], options: Mapping[str, Sequence[str]]
) -> dict[str, str]:
    """Each answered question's answer as the user sees it (the chosen option's text, chosen
    options joined with 、, the number, the text cut at 50 characters), and ``score``, for
    ``pipe``; ``options`` maps each choice question to its option texts."""
    out: dict[str, str] = {}
    total = 0
    for answer in answers:
        qid = str(answer.get("q"))
        total += int(answer.get("score") or 0)
        labels = options.get(qid)
        if answer.get("skipped"):
            label = ""
        elif labels is not None and answer.get("choices"):
            picks = [int(n) for n in answer.get("choices") or () if 0 < int(n) <= len(labels)]
            label = "、".join(labels[n - 1] for n in picks)
        else:
            label = str(answer.get("label") or "")
        if len(label) > PIPE_TEXT_LIMIT:
            label = label[:PIPE_TEXT_LIMIT] + "…"
        out[qid] = label
    out["score"] = str(total)
    return out
