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
of one user can never both apply to the same question. Going back (上一题), skipping (跳过), a
screen-out and a full quota are transitions like an answer: one conditional write, retried
messages answered from ``recent``. The one exception is the answer that decides a quota it
matches: its claim on the quota's counter (``store.claim_quota``) comes first, one more round trip.

The survey logic (``show_if``, piping, ``screen_out_if``, quotas; ``service/surveys/logic.py``)
is evaluated in memory against the version the session started on.
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
from .logic import pipe
from .model import BACK_WORDS, EXIT_WORDS, RESTART_WORDS, SKIP_WORDS, Question, Survey
from .parsing import Answer, Invalid, parse_answer
from .render import question_text, start_text

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["EXIT_WORDS", "RESTART_WORDS", "SurveyEngine", "live_engine", "load_engine"]

log = logging.getLogger(__name__)

ALREADY_TAKEN = "已经参加过本项活动，不要试图重新开始"
CANNOT_SKIP = "这道题是必答题，不能跳过。"
FIRST_ALREADY = "这已经是第一题了。"
# States of a session that ended (``finished`` counts as a completion; the others apart).
ENDED = frozenset({"finished", "screened_out", "quota_full"})
# Set by the background scan (``service.reminders``) on a session idle for ``expire_after``; the
# next keyword starts over or resumes (``on_expire``).
EXPIRED = "expired"
REMINDER_STOP = "回复「退出」不再提醒。"
INVALID_STRIKES = 3  # invalid answers in a row before the reply says how to pause (and skip)
INVALID_MEMORY = 10_000  # sessions whose invalid answers this process remembers
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
    # Quota claims to make first: (claim, the plan instead when the quota is full).
    claims: list[tuple[Write, _Plan]] = dataclasses.field(default_factory=list)


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
        # (session id, version) -> keys of invalid answers to the question at that version.
        self._invalid: collections.OrderedDict[tuple[str, int], set[str]] = (
            collections.OrderedDict()
        )

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

    def reminder_text(self, doc: Mapping[str, Any]) -> str | None:
        """The reminder for a session in progress (``service.reminders``): the question it is
        at, on the version it started on, and how to stop; None when its survey is gone."""
        survey = self.snapshot.version(str(doc.get("survey")), doc.get("sv"))
        if survey is None:
            return None
        question = self._current(survey, doc)
        answered = len(doc.get("answers") or [])
        return (
            f"「{survey.title}」还没答完（已答 {answered}/{survey.total} 题），直接回复就能接着答；"
            f"{REMINDER_STOP}\n\n" + _ask(survey, question, doc)
        )

    def might_claim(self, openid: str, text: str) -> bool:
        """Without the database: could ``text`` from ``openid`` be a survey step? A keyword or a
        command is; so is anything from a user last seen in a survey, and, for a user this
        process has not seen lately, a short answer-like text (a number, an option letter)."""
        if not self.surveys:
            return False
        folded = normalize_keyword(text)
        if folded in self.snapshot.keywords or _command(folded):
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
        command = _command(folded)
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
            for claim, instead in plan.claims:
                if not await claim(db):
                    plan = instead  # the quota is full
                    break
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
                    for _, instead in plan.claims:
                        instead.writes[:0] = pre
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
        if command == "back":
            latest = next((d for d in sessions if d["survey"] in snap.current), None)
            if latest is not None and latest.get("state") in ENDED:
                title = snap.current[latest["survey"]].title
                return _Plan(f"「{title}」已经结束，答案不能再修改。感谢参与！")
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
            reply = start_text(survey) + "\n\n" + question_text(survey, survey.first, {})
            return _Plan(reply, [self._insert(message, survey, reply, now)])
        if doc.get("state") == EXPIRED:
            return self._after_expiry(message, survey, started_on, doc, now, restart=restart)
        if doc.get("state") in ENDED:
            if not survey.allow_retake:
                if doc.get("state") != "finished":  # screened out, or a full quota: told again
                    return _Plan(str((doc.get("ended") or {}).get("text") or ALREADY_TAKEN))
                return _Plan(ALREADY_TAKEN + "\n\n" + self._result_block(started_on, doc))
            attempt = int(doc.get("attempt", 1)) + 1
            previous = (doc.get("result") or {}).get("title")
            lead = f"这是你第 {attempt} 次参加「{survey.title}」"
            lead += f"，上次的结果是「{previous}」。" if previous else "。"
            first = question_text(survey, survey.first, {})
            reply = f"{lead}\n\n{start_text(survey)}\n\n{first}"
            return _Plan(reply, [self._restart(message, survey, doc, reply, now)])
        # In progress but paused (or set aside): resume on the version it started on, or start
        # over (on the newest) when asked and allowed.
        if restart:
            if not survey.allow_retake:
                return _Plan(
                    f"「{survey.title}」不支持重新开始。回复「{survey.keywords[0]}」"
                    f"从第 {self._position(started_on, doc)} 题继续作答。"
                )
            reply = f"好的，「{survey.title}」从头开始。\n\n" + question_text(
                survey, survey.first, {}
            )
            return _Plan(reply, [self._restart(message, survey, doc, reply, now)])
        question = self._current(started_on, doc)
        reply = f"欢迎回来！继续「{started_on.title}」。\n\n" + _ask(started_on, question, doc)
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

    def _after_expiry(
        self,
        message: Message,
        survey: Survey,
        started_on: Survey,
        doc: dict[str, Any],
        now: dt.datetime,
        *,
        restart: bool,
    ) -> _Plan:
        """A keyword (or 「重新开始」) after the session expired (``service.reminders``): start
        over on the newest version (``on_expire: restart``, the earlier attempt kept in its
        history) or resume where it stopped (``resume``, on the version it started on)."""
        if survey.on_expire == "resume" and not (restart and survey.allow_retake):
            if restart:
                return _Plan(
                    f"「{survey.title}」不支持重新开始。回复「{survey.keywords[0]}」"
                    f"从第 {self._position(started_on, doc)} 题继续作答。"
                )
            question = self._current(started_on, doc)
            reply = f"欢迎回来！继续「{started_on.title}」。\n\n" + _ask(started_on, question, doc)
            return _Plan(
                reply,
                [
                    self._update(
                        message,
                        doc,
                        reply,
                        set_fields={
                            "state": "in_progress",
                            "active_user": message.openid,
                            "paused": False,
                            "current": question.id,
                        },
                        unset_fields=("expired_at",),
                    )
                ],
            )
        first = question_text(survey, survey.first, {})
        reply = (
            f"上次的「{survey.title}」已经过期，我们从头开始。\n\n{start_text(survey)}\n\n{first}"
        )
        return _Plan(reply, [self._restart(message, survey, doc, reply, now)])

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
                    + _ask(survey, question, doc)
                )
            reply = f"好的，「{newest.title}」从头开始。\n\n" + question_text(
                newest, newest.first, {}
            )
            return _Plan(reply, [self._restart(message, newest, doc, reply, now)])
        if keyword is not None:
            if keyword.id == survey.id:
                return _Plan(
                    f"你正在参加「{survey.title}」，接着答就好。\n\n" + _ask(survey, question, doc)
                )
            return _Plan(
                f"你正在参加「{survey.title}」（第 {survey.position(question.id)}/{survey.total} "
                f"题）。先回复「退出」暂停，再回复「{keyword.keywords[0]}」开始「{keyword.title}」。"
            )
        if message.is_event:
            return None  # a menu click that is not a keyword is not an answer
        if command == "back":
            return self._back(message, survey, doc, question)
        if command == "skip":
            if not question.optional:
                return _Plan(f"{CANNOT_SKIP}\n\n" + _ask(survey, question, doc))
            return self._answer(message, survey, doc, question, None, now)
        parsed = parse_answer(text, question)
        if isinstance(parsed, Invalid):
            lead = f"{parsed.message}回复「退出」可暂停。"
            if self._strikes(doc, message) >= INVALID_STRIKES:
                skip = "回复「跳过」跳过这道题，或" if question.optional else ""
                lead = (
                    f"{parsed.message}\n已经连续 {INVALID_STRIKES} 次没能识别你的回答。{skip}"
                    f"回复「退出」暂停，之后再发「{survey.keywords[0]}」接着答。"
                )
            return _Plan(f"{lead}\n\n" + _ask(survey, question, doc))
        return self._answer(message, survey, doc, question, parsed, now)

    def _strikes(self, doc: Mapping[str, Any], message: Message) -> int:
        """Invalid answers in a row to the question now asked: counted in this process's memory
        per session version (a valid answer moves the version on, so the count starts again;
        a retry of one message counts once). A hint only, so no database write for it."""
        key = (str(doc["_id"]), int(doc.get("v", 0)))
        seen = self._invalid.pop(key, None) or set()
        seen.add(message.key)
        self._invalid[key] = seen
        while len(self._invalid) > INVALID_MEMORY:
            self._invalid.popitem(last=False)
        return len(seen)

    def _back(
        self, message: Message, survey: Survey, doc: dict[str, Any], question: Question
    ) -> _Plan:
        """「上一题」: forget the last answer (and its score) and ask that question again; the
        conditions are evaluated afresh from there."""
        answers = list(doc.get("answers") or [])
        if not answers:
            return _Plan(f"{FIRST_ALREADY}\n\n" + _ask(survey, question, doc))
        last = answers.pop()
        previous = survey.question(str(last.get("q")))
        if previous is None:  # not in this version (a hand-edited session): stay here
            return _Plan(f"{FIRST_ALREADY}\n\n" + _ask(survey, question, doc))
        reply = "好的，回到上一题。\n\n" + question_text(survey, previous, survey.shown(answers))
        return _Plan(
            reply,
            [
                self._update(
                    message,
                    doc,
                    reply,
                    set_fields={"current": previous.id, "answers": answers},
                )
            ],
        )

    def _answer(
        self,
        message: Message,
        survey: Survey,
        doc: dict[str, Any],
        question: Question,
        answer: Answer | None,
        now: dt.datetime,
    ) -> _Plan:
        """An answer to ``question`` (``None``: skipped) and where it leads: a screen-out, the
        next question whose condition holds, or the end."""
        if answer is None:
            document: dict[str, Any] = {"value": None, "label": "", "score": 0, "skipped": True}
        else:
            document = answer.document()
        entry = {"q": question.id, **document, "at": now, "key": message.key}
        answers = [*(doc.get("answers") or []), entry]
        if (
            answer is not None
            and question.screen_out_if is not None
            and question.screen_out_if.holds(survey.env(answers))
        ):
            reason = {"q": question.id, "if": question.screen_out_if.source}
            return self._end(message, doc, entry, "screened_out", question.screen_out_text, reason)
        claims = self._claims(message, survey, doc, question, entry, answers) if answer else []
        following = survey.next_shown(question, answers, answer.choices if answer else ())
        if following is not None:
            nxt = survey.question(following)
            assert nxt is not None  # noqa: S101 - jumps are validated at load time
            reply = question_text(survey, nxt, survey.shown(answers))
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
                claims,
            )
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
            claims,
        )

    def _claims(
        self,
        message: Message,
        survey: Survey,
        doc: Mapping[str, Any],
        question: Question,
        entry: Mapping[str, Any],
        answers: Sequence[Mapping[str, Any]],
    ) -> list[tuple[Write, _Plan]]:
        """The quotas this answer decides and matches: each a counter to claim (one conditional
        update, made only here) and the plan when it is full."""
        deciding = [q for q in survey.quotas if q.decided_by == question.id]
        if not deciding:
            return []
        env = survey.env(answers)
        test = bool(doc.get("test_user")) or doc.get("sv") == 0
        member = f"{doc['_id']}#{int(doc.get('attempt', 1))}"
        out: list[tuple[Write, _Plan]] = []
        for quota in deciding:
            if not quota.when.holds(env):
                continue
            counter = store.quota_counter_id(survey.id, quota.id, test=test)

            async def claim(db: Db, counter: str = counter, limit: int = quota.limit) -> bool:
                return await store.claim_quota(db, counter, member, limit)

            full = self._end(message, doc, entry, "quota_full", quota.text, {"quota": quota.id})
            out.append((claim, full))
        return out

    def _end(
        self,
        message: Message,
        doc: Mapping[str, Any],
        entry: Mapping[str, Any],
        state: str,
        text: str,
        reason: Mapping[str, Any],
    ) -> _Plan:
        """End the attempt without a result: screened out, or its quota full (counted apart from
        completions); the text and the reason are kept with the session."""
        reply = text
        ended = {"state": state, "text": reply, **reason}
        return _Plan(
            reply,
            [
                self._update(
                    message,
                    doc,
                    reply,
                    set_fields={
                        "state": state,
                        "ended": ended,
                        "current": None,
                        "paused": False,
                        "finished_at": _now(),
                    },
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
            "changed_at": now,
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
                "ended",
                "reminder",
                "expired_at",
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
            unset_fields=(
                "score",
                "result",
                "finished_at",
                "paused_at",
                "ended",
                "reminder",
                "reminder_retries",
                "expired_at",
            ),
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
                lines.append(pipe(comment, survey.shown(doc.get("answers") or [])))
        for dimension in survey.dimensions:
            info = (result.get("dims") or {}).get(dimension.id) or {}
            line = f"{dimension.title}：{info.get('score', 0)} 分"
            if info.get("title"):
                line += f"，{info['title']}"
            lines.append(line)
        if not lines:
            finished = doc.get("finished_at")
            when = f"于 {self._local(finished)} " if isinstance(finished, dt.datetime) else ""
            if any(q.show_if is not None or q.optional for q in survey.questions):
                lines.append(f"你已{when}完成「{survey.title}」。")  # not every question is asked
            else:
                lines.append(f"你已{when}完成全部 {survey.total} 题。")
        return "\n".join(lines)

    def _finish_text(self, survey: Survey, doc: Mapping[str, Any]) -> str:
        parts = [f"「{survey.title}」答完啦，感谢参与！"]
        if survey.scored:
            parts.append(self._result_block(survey, doc))
        if survey.outro:
            parts.append(pipe(survey.outro, survey.shown(doc.get("answers") or [])))
        return "\n\n".join(parts)

    def _unavailable(self, survey: Survey, status: str) -> str:
        if status == "not_yet" and survey.opens_at is not None:
            return f"「{survey.title}」将于 {self._local(survey.opens_at)} 开放，敬请期待。"
        if status == "ended" and survey.closes_at is not None:
            return f"「{survey.title}」已于 {self._local(survey.closes_at)} 结束，感谢关注。"
        if status == "archived":
            return f"「{survey.title}」已经结束，感谢关注。"
        return f"「{survey.title}」暂未开放，感谢关注。"


def _command(folded: str) -> str:
    if folded in EXIT_WORDS:
        return "exit"
    if folded in RESTART_WORDS:
        return "restart"
    if folded in BACK_WORDS:
        return "back"
    return "skip" if folded in SKIP_WORDS else ""


def _ask(survey: Survey, question: Question, doc: Mapping[str, Any]) -> str:
    """``question`` as sent, its placeholders filled from the session's answers so far."""
    return question_text(survey, question, survey.shown(doc.get("answers") or []))


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
