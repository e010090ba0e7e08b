"""How a survey looks in the chat: the intro and each question with its numbered options.

Shared by the engine (which sends them) and the loader (which checks that they fit in one WeChat
text reply: 2048 bytes).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..wechat import TEXT_LIMIT_BYTES
from .logic import pipe
from .model import Question, Survey
from .parsing import accepted_hint

__all__ = ["REPLY_HEADROOM", "fits", "question_text", "start_text"]

# Room kept for what the engine adds around a question ("欢迎回来！…", an invalid-answer
# explanation, a retake notice): a rendered question must fit in a reply with this to spare.
REPLY_HEADROOM = 300


def start_text(survey: Survey) -> str:
    """The intro (or a default one), then the survey's privacy notice when it has one."""
    intro = survey.intro or (
        f"欢迎参加「{survey.title}」！共 {survey.total} 题，按提示回复即可作答。\n"
        f"中途回复「退出」可暂停，再发「{survey.keywords[0]}」接着答。"
    )
    return f"{intro}\n\n{survey.privacy}" if survey.privacy else intro


def question_text(
    survey: Survey, question: Question, shown: Mapping[str, str] | None = None
) -> str:
    """``第 k/n 题：…`` with the numbered options and, unless single choice, how to answer.

    ``shown`` (``Survey.shown`` of the answers so far) fills the ``{question_id}`` placeholders;
    without it they are left as written."""
    head = f"第 {survey.position(question.id)}/{survey.total} 题"
    if question.kind != "single":
        head += f"（{question.kind_name}）"
    lines = [f"{head}：{pipe(question.text, shown)}"]
    if question.kind in ("single", "multiple"):
        lines += [f"{i}. {pipe(o.label, shown)}" for i, o in enumerate(question.options, 1)]
    if question.kind == "rating" and (question.min_label or question.max_label):
        lines.append(
            f"{question.scale_min} = {question.min_label or '最低'}，"
            f"{question.scale_max} = {question.max_label or '最高'}"
        )
    if question.hint:
        lines.append(pipe(question.hint, shown))
    elif question.kind != "single":
        lines.append(accepted_hint(question))
    return "\n".join(lines)


def fits(text: str) -> tuple[bool, int]:
    """Whether ``text`` fits in one reply with headroom to spare, and its size in bytes."""
    size = len(text.encode("utf-8"))
    return size + REPLY_HEADROOM <= TEXT_LIMIT_BYTES, size
