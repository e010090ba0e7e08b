"""How fast the survey page answers with many sessions: the report, filters, cross-tab, text list.

Generates ``--sessions`` (10,000) survey sessions of the shipped 爆肝度调查 straight into the
embedded SecantusDB (or ``--mongodb-uri``): three channels, about 60 % finished, 5 % expired,
the rest in progress at a random question, starts spread over 30 days, answers as the engine
stores them. Then starts the service (``python -m service serve``, its own process), logs in as
an owner and times the dashboard's JSON requests over HTTP, ``--repeats`` times each:

    .venv/bin/python bench/analysis.py                    # 10,000 sessions
    .venv/bin/python bench/analysis.py --sessions 2000 --repeats 2

Prints one line per request (median, max, ms) and the JSON with ``--out``. The issue's target:
the survey page under 1 s with 10,000 sessions on the embedded database.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import http.cookiejar
import json
import os
import random
import re
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for folder in (ROOT, BENCH):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from pymongo import AsyncMongoClient  # noqa: E402
from run import Server  # noqa: E402

from service.db import ensure_indexes  # noqa: E402
from service.embedded import EmbeddedDatabase, free_port  # noqa: E402
from service.store import owners  # noqa: E402
from service.surveys import SHIPPED_DIR, Survey, load_dir  # noqa: E402

CHANNELS = ("poster-library", "poster-canteen", "poster-dorm", None)
COMMENTS = ("还行", "太累了", "=SUM(A1:A9)", "想多睡会儿", "期末周", "咖啡续命")


def shipped_survey() -> Survey:
    return next(s for s in load_dir(SHIPPED_DIR) if s.id == "baogan")


def sessions(survey: Survey, count: int, seed: int = 12) -> Iterator[dict[str, Any]]:
    """``count`` session documents shaped as the engine writes them (``store.surveys``)."""
    rng = random.Random(seed)
    now = dt.datetime.now(dt.UTC)
    questions = list(survey.questions)
    for i in range(count):
        openid = f"o{i:07d}bench{seed}"
        started = now - dt.timedelta(seconds=rng.randrange(30 * 86400))
        roll = rng.random()
        done = len(questions) if roll < 0.6 else rng.randrange(len(questions))
        state = "finished" if roll < 0.6 else ("expired" if roll < 0.65 else "in_progress")
        answers = []
        at = started
        for question in questions[:done]:
            at += dt.timedelta(seconds=rng.randrange(5, 90))
            answers.append(answer(question, rng, at))
        doc: dict[str, Any] = {
            "_id": f"{survey.id}:{openid}",
            "survey": survey.id,
            "openid": openid,
            "test_user": False,
            "state": state,
            "current": None if state == "finished" else questions[done].id,
            "sv": survey.version,
            "answers": answers,
            "attempt": 1,
            "started_at": started,
            "updated_at": at,
            "v": done + 1,
            "recent": [],
        }
        channel = rng.choice(CHANNELS)
        if channel:
            doc["channel"] = channel
        if state == "finished":
            result = survey.result(answers)
            doc.update(score=result.score, result=result.document(), finished_at=at)
        if state == "in_progress" and rng.random() < 0.2:
            doc["paused"] = True
        yield doc


def answer(question: Any, rng: random.Random, at: dt.datetime) -> dict[str, Any]:
    if question.kind == "single":
        n = rng.randrange(1, len(question.options) + 1)
        option = question.options[n - 1]
        return {
            "q": question.id,
            "value": n,
            "label": option.label,
            "choices": [n],
            "score": option.score,
            "at": at,
        }
    if question.kind == "multiple":
        picks = sorted(rng.sample(range(1, len(question.options) + 1), k=question.min_choices))
        return {
            "q": question.id,
            "value": picks,
            "label": "；".join(question.options[n - 1].label for n in picks),
            "choices": picks,
            "score": sum(question.options[n - 1].score for n in picks),
            "at": at,
        }
    if question.kind == "rating":
        v = rng.randint(question.scale_min, question.scale_max)
        score = v if question.scored else 0
        return {"q": question.id, "value": v, "label": str(v), "choices": [v], "score": score}
    if question.kind == "number":
        v = rng.randint(0, 10)
        return {"q": question.id, "value": v, "label": str(v), "score": 0, "at": at}
    text = rng.choice(COMMENTS)
    return {"q": question.id, "value": text, "label": text, "score": 0, "at": at}


async def seed(uri: str, db_name: str, count: int, owner: tuple[str, str]) -> float:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    try:
        db = client[db_name]
        await ensure_indexes(db)
        await owners.create(db, *owner)
        started = time.perf_counter()
        batch: list[dict[str, Any]] = []
        for doc in sessions(shipped_survey(), count):
            batch.append(doc)
            if len(batch) == 1000:
                await db.survey_sessions.insert_many(batch, ordered=False)
                batch = []
        if batch:
            await db.survey_sessions.insert_many(batch, ordered=False)
        return time.perf_counter() - started
    finally:
        await client.close()


class Browser:
    """A logged-in dashboard session (cookies and the XSRF token), synchronous."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def login(self, name: str, password: str) -> None:
        page = self.opener.open(self.base_url + "/dashboard/login").read().decode()
        match = re.search(r'name="xsrf-token" content="([^"]+)"', page)
        assert match, "no XSRF token on the login page"
        body = urllib.parse.urlencode({"name": name, "password": password, "_xsrf": match[1]})
        self.opener.open(self.base_url + "/dashboard/login", body.encode()).read()

    def get(self, path: str, **params: str) -> tuple[float, int]:
        url = self.base_url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        started = time.perf_counter()
        with self.opener.open(url) as response:
            body = response.read()
        return time.perf_counter() - started, len(body)


REQUESTS: list[tuple[str, str, dict[str, str]]] = [
    ("survey page (report, no filter)", "/api/surveys/baogan", {}),
    ("report, channel filter", "/api/surveys/baogan", {"channel": "poster-dorm"}),
    ("report, finished + band", "/api/surveys/baogan", {"state": "finished", "band": "moderate"}),
    ("report, answered bedtime:4", "/api/surveys/baogan", {"answered": "bedtime:4"}),
    (
        "report, 14 days + channel",
        "/api/surveys/baogan",
        {"from": (dt.date.today() - dt.timedelta(days=14)).isoformat(), "channel": "poster-dorm"},
    ),
    (
        "cross-tab bedtime × caffeine",
        "/api/surveys/baogan/crosstab",
        {"rows": "bedtime", "columns": "caffeine"},
    ),
    ("survey list", "/api/surveys", {}),
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--mongodb-uri", default=os.environ.get("MONGODB_URI", ""))
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="wechat-analysis-"))
    embedded = None
    server = None
    db_name = f"wechat_survey_analysis_{secrets.token_hex(4)}"
    try:
        uri = args.mongodb_uri
        if not uri:
            embedded = EmbeddedDatabase(tmp / "secantus", log_path=tmp / "secantus.log")
            embedded.start()
            uri = embedded.uri
        owner = ("bench", secrets.token_urlsafe(18))
        seconds = asyncio.run(seed(uri, db_name, args.sessions, owner))
        print(f"seeded {args.sessions} sessions in {seconds:.1f} s", flush=True)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WECHAT_", "MONGODB_"))}
        env.update(
            WECHAT_TOKEN=secrets.token_hex(8),
            WECHAT_APP_ID="wxbench0000000000",
            MONGODB_URI=uri,
            MONGODB_DB=db_name,
            COOKIE_SECRET=secrets.token_hex(16),
            DATA_DIR=str(tmp / "data"),
        )
        argv_ = [sys.executable, "-m", "service", "serve", "--port", str(port)]
        server = Server("service", argv_, env, port, tmp / "service.log", None)
        server.start()
        server.wait_ready(None)
        browser = Browser(server.base_url)
        browser.login(*owner)
        results = []
        for label, path, params in REQUESTS:
            first, size = browser.get(path, **params)
            times = [browser.get(path, **params)[0] for _ in range(args.repeats)]
            row = {
                "request": label,
                "first_ms": round(first * 1000, 1),
                "median_ms": round(statistics.median(times) * 1000, 1),
                "max_ms": round(max(times) * 1000, 1),
                "bytes": size,
            }
            results.append(row)
            print(
                f"{label:34s} first {row['first_ms']:7.1f} ms  median {row['median_ms']:7.1f} ms"
                f"  max {row['max_ms']:7.1f} ms  ({size} bytes)",
                flush=True,
            )
        report = {"sessions": args.sessions, "embedded": embedded is not None, "results": results}
        if args.out:
            args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")
        return 0
    finally:
        if server is not None:
            server.stop()
        if args.mongodb_uri:
            from pymongo import MongoClient

            with MongoClient(args.mongodb_uri) as sync:
                sync.drop_database(db_name)
        if embedded is not None:
            embedded.stop()
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
