"""Surveys as versioned data: the published versions in MongoDB, held in memory, live everywhere.

A survey has a **draft** (saved any number of times, may be invalid) and **published versions**
1, 2, 3… (immutable: the YAML exactly as validated, who published it, when; see
``service.store.survey_defs``). ``SurveyCatalog`` keeps a ``Snapshot`` of every published version
in memory; the engine reads it on the hot path and never the database. One
``service.definitions.DefinitionWatcher`` swaps the snapshot in every process within about a
second of a publish (a change stream on ``surveys``, polling where there is none).

The surveys shipped with the service (or the files of ``SURVEYS_DIR``) are imported at start-up,
idempotently: a file becomes a new version only when its definition differs from what was last
imported from it (so a restart makes no version 2, a newer shipped file does, and what the owner
published from the dashboard is not overwritten by an unchanged file).

Publishing (dashboard, ``surveys publish``, start-up) runs the validation of ``surveys check``
and then checks the keywords against every other published survey that is not archived; a
definition with any mistake is never published, and the same definition as the newest version
makes no new version.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from ..definitions import LiveSnapshot
from ..store import Db
from ..store import survey_defs as store
from .loader import (
    SHIPPED_DIR,
    Issue,
    SurveyLoadError,
    check_paths,
    normalize_keyword,
    parse_survey,
)
from .model import Survey

__all__ = [
    "MAX_DEFINITION_BYTES",
    "PublishResult",
    "Seed",
    "Snapshot",
    "SurveyCatalog",
    "definition_digest",
    "seeds_for",
]

log = logging.getLogger(__name__)

MAX_DEFINITION_BYTES = 256 * 1024  # a survey's YAML; larger is refused (413 on the dashboard)


def definition_digest(text: str) -> str:
    """A digest of the survey's *data* (comments and layout of the YAML do not count)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = text
    canonical = json.dumps(data, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclasses.dataclass(frozen=True)
class Seed:
    """A survey file imported at start-up: where from (``shipped:baogan.yaml``), its text."""

    source: str
    text: str
    survey: Survey


def seeds_for(folder: Path | None, *, tz: dt.tzinfo | None = None) -> list[Seed]:
    """The files of ``folder`` (default: the shipped surveys), validated together.

    Raises ``SurveyLoadError`` listing every mistake: an invalid file stops start-up.
    """
    folder = folder or SHIPPED_DIR
    if not folder.is_dir():
        raise SurveyLoadError([Issue(str(folder), 0, 0, "", "surveys folder does not exist")])
    surveys, issues = check_paths([folder], tz=tz)
    if issues:
        raise SurveyLoadError(issues)
    prefix = "shipped" if folder.resolve() == SHIPPED_DIR else "dir"
    return [
        Seed(f"{prefix}:{Path(s.source).name}", Path(s.source).read_text(encoding="utf-8"), s)
        for s in surveys
    ]


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """Every published survey, immutable; swapped whole when anything changes."""

    current: Mapping[str, Survey]  # id -> newest valid version, the owner's controls applied
    versions: Mapping[tuple[str, int], Survey]  # (id, n) -> that version, controls applied
    keywords: Mapping[str, Survey]  # normalized keyword -> current survey (archived left out)
    info: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    # What the simulator's test users get: the same, with the drafts being tried (version 0)
    # in place of the published versions. None: no draft is being tried.
    testers: Snapshot | None = None

    @classmethod
    def of(cls, surveys: Iterable[Survey]) -> Snapshot:
        """A fixed snapshot of loaded surveys (tests, ``surveys list --dir``)."""
        current = {s.id: s for s in surveys}
        return cls(
            current=MappingProxyType(current),
            versions=MappingProxyType({(s.id, s.version): s for s in current.values()}),
            keywords=MappingProxyType(_keywords(current.values())),
        )

    def history(self, survey_id: str) -> list[Survey]:
        """Every published version of a survey, oldest first."""
        found = [s for (sid, _n), s in self.versions.items() if sid == survey_id]
        return sorted(found, key=lambda s: s.version)

    def version(self, survey_id: str, n: int | None) -> Survey | None:
        """Version ``n`` of a survey (``None``: the version of sessions started before
        versions existed, 1; 0: the draft being tried); falls back to the newest when that
        version is unknown."""
        found = self.versions.get((survey_id, 1 if n is None else n))
        return found if found is not None else self.current.get(survey_id)


def _keywords(surveys: Iterable[Survey]) -> dict[str, Survey]:
    out: dict[str, Survey] = {}
    for survey in surveys:
        if survey.archived:
            continue
        for word in survey.keywords:
            key = normalize_keyword(word)
            other = out.get(key)
            if other is not None and other.id != survey.id:
                log.error(
                    "surveys %s and %s both use the keyword %r; %s keeps it",
                    other.id,
                    survey.id,
                    word,
                    other.id,
                )
                continue
            out[key] = survey
    return out


@dataclasses.dataclass(frozen=True)
class PublishResult:
    survey_id: str
    version: int  # the newest version after the call (0 when nothing was published)
    created: bool  # a new version was made (False: invalid, or the same as the newest)
    issues: Sequence[Issue] = ()

    @property
    def ok(self) -> bool:
        return not self.issues


class SurveyCatalog(LiveSnapshot[Snapshot]):
    """The published surveys of one database, in memory, following every change."""

    def __init__(
        self,
        db: Db,
        *,
        tz: dt.tzinfo | None = None,
        seeds: Sequence[Seed] = (),
        poll_interval: float = 1.0,
        polling: bool = False,
    ) -> None:
        self.db = db
        self.tz = tz
        self.seeds = list(seeds)
        self._parsed: dict[tuple[str, str], Survey | None] = {}  # (version id, digest) -> parsed
        # Until the first load, the seed files stand in (version 1): the dashboard can render.
        # ``ready()`` waits for the first load, the seeds imported first.
        super().__init__(
            "surveys",
            Snapshot.of(s.survey for s in self.seeds),
            watch=lambda token: store.watch(db, resume_after=token),
            stamp=lambda: store.stamps(db),
            prepare=self.import_seeds if self.seeds else None,
            poll_interval=poll_interval,
            polling=polling,
        )

    # -- loading ---------------------------------------------------------------------------------
    async def _build(self) -> Snapshot:
        """Read every survey and version, parse what is new: the next snapshot."""
        docs = await store.all_surveys(self.db)
        index = await store.version_index(self.db)
        keys = [(str(v["_id"]), str(v.get("digest"))) for v in index]
        missing = [vid for vid, digest in keys if (vid, digest) not in self._parsed]
        for doc in await store.versions_by_id(self.db, missing):
            key = (str(doc["_id"]), str(doc.get("digest")))
            self._parsed[key] = self._parse_version(doc)
        by_survey: dict[str, list[tuple[int, Survey]]] = {}
        for v in index:
            parsed = self._parsed.get((str(v["_id"]), str(v.get("digest"))))
            if parsed is not None:
                by_survey.setdefault(parsed.id, []).append((parsed.version, parsed))
        current: dict[str, Survey] = {}
        versions: dict[tuple[str, int], Survey] = {}
        info: dict[str, dict[str, Any]] = {}
        for doc in sorted(docs, key=_creation_order):
            sid = str(doc["_id"])
            try:
                controls = _controls(doc)
            except (TypeError, ValueError) as e:
                log.error("survey %s: its document is broken (%s); left out", sid, e)
                continue
            info[sid] = {
                "latest": int(doc.get("latest") or 0),
                "archived": controls.get("archived", False),
                "draft_saved_at": (doc.get("draft") or {}).get("saved_at"),
                "updated_at": doc.get("updated_at"),
            }
            published = sorted(by_survey.get(sid, []), key=lambda pair: pair[0])
            if not published:
                continue
            newest = published[-1][1]
            effective = {
                "open": controls.get("open", newest.open),
                "opens_at": controls.get("opens_at", newest.opens_at),
                "closes_at": controls.get("closes_at", newest.closes_at),
                "archived": controls.get("archived", False),
            }
            for n, survey in published:
                versions[(sid, n)] = dataclasses.replace(survey, **effective)
            current[sid] = versions[(sid, published[-1][0])]
            info[sid]["latest"] = published[-1][0]
        trials = self._trials(docs)
        testers = None
        if trials:
            tried = {**current, **trials}
            testers = Snapshot(
                current=MappingProxyType(tried),
                versions=MappingProxyType({**versions, **{(t.id, 0): t for t in trials.values()}}),
                keywords=MappingProxyType(_keywords(tried.values())),
                info=MappingProxyType(info),
            )
        return Snapshot(
            current=MappingProxyType(current),
            versions=MappingProxyType(versions),
            keywords=MappingProxyType(_keywords(current.values())),
            info=MappingProxyType(info),
            testers=testers,
        )

    def _trials(self, docs: Iterable[Mapping[str, Any]]) -> dict[str, Survey]:
        """The drafts being tried in the simulator, as version 0 (invalid ones left out)."""
        out: dict[str, Survey] = {}
        for doc in docs:
            trial = doc.get("trial")
            if not isinstance(trial, Mapping) or not isinstance(trial.get("text"), str):
                continue
            sid = str(doc["_id"])
            key = (f"{sid}:trial", str(trial.get("digest")))
            if key not in self._parsed:
                survey, issues = parse_survey(trial["text"], f"{sid} draft", tz=self.tz)
                ok = survey is not None and not issues and survey.id == sid
                self._parsed[key] = (
                    dataclasses.replace(survey, version=0, source="draft")
                    if ok and survey is not None
                    else None
                )
            parsed = self._parsed[key]
            if parsed is not None:
                out[sid] = parsed
        return out

    def _parse_version(self, doc: Mapping[str, Any]) -> Survey | None:
        name = f"{doc.get('_id')}"
        try:
            text, n, sid = doc["text"], int(doc["n"]), str(doc["survey"])
            if not isinstance(text, str):
                raise TypeError("text is not a string")
        except (KeyError, TypeError, ValueError) as e:
            log.error("survey version %s is broken (%s); left out", name, e)
            return None
        survey, issues = parse_survey(text, f"{sid} v{n}", tz=self.tz)
        if survey is None or issues or survey.id != sid:
            why = "; ".join(str(i) for i in issues[:5]) or f"its id is not {sid!r}"
            log.error("survey version %s fails validation (%s); left out", name, why)
            return None
        return dataclasses.replace(survey, version=n, source=str(doc.get("source") or ""))

    # -- publishing ------------------------------------------------------------------------------
    def validate(self, text: str, name: str = "<draft>") -> tuple[Survey | None, list[Issue]]:
        """The full validation of ``surveys check``, plus keywords against the other surveys."""
        if len(text.encode("utf-8")) > MAX_DEFINITION_BYTES:
            return None, [
                Issue(name, 0, 0, "", f"the definition is over {MAX_DEFINITION_BYTES // 1024} KiB")
            ]
        survey, issues = parse_survey(text, name, tz=self.tz)
        if survey is None or issues:
            return None, issues
        conflicts: list[Issue] = []
        for i, word in enumerate(survey.keywords):
            other = self.snapshot.keywords.get(normalize_keyword(word))
            if other is not None and other.id != survey.id:
                line, column = _keyword_position(text, i)
                conflicts.append(
                    Issue(
                        name,
                        line,
                        column,
                        f"keywords[{i}]",
                        f"keyword {word!r} also starts survey {other.id!r} "
                        f"(version {other.version})",
                    )
                )
        return (None, conflicts) if conflicts else (survey, [])

    def validate_for(self, survey_id: str, text: str) -> tuple[Survey | None, list[Issue]]:
        """``validate``, for the survey ``survey_id`` (the editor's): its id must be that."""
        survey, issues = self.validate(text, f"{survey_id}.yaml")
        if survey is not None and survey.id != survey_id:
            return None, [_id_mismatch(text, survey_id, survey.id)]
        return survey, issues

    async def publish(
        self, text: str, *, by: str, source: str, name: str = "<draft>"
    ) -> PublishResult:
        """Validate and publish ``text`` as the next version of its survey.

        Nothing is written when there is any mistake. The same definition as the newest version
        publishes nothing (``created`` False). Safe against concurrent publishers.
        """
        await self._load()  # the keyword check needs every other survey as it is now
        survey, issues = self.validate(text, name)
        if survey is None:
            return PublishResult("", 0, False, issues)
        digest = definition_digest(text)
        for _attempt in range(5):
            doc = await store.get_survey(self.db, survey.id)
            latest = int((doc or {}).get("latest") or 0)
            if latest:
                newest = await store.get_version(self.db, survey.id, latest)
                if newest is not None and newest.get("digest") == digest:
                    return PublishResult(survey.id, latest, False)
            version = {
                "survey": survey.id,
                "n": latest + 1,
                "text": text,
                "digest": digest,
                "published_at": dt.datetime.now(dt.UTC),
                "published_by": by,
                "source": source,
            }
            if await store.insert_version(self.db, version):
                await store.raise_latest(self.db, survey.id, latest + 1)
                # Test users trying a draft get the published version from now on.
                await store.set_controls(self.db, survey.id, set_fields={}, unset_fields=("trial",))
                log.info(
                    "survey %s: version %d published by %s (%s)",
                    survey.id,
                    latest + 1,
                    by,
                    source,
                )
                await self._load()
                return PublishResult(survey.id, latest + 1, True)
            # Another publisher took that number; make sure `latest` catches up and read again.
            await store.raise_latest(self.db, survey.id, latest + 1)
        raise RuntimeError(f"survey {survey.id}: could not publish under concurrent publishers")

    async def import_seeds(self) -> None:
        """Import the start-up files: a new version only for a definition not imported before."""
        for seed in self.seeds:
            digest = definition_digest(seed.text)
            doc = await store.get_survey(self.db, seed.survey.id)
            if store.imported_digest(doc, seed.source) == digest:
                continue
            result = await self.publish(
                seed.text, by="start-up", source=seed.source, name=seed.source
            )
            if not result.ok:
                log.error(
                    "survey file %s not imported: %s",
                    seed.source,
                    "; ".join(str(i) for i in result.issues),
                )
                continue
            if result.created:
                log.info(
                    "survey %s: %s imported as version %d",
                    result.survey_id,
                    seed.source,
                    result.version,
                )
            await store.mark_imported(self.db, seed.survey.id, seed.source, digest)

    # -- the owner's controls ----------------------------------------------------------------------
    async def set_open(self, survey_id: str, is_open: bool) -> bool:
        ok = await store.set_controls(self.db, survey_id, set_fields={"open": is_open})
        await self.refresh()
        return ok

    async def set_archived(self, survey_id: str, archived: bool) -> list[Issue]:
        """Archive (closes it, frees its keywords) or bring it back (its keywords checked)."""
        if not archived:
            survey = self.snapshot.current.get(survey_id)
            if survey is not None:
                taken = [
                    w
                    for w in survey.keywords
                    if (other := self.snapshot.keywords.get(normalize_keyword(w))) is not None
                    and other.id != survey_id
                ]
                if taken:
                    return [
                        Issue(survey_id, 0, 0, "keywords", f"keyword {w!r} starts another survey")
                        for w in taken
                    ]
        await store.set_controls(self.db, survey_id, set_fields={"archived": archived})
        await self.refresh()
        return []

    async def schedule(
        self, survey_id: str, opens_at: dt.datetime | None, closes_at: dt.datetime | None
    ) -> bool:
        """The owner's time window (``None``: no limit on that side)."""
        ok = await store.set_controls(
            self.db, survey_id, set_fields={"opens_at": opens_at, "closes_at": closes_at}
        )
        await self.refresh()
        return ok

    async def try_draft(self, survey_id: str, text: str) -> tuple[Survey | None, list[Issue]]:
        """Let the simulator's test users take ``text`` (valid, not published) in place of the
        published version, until the next publish. Returns the survey, or every mistake."""
        survey, issues = self.validate_for(survey_id, text)
        if survey is None:
            return None, issues
        await store.set_trial(self.db, survey_id, text, definition_digest(text))
        await self.refresh()
        return survey, []

    async def export(self, survey_id: str, version: int | None = None) -> str | None:
        """The YAML of a published version (default the newest), exactly as published."""
        if version is None:
            doc = await store.get_survey(self.db, survey_id)
            version = int((doc or {}).get("latest") or 0)
        found = await store.get_version(self.db, survey_id, version) if version else None
        return None if found is None else str(found["text"])


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _creation_order(doc: Mapping[str, Any]) -> tuple[dt.datetime, str]:
    """Surveys in the order they were created (a document broken by hand sorts first)."""
    created = doc.get("created_at")
    if not isinstance(created, dt.datetime):
        created = _EPOCH
    elif created.tzinfo is None:
        created = created.replace(tzinfo=dt.UTC)
    return created, str(doc.get("_id"))


def _controls(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The owner's controls of a survey document, type-checked (a broken one raises)."""
    out: dict[str, Any] = {}
    if "open" in doc:
        if not isinstance(doc["open"], bool):
            raise TypeError(f"open is {doc['open']!r}")
        out["open"] = doc["open"]
    for key in ("opens_at", "closes_at"):
        if key in doc:
            value = doc[key]
            if value is not None and not isinstance(value, dt.datetime):
                raise TypeError(f"{key} is {value!r}")
            if value is not None and value.tzinfo is None:
                value = value.replace(tzinfo=dt.UTC)  # PyMongo reads naive UTC
            out[key] = value
    if "archived" in doc:
        if not isinstance(doc["archived"], bool):
            raise TypeError(f"archived is {doc['archived']!r}")
        out["archived"] = doc["archived"]
    if not isinstance(doc.get("latest", 0), int):
        raise TypeError(f"latest is {doc.get('latest')!r}")
    return out


def _id_mismatch(text: str, expected: str, found: str) -> Issue:
    line, column = 0, 0
    with contextlib.suppress(yaml.YAMLError):
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if getattr(key, "value", None) == "id":
                    line, column = value.start_mark.line + 1, value.start_mark.column + 1
    return Issue(
        f"{expected}.yaml", line, column, "id", f"id is {found!r}; this survey is {expected!r}"
    )


def _keyword_position(text: str, index: int) -> tuple[int, int]:
    """Line and column of ``keywords[index]`` in the YAML text (0, 0 when not found)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return 0, 0
    if not isinstance(node, yaml.MappingNode):
        return 0, 0
    for key, value in node.value:
        if getattr(key, "value", None) == "keywords":
            if isinstance(value, yaml.SequenceNode) and index < len(value.value):
                mark = value.value[index].start_mark
            else:
                mark = value.start_mark
            return mark.line + 1, mark.column + 1
    return 0, 0
