"""Helpers for the survey tests: a user chatting through the real ``/wechat`` endpoint."""

from __future__ import annotations

import dataclasses
import textwrap
import time
from pathlib import Path
from typing import Any

from service.db import CommandCounter
from service.surveys import SurveyEngine, load_dir
from service.wechat import Message, message_from_xml, parse_xml
from service.wechat_client import WeChatSide

# The 爆肝度调查's answers for a known total: option n scores n-1 on every question but 'reason'
# (options score 0, 2, 2, 3).
BAOGAN_IDS = [
    "bedtime",
    "late_nights",
    "sleep_hours",
    "alarm",
    "phone",
    "reason",
    "caffeine",
    "daytime",
    "weekend",
    "all_nighter",
]


@dataclasses.dataclass
class Chat:
    """One WeChat user talking to the service; ``say`` returns the reply text (or ``success``)."""

    send: Any
    wechat: WeChatSide
    openid: str
    mode: str = "plain"
    sent: int = 0
    clock: int = 0

    def xml(self, text: str, **kw: Any) -> str:
        return self.wechat.text(self.openid, text, **kw)

    async def say(self, text: str, **kw: Any) -> str:
        return await self.post(self.xml(text, **kw))

    async def post(self, xml: str) -> str:
        response, reply = await self.send(xml, self.mode)
        self.sent += 1
        assert response.code == 200, response.code
        if not reply:
            return "success"
        assert reply["ToUserName"] == self.openid
        assert reply["MsgType"] == "text", reply
        return str(reply["Content"])

    async def click(self, key: str) -> str:
        # Events are keyed by openid + CreateTime: give every click its own second.
        self.clock = max(self.clock + 1, int(time.time()))
        return await self.post(
            self.wechat.event(self.openid, "CLICK", EventKey=key, create_time=self.clock)
        )


class TracingCounter(CommandCounter):
    """``CommandCounter`` that also remembers (command, collection) of every command sent."""

    def __init__(self) -> None:
        super().__init__()
        self.trace: list[tuple[str, str]] = []

    def started(self, event: Any) -> None:
        super().started(event)
        name = event.command_name
        target = event.command.get(name)
        if name == "getMore":
            target = event.command.get("collection")
        self.trace.append((name, target if isinstance(target, str) else ""))

    def mark(self) -> int:
        return len(self.trace)

    def since(
        self, mark: int, *, ignore: tuple[str, ...] = ("users", "surveys", "counter_batches")
    ) -> list[tuple[str, str]]:
        """Commands sent after ``mark``, leaving out the batched user-stats flush, the survey
        definitions' watcher (its change stream on ``surveys``) and every definitions' watcher
        waiting on its change stream (getMore): background, not per message."""
        return [(n, c) for n, c in self.trace[mark:] if c not in ignore and n != "getMore"]


def write_surveys(folder: Path, **files: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / f"{name}.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
    return folder


def engine_from(folder: Path) -> SurveyEngine:
    return SurveyEngine(load_dir(folder))


# A second survey that uses every feature: kinds, branching, dimensions, retakes.
LAB_YAML = """\
    id: lab
    title: 实验问卷
    keywords: [实验问卷, LAB_MENU]
    allow_retake: true
    intro: 实验问卷开始。
    questions:
      - id: fruit
        kind: multiple
        text: 喜欢哪些水果？
        max_choices: 3
        options:
          - {text: 苹果, score: 1, dims: {taste: 1}}
          - {text: 香蕉, score: 2, dims: {taste: 2}}
          - {text: 橙子, score: 3}
          - {text: 葡萄, score: 4}
      - id: mood
        kind: rating
        text: 今天心情几分？
        min: 1
        max: 5
        min_label: 很差
        max_label: 很好
        scored: true
        dimension: mind
      - id: coffee
        text: 喝咖啡吗？
        options:
          - {text: 喝, score: 1, next: cups}
          - {text: 不喝, score: 0, next: comment}
      - id: cups
        kind: number
        text: 每天几杯？
        min: 0
        max: 10
        unit: 杯
      - id: comment
        kind: text
        text: 还有什么想说的？
        max_length: 20
    results:
      bands:
        - {id: low, min: 0, max: 5, title: 低分, comment: 还行。}
        - {id: high, min: 6, max: 20, title: 高分, comment: 很棒。}
      dimensions:
        - id: taste
          title: 口味
        - id: mind
          title: 心情
          bands:
            - {min: 1, max: 3, title: 一般}
            - {min: 4, max: 5, title: 不错}
"""


def text_message(wechat: WeChatSide, openid: str, text: str) -> Message:
    """A text message exactly as the endpoint builds it from WeChat's XML."""
    xml = wechat.text(openid, text)
    return message_from_xml(parse_xml(xml.encode("utf-8")), xml)


async def talk(engine: SurveyEngine, db: Any, wechat: WeChatSide, openid: str, *texts: str) -> str:
    """Send ``texts`` straight to the engine (no HTTP); return the last reply text ('' if none)."""
    reply = None
    for text in texts:
        reply = await engine.handle_text(db, text_message(wechat, openid, text), text)
    return reply.content if reply is not None else ""
