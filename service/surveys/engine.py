"""The survey engine: one text message in, one reply out, the user's progress stored exactly once.

``SurveyEngine.handle_text(db, message, text)`` is what the bot router calls (the ``SurveyHook``
protocol in ``service/bot.py``); ``None`` means "not for a survey" and the router greets instead.

Per message, the engine
1. matches keywords and commands in memory (``爆肝度调查``, ``退出``/``quit``, ``重新开始``);
2. reads all of the user's survey sessions with one ``find`` (an ordinary text from a user with no
   survey in progress costs exactly this one round trip);
3. answers a WeChat retry (a message key it has already applied) with the reply stored then,
   changing nothing;
4. decides the transition in memory and applies it with one write conditional on the session's
   version (``update_one({_id, v})``, or ``insert_one`` for a first start). A write that matches
   nothing lost a race with another message of the same user: read again and decide again.

So a survey answer costs two round trips (read + conditional write), and two concurrent messages
of one user can never both apply to the same question.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import logging
import re
import zoneinfo
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..clock import now as _now
from ..config import DEFAULT_TIMEZONE
from ..store import TEST_OPENID_PREFIX, Db
from ..store import surveys as store
from ..wechat import Message, Reply
from .catalog import Snapshot, SurveyCatalog, seeds_for
from .loader import load_dir, normalize_keyword
from .model import EXIT_WORDS, RESTART_WORDS, Question, Survey
from .parsing import Answer, Invalid, parse_answer
from .render import question_text, start_text

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["EXIT_WORDS", "RESTART_WORDS", "SurveyEngine", "live_engine", "load_engine"]

log = logging.getLogger(__name__)

ALREADY_TAKEN = "已经参加过本项活动，不要试图重新开始"
BUSY = "同时收到了你的好几条消息，请稍等片刻再回复一次。"
MAX_ATTEMPTS = 6
# Users whose survey state this process remembers for answering during an outage.
IN_SURVEY_CACHE = 10_000
# What an answer to a choice or rating question looks like (folded): "3", "2,5", "a", "1 3".
ANSWER_LIKE = re.compile(r"(?:[0-9]+|[a-z])(?:[ ,，、]+(?:[0-9]+|[a-z]))*")

Write = Callable[[Db], Awaitable[bool]]


@dataclasses.dataclass
class _Plan:
    """What to answer and which write (if any) must succeed first."""

    reply: str | None
    writes: list[Write] = dataclasses.field(default_factory=list)


class SurveyEngine:
    """Runs conversations against the database over an immutable snapshot of the surveys.

    The surveys come from a ``SurveyCatalog`` (the published versions in the database, swapped
    in memory when one is published) or, for tests and tools, from a fixed list (``surveys``).
    A session records the version it started on (``sv``) and is finished on that version; a
    new session (or a retake) starts on the newest.

    ``tz`` (``Settings.tzinfo``; default ``DEFAULT_TIMEZONE``) is the zone of the times a
    respondent is shown (when a survey opens or closed, when they finished).
    """

    def __init__(
        self,
        surveys: Iterable[Survey] = (),
        *,
        catalog: SurveyCatalog | None = None,
        tz: dt.tzinfo | None = None,
        test_prefix: str = TEST_OPENID_PREFIX,
    ) -> None:
        self.catalog = catalog
        self._fixed = Snapshot.of(surveys)
        self.tz = tz if tz is not None else zoneinfo.ZoneInfo(DEFAULT_TIMEZONE)
        self.test_prefix = test_prefix
        # openid -> whether they were in a survey when last read (for answers during an outage;
        # forgotten once their state changes, bounded).
        self._last_state: collections.OrderedDict[str, bool] = collections.OrderedDict()
        # The survey-state reads and steps of the messages in flight together go in one round
        # trip each.
        self._sessions = store.SessionReader()
        self._writes = store.SessionWriter()

    @property
    def snapshot(self) -> Snapshot:
        return self.catalog.snapshot if self.catalog is not None else self._fixed

    @property
    def surveys(self) -> Mapping[str, Survey]:
        """The newest published version of every survey."""
        return self.snapshot.current

    async def ready(self) -> None:
        """Wait until the catalog has loaded the database's surveys (callers bound the wait)."""
        if self.catalog is not None:
            await self.catalog.ready()

    async def close(self) -> None:
        if self.catalog is not None:
            await self.catalog.close()

    # -- what the router and the dashboard use ---------------------------------------------------
    def get(self, survey_id: str) -> Survey | None:
        return self.surveys.get(survey_id)

    def all_surveys(self) -> list[Survey]:
        return list(self.surveys.values())

    def keyword_survey(self, text: str) -> Survey | None:
        return self.snapshot.keywords.get(normalize_keyword(text))

    def start_hint(self) -> str:
        """One line per open survey: ``回复「爆肝度调查」开始爆肝度调查``."""
        now = _now()
        lines = [
            f"回复「{s.keywords[0]}」开始{s.title}"
            for s in self.snapshot.current.values()
            if s.availability(now) == "open"
        ]
        return "\n".join(lines)

    def might_claim(self, openid: str, text: str) -> bool:
        """Without the database: could ``text`` from ``openid`` be a survey step? A keyword or a
        command is; so is anything from a user last seen in a survey, and, for a user this
        process has not seen lately, a short answer-like text (a number, an option letter)."""
        if not self.surveys:
            return False
        folded = normalize_keyword(text)
        if folded in self.snapshot.keywords or folded in EXIT_WORDS or folded in RESTART_WORDS:
            return True
        known = self._last_state.get(openid)
        if known is not None:
            return known
        return len(folded) <= 12 and ANSWER_LIKE.fullmatch(folded) is not None

    def _remember(self, openid: str, in_survey: bool) -> None:
        cache = self._last_state
        cache[openid] = in_survey
        cache.move_to_end(openid)
        while len(cache) > IN_SURVEY_CACHE:
            cache.popitem(last=False)

    async def handle_text(self, db: Db, message: Message, text: str) -> Reply | None:
        """The reply to ``text`` from ``message.openid`` if a survey claims it, else ``None``."""
        snap = await self._snapshot_for(message)
        if not snap.current:
            return None
        folded = normalize_keyword(text)
        keyword = snap.keywords.get(folded)
        command = "exit" if folded in EXIT_WORDS else "restart" if folded in RESTART_WORDS else ""
        return await self._handle(db, snap, message, text, keyword, command)

    async def handle_survey(self, db: Db, message: Message, survey_id: str) -> Reply | None:
        """What the survey's keyword would answer (a reply rule's ``survey`` reply); ``None``
        when there is no such survey (unpublished or archived since the rule was saved)."""
        snap = await self._snapshot_for(message)
        survey = snap.current.get(survey_id)
        if survey is None or survey.archived:
            return None
        return await self._handle(db, snap, message, survey.keywords[0], survey, "")

    async def _snapshot_for(self, message: Message) -> Snapshot:
        if self.catalog is not None and not self.catalog.loaded:
            await self.catalog.ready()  # once per process, before its first survey message
        snap = self.snapshot  # one snapshot for the whole decision, even if a publish lands
        if snap.testers is not None and message.openid.startswith(self.test_prefix):
            snap = snap.testers  # the simulator's users take the drafts being tried
        return snap

    async def _handle(
        self,
        db: Db,
        snap: Snapshot,
        message: Message,
        text: str,
        keyword: Survey | None,
        command: str,
    ) -> Reply | None:
        for attempt in range(MAX_ATTEMPTS):
            sessions = await self._sessions.read(db, message.openid)
            self._remember(message.openid, any(doc.get("active_user") for doc in sessions))
            for doc in sessions:
                for entry in doc.get("recent") or ():
                    if entry.get("k") == message.key:
                        return Reply.text(entry.get("r", ""))
            plan = self._decide(snap, message, text, keyword, command, sessions)
            if plan is None:
                return None
            if plan.writes:
                # Their survey state is changing: count them as in a survey (during an outage the
                # careful answer is the apology, not a greeting to what may be an answer).
                self._remember(message.openid, True)
            if await self._apply(db, plan):
                return Reply.text(plan.reply) if plan.reply is not None else None
            log.info("survey write lost a race (attempt %d); reading again", attempt + 1)
        log.warning("survey state kept changing under %d attempts; asking to resend", MAX_ATTEMPTS)
        return Reply.text(BUSY)

    @staticmethod
    async def _apply(db: Db, plan: _Plan) -> bool:
        for write in plan.writes:
            if not await write(db):
                return False
        return True

    # -- decisions (in memory) -----------------------------------------------------------------
    def _decide(
        self,
        snap: Snapshot,
        message: Message,
        text: str,
        keyword: Survey | None,
        command: str,
        sessions: Sequence[dict[str, Any]],
    ) -> _Plan | None:
        now = _now()
        pre: list[Write] = []
        for doc in sessions:
            if not doc.get("active_user"):
                continue
            survey = snap.version(doc["survey"], doc.get("sv"))  # the version it started on
            status = survey.availability(now) if survey is not None else "gone"
            if survey is not None and status == "open":
                plan = self._in_survey(snap, message, text, keyword, command, survey, doc)
                if plan is not None:
                    plan.writes[:0] = pre
                return plan
            # The survey closed (or disappeared) mid-way: set the session aside.
            pre.append(self._deactivate(doc, now))
            if survey is not None and keyword is None and not command and not message.is_event:
                answered = len(doc.get("answers") or [])
                return _Plan(
                    f"「{survey.title}」已经结束，你答过的 {answered} 题都已保存。感谢参与！",
                    pre,
                )
        plan = self._idle(snap, message, keyword, command, sessions, now)
        if plan is None:
            return _Plan(None, pre) if pre else None
        plan.writes[:0] = pre
        return plan

    def _idle(
        self,
        snap: Snapshot,
        message: Message,
        keyword: Survey | None,
        command: str,
        sessions: Sequence[dict[str, Any]],
        now: dt.datetime,
    ) -> _Plan | None:
        """No survey in progress: only keywords and commands are for us."""
        by_survey = {doc["survey"]: doc for doc in sessions}
        if keyword is not None:
            return self._keyword(snap, message, keyword, by_survey.get(keyword.id), now)
        if command == "exit":
            return _Plan(self._with_hint("当前没有正在进行的调查。"))
        if command == "restart":
            latest = next((d for d in sessions if d["survey"] in snap.current), None)
            if latest is None:
                return _Plan(self._with_hint("你还没有参加过调查。"))
            survey = snap.current[latest["survey"]]
            return self._keyword(snap, message, survey, latest, now, restart=True)
        return None

    def _keyword(
        self,
        snap: Snapshot,
        message: Message,
        survey: Survey,
        doc: dict[str, Any] | None,
        now: dt.datetime,
        *,
        restart: bool = False,
    ) -> _Plan:
        """A start keyword (or ``重新开始``) for ``survey`` (its newest version) while no survey
        is in progress."""
        # A session continues (and a finished one is shown) on the version it started on.
        started_on = (snap.version(survey.id, doc.get("sv")) if doc else None) or survey
        status = survey.availability(now)
        if status != "open":
            text = self._unavailable(survey, status)
            if doc is not None and doc.get("state") == "finished":
                text += "\n\n" + self._result_block(started_on, doc)
            return _Plan(text)
        if doc is None:
            if restart:
                return _Plan(self._with_hint("你还没有参加过调查。"))
            reply = start_text(survey) + "\n\n" + question_text(survey, survey.first)
            return _Plan(reply, [self._insert(message, survey, reply, now)])
        if doc.get("state") == "finished":
            if not survey.allow_retake:
                return _Plan(ALREADY_TAKEN + "\n\n" + self._result_block(started_on, doc))
            attempt = int(doc.get("attempt", 1)) + 1
            previous = (doc.get("result") or {}).get("title")
            lead = f"这是你第 {attempt} 次参加「{survey.title}」"
            lead += f"，上次的结果是「{previous}」。" if previous else "。"
            reply = f"{lead}\n\n{start_text(survey)}\n\n{question_text(survey, survey.first)}"
            return _Plan(reply, [self._restart(message, survey, doc, reply, now)])
        # In progress but paused (or set aside): resume on the version it started on, or start
        # over (on the newest) when asked and allowed.
        if restart:
            if not survey.allow_retake:
                return _Plan(
                    f"「{survey.title}」不支持重新开始。回复「{survey.keywords[0]}」"
                    f"从第 {self._position(started_on, doc)} 题继续作答。"
                )
            reply = f"好的，「{survey.title}」从头开始。\n\n" + question_text(survey, survey.first)
            return _Plan(reply, [self._restart(message, survey, doc, reply, now)])
        question = self._current(started_on, doc)
        reply = f"欢迎回来！继续「{started_on.title}」。\n\n" + question_text(started_on, question)
        return _Plan(
            reply,
            [
                self._update(
                    message,
                    doc,
                    reply,
                    set_fields={
                        "active_user": message.openid,
                        "paused": False,
                        "current": question.id,
                    },
                )
            ],
        )

    def _in_survey(
        self,
        snap: Snapshot,
        message: Message,
        text: str,
        keyword: Survey | None,
        command: str,
        survey: Survey,
        doc: dict[str, Any],
    ) -> _Plan | None:
        """The user is answering ``survey`` (the version they started on): an answer, a command,
        or a keyword. A restart starts over on the newest version."""
        question = self._current(survey, doc)
        now = _now()
        if command == "exit":
            answered = len(doc.get("answers") or [])
            reply = (
                f"已暂停「{survey.title}」（已答 {answered}/{survey.total} 题）。"
                f"想继续时回复「{survey.keywords[0]}」，"
                f"从第 {survey.position(question.id)} 题接着答。"
            )
            return _Plan(
                reply,
                [
                    self._update(
                        message,
                        doc,
                        reply,
                        set_fields={"paused": True, "paused_at": now, "current": question.id},
                        unset_fields=("active_user",),
                    )
                ],
            )
        if command == "restart":
            newest = snap.current.get(survey.id, survey)
            if not newest.allow_retake:
                return _Plan(
                    f"「{survey.title}」不支持重新开始，请继续作答。\n\n"
                    + question_text(survey, question)
                )
            reply = f"好的，「{newest.title}」从头开始。\n\n" + question_text(newest, newest.first)
            return _Plan(reply, [self._restart(message, newest, doc, reply, now)])
        if keyword is not None:
            if keyword.id == survey.id:
                return _Plan(
                    f"你正在参加「{survey.title}」，接着答就好。\n\n"
                    + question_text(survey, question)
                )
            return _Plan(
                f"你正在参加「{survey.title}」（第 {survey.position(question.id)}/{survey.total} "
                f"题）。先回复「退出」暂停，再回复「{keyword.keywords[0]}」开始「{keyword.title}」。"
            )
        if message.is_event:
            return None  # a menu click that is not a keyword is not an answer
        parsed = parse_answer(text, question)
        if isinstance(parsed, Invalid):
            return _Plan(
                f"{parsed.message}回复「退出」可暂停。\n\n" + question_text(survey, question)
            )
        return self._answer(message, survey, doc, question, parsed, now)

    def _answer(
        self,
        message: Message,
        survey: Survey,
        doc: dict[str, Any],
        question: Question,
        answer: Answer,
        now: dt.datetime,
    ) -> _Plan:
        entry = {"q": question.id, **answer.document(), "at": now, "key": message.key}
        following = survey.next_after(question, answer.choices)
        if following is not None:
            nxt = survey.question(following)
            assert nxt is not None  # noqa: S101 - jumps are validated at load time
            reply = question_text(survey, nxt)
            return _Plan(
                reply,
                [
                    self._update(
                        message,
                        doc,
                        reply,
                        set_fields={"current": following},
                        answer=entry,
                    )
                ],
            )
        answers = [*(doc.get("answers") or []), entry]
        result = survey.result(answers)
        stored = {"score": result.score, "result": result.document(), "finished_at": now}
        reply = self._finish_text(survey, {**doc, **stored, "answers": answers})
        return _Plan(
            reply,
            [
                self._update(
                    message,
                    doc,
                    reply,
                    set_fields={"state": "finished", "current": None, "paused": False, **stored},
                    unset_fields=("active_user",),
                    answer=entry,
                )
            ],
        )

    # -- writes --------------------------------------------------------------------------------
    def _insert(self, message: Message, survey: Survey, reply: str, now: dt.datetime) -> Write:
        reply = Reply.text(reply).content
        doc = {
            "_id": store.session_id(survey.id, message.openid),
            "survey": survey.id,
            "openid": message.openid,
            "test_user": message.openid.startswith(self.test_prefix),
            "state": "in_progress",
            "paused": False,
            "active_user": message.openid,
            "current": survey.first.id,
            "sv": survey.version,
            "answers": [],
            "attempt": 1,
            "started_at": now,
            "updated_at": now,
            "v": 1,
            "recent": [{"k": message.key, "r": reply}],
        }

        async def write(db: Db) -> bool:
            return await store.insert_session(db, doc)

        return write

    def _update(
        self,
        message: Message,
        doc: Mapping[str, Any],
        reply: str | None,
        *,
        set_fields: Mapping[str, Any] | None = None,
        unset_fields: Sequence[str] = (),
        answer: Mapping[str, Any] | None = None,
        archive: Mapping[str, Any] | None = None,
    ) -> Write:
        recent = {"k": message.key, "r": Reply.text(reply).content} if reply is not None else None

        async def write(db: Db) -> bool:
            return await self._writes.update(
                db,
                doc["_id"],
                int(doc.get("v", 0)),
                set_fields=set_fields,
                unset_fields=unset_fields,
                answer=answer,
                recent=recent,
                archive=archive,
            )

        return write

    def _restart(
        self, message: Message, survey: Survey, doc: Mapping[str, Any], reply: str, now: dt.datetime
    ) -> Write:
        archive = {
            key: doc.get(key)
            for key in (
                "attempt",
                "sv",
                "state",
                "answers",
                "score",
                "result",
                "started_at",
                "finished_at",
            )
        }
        return self._update(
            message,
            doc,
            reply,
            set_fields={
                "state": "in_progress",
                "paused": False,
                "active_user": message.openid,
                "current": survey.first.id,
                "sv": survey.version,
                "answers": [],
                "attempt": int(doc.get("attempt", 1)) + 1,
                "started_at": now,
            },
            unset_fields=("score", "result", "finished_at", "paused_at"),
            archive=archive,
        )

    def _deactivate(self, doc: Mapping[str, Any], now: dt.datetime) -> Write:
        sid, version = doc["_id"], int(doc.get("v", 0))

        async def write(db: Db) -> bool:
            return await self._writes.update(
                db,
                sid,
                version,
                set_fields={"paused": True, "paused_at": now},
                unset_fields=("active_user",),
            )

        return write

    # -- texts ---------------------------------------------------------------------------------
    def _with_hint(self, text: str) -> str:
        hint = self.start_hint()
        return f"{text}{hint}。" if hint else text

    @staticmethod
    def _current(survey: Survey, doc: Mapping[str, Any]) -> Question:
        current = doc.get("current")
        question = survey.question(current) if current else None
        if question is not None:
            return question
        # The definition changed under a running session: continue after the last known answer.
        answered = {a.get("q") for a in doc.get("answers") or []}
        for candidate in survey.questions:
            if candidate.id not in answered:
                return candidate
        return survey.questions[-1]

    def _position(self, survey: Survey, doc: Mapping[str, Any]) -> int:
        return survey.position(self._current(survey, doc).id)

    def _local(self, moment: dt.datetime) -> str:
        """A time as a respondent reads it: the owner's time zone, to the minute."""
        return moment.astimezone(self.tz).strftime("%Y-%m-%d %H:%M")

    def _result_block(self, survey: Survey, doc: Mapping[str, Any]) -> str:
        result = doc.get("result") or {}
        lines: list[str] = []
        if survey.bands:
            top = survey.score_range()[1]
            lines.append(f"你的得分：{doc.get('score', 0)} 分（满分 {top} 分）")
        if result.get("title"):
            lines.append(f"结果：{result['title']}")
            band = next((b for b in survey.bands if b.id == result.get("band")), None)
            comment = band.comment if band is not None else result.get("comment")
            if comment:
                lines.append(comment)
        for dimension in survey.dimensions:
            info = (result.get("dims") or {}).get(dimension.id) or {}
            line = f"{dimension.title}：{info.get('score', 0)} 分"
            if info.get("title"):
                line += f"，{info['title']}"
            lines.append(line)
        if not lines:
            finished = doc.get("finished_at")
            when = f"于 {self._local(finished)} " if isinstance(finished, dt.datetime) else ""
            lines.append(f"你已{when}完成全部 {survey.total} 题。")
        return "\n".join(lines)

    def _finish_text(self, survey: Survey, doc: Mapping[str, Any]) -> str:
        parts = [f"「{survey.title}」答完啦，感谢参与！"]
        if survey.scored:
            parts.append(self._result_block(survey, doc))
        if survey.outro:
            parts.append(survey.outro)
        return "\n\n".join(parts)

    def _unavailable(self, survey: Survey, status: str) -> str:
        if status == "not_yet" and survey.opens_at is not None:
            return f"「{survey.title}」将于 {self._local(survey.opens_at)} 开放，敬请期待。"
        if status == "ended" and survey.closes_at is not None:
            return f"「{survey.title}」已于 {self._local(survey.closes_at)} 结束，感谢关注。"
        if status == "archived":
            return f"「{survey.title}」已经结束，感谢关注。"
        return f"「{survey.title}」暂未开放，感谢关注。"


def load_engine(settings: Settings | None = None, folder: Path | None = None) -> SurveyEngine:
    """Load every survey in ``folder`` (default ``settings.surveys_dir``, else the shipped ones).

    Raises ``SurveyLoadError`` listing every mistake: an invalid survey stops start-up.
    """
    if folder is None and settings is not None:
        folder = settings.surveys_dir
    tz = settings.tzinfo if settings is not None else None
    surveys = load_dir(folder, tz=tz)
    log.info("loaded %d survey(s): %s", len(surveys), ", ".join(s.id for s in surveys) or "none")
    return SurveyEngine(surveys, tz=tz)


def live_engine(settings: Settings, db: Db, *, poll_interval: float = 1.0) -> SurveyEngine:
    """The service's engine: the published surveys of ``db``, followed live (``SurveyCatalog``).

    The files of ``settings.surveys_dir`` (default: the shipped surveys) are validated now
    (``SurveyLoadError`` lists every mistake and stops start-up) and imported as versions when
    the catalog first loads.
    """
    seeds = seeds_for(settings.surveys_dir, tz=settings.tzinfo)
    catalog = SurveyCatalog(db, tz=settings.tzinfo, seeds=seeds, poll_interval=poll_interval)
    return SurveyEngine(catalog=catalog, tz=settings.tzinfo)
