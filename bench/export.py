"""Peak memory of the XLSX and CSV exports: constant, whatever the number of sessions.

Generates sessions of the shipped 爆肝度调查 (``bench/analysis.py``'s generator) into the embedded
SecantusDB (or ``--mongodb-uri``), publishes the survey, then runs ``python -m service results``
as an operator does, once per size and format, each in its own process, and reads that
process's peak RSS (``getrusage(RUSAGE_CHILDREN)`` after each run):

    .venv/bin/python bench/export.py                      # 10,000 then 100,000 sessions
    .venv/bin/python bench/export.py --sizes 1000,5000

Constant memory means the peak at 100,000 is about the peak at 10,000.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for folder in (ROOT, BENCH):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from analysis import sessions, shipped_survey  # noqa: E402
from pymongo import AsyncMongoClient  # noqa: E402

from service.db import ensure_indexes  # noqa: E402
from service.embedded import EmbeddedDatabase  # noqa: E402


async def seed_more(uri: str, db_name: str, start: int, stop: int) -> None:
    """Sessions ``start..stop`` of the generator (one seed: a larger set holds the smaller)."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    try:
        db = client[db_name]
        await ensure_indexes(db)
        batch: list[dict[str, Any]] = []
        for i, doc in enumerate(sessions(shipped_survey(), stop)):
            if i < start:
                continue
            batch.append(doc)
            if len(batch) == 2000:
                await db.survey_sessions.insert_many(batch, ordered=False)
                batch = []
        if batch:
            await db.survey_sessions.insert_many(batch, ordered=False)
    finally:
        await client.close()


def run(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run one command; its wall time (s), ITS peak RSS (MiB, from ``os.wait4``) and stderr."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        _pid, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        err.seek(0)
        said = err.read().strip()
    if process.returncode != 0:
        raise SystemExit(f"{argv} failed ({process.returncode}):\n{said}")
    return seconds, usage.ru_maxrss / 1024, said


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10000,100000")
    p.add_argument("--formats", default="xlsx,csv")
    p.add_argument("--mongodb-uri", default=os.environ.get("MONGODB_URI", ""))
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="wechat-export-"))
    embedded = None
    db_name = f"wechat_survey_export_{secrets.token_hex(4)}"
    results = []
    try:
        uri = args.mongodb_uri
        if not uri:
            embedded = EmbeddedDatabase(tmp / "secantus", log_path=tmp / "secantus.log")
            embedded.start()
            uri = embedded.uri
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WECHAT_", "MONGODB_"))}
        env.update(MONGODB_URI=uri, MONGODB_DB=db_name, DATA_DIR=str(tmp / "data"))
        cli = [sys.executable, "-m", "service", "--log-level", "WARNING"]
        baogan = ROOT / "service" / "surveys" / "baogan.yaml"
        run([*cli, "surveys", "publish", str(baogan)], env)
        seeded = 0
        for size in sizes:
            started = time.perf_counter()
            asyncio.run(seed_more(uri, db_name, seeded, size))
            seeded = size
            print(f"{size} sessions seeded ({time.perf_counter() - started:.0f} s)", flush=True)
            for fmt in args.formats.split(","):
                out = tmp / f"export-{size}.{fmt}"
                seconds, peak, said = run(
                    [*cli, "results", "baogan", "--format", fmt, "-o", str(out)], env
                )
                row = {
                    "sessions": size,
                    "format": fmt,
                    "seconds": round(seconds, 1),
                    "peak_rss_mib": round(peak, 1),
                    "file_mib": round(out.stat().st_size / 2**20, 1),
                    "said": said,
                }
                results.append(row)
                print(
                    f"{size:>7} {fmt:4s} {row['seconds']:7.1f} s  peak RSS "
                    f"{row['peak_rss_mib']:6.1f} MiB  file {row['file_mib']} MiB  ({said})",
                    flush=True,
                )
                out.unlink()
        if args.out:
            args.out.write_text(json.dumps(results, indent=2), encoding="utf-8")
        return 0
    finally:
        if args.mongodb_uri:
            from pymongo import MongoClient

            with MongoClient(args.mongodb_uri) as sync:
                sync.drop_database(db_name)
        if embedded is not None:
            embedded.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
