"""What ``j: true`` costs a message insert: round-trip latency with and without the journal.

The hot path's message insert, survey steps and spool replays are journaled writes
(``service.store.journaled``: the connection's write concern plus ``j: true``). This inserts
message-sized documents into the embedded SecantusDB (or ``--mongodb-uri``) with PyMongo's async
client, alternating blocks of ``w: 1`` and ``w: 1, j: true`` so both see the same machine, at
``--concurrency`` inserts in flight, and prints p50/p99/mean latency and inserts/s of each.

    .venv/bin/python bench/journal.py                     # 1 and 16 in flight
    .venv/bin/python bench/journal.py --count 4000 --concurrency 1,4,16

Pinning as ``bench/run.py``'s default layout: this client on the first core, the database on the
second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
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

from pymongo import AsyncMongoClient, WriteConcern  # noqa: E402
from run import pin_threads  # noqa: E402

from service.embedded import EmbeddedDatabase  # noqa: E402


def document(i: int, tag: str) -> dict[str, Any]:
    """About the size of a stored text message (without the raw XML's variance)."""
    return {
        "_id": f"msg:{tag}:{i}",
        "openid": f"sim-journal-{i % 1000}",
        "type": "text",
        "content": "你好" * 8,
        "raw": "<xml>" + "x" * 300 + "</xml>",
        "reply": {"type": "text", "content": "Hello!"},
        "received_at": time.time(),
    }


async def block(coll: Any, tag: str, count: int, concurrency: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    next_index = iter(range(count))

    async def worker() -> None:
        for i in next_index:
            start = time.perf_counter()
            await coll.insert_one(document(i, tag))
            latencies.append((time.perf_counter() - start) * 1e3)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - began


def figures(latencies: list[float], seconds: float) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "inserts": len(ordered),
        "per_s": round(len(ordered) / seconds, 0),
        "p50_ms": round(ordered[len(ordered) // 2], 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3),
        "mean_ms": round(statistics.fmean(ordered), 3),
    }


async def measure(uri: str, count: int, blocks: int, levels: list[int]) -> list[dict[str, Any]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    db = client["wechat_survey_journal_bench"]
    rows = []
    try:
        await db.drop_collection("messages")
        plain = db.get_collection("messages", write_concern=WriteConcern(w=1))
        journaled = db.get_collection("messages", write_concern=WriteConcern(w=1, j=True))
        await block(plain, "warm", 300, 4)
        for concurrency in levels:
            found: dict[str, tuple[list[float], float]] = {"w1": ([], 0.0), "j": ([], 0.0)}
            for b in range(blocks):  # alternate, so both see the same moments of the machine
                for name, coll in (("w1", plain), ("j", journaled)):
                    lat, sec = await block(coll, f"{name}{concurrency}.{b}", count, concurrency)
                    found[name] = (found[name][0] + lat, found[name][1] + sec)
            w1, j = figures(*found["w1"]), figures(*found["j"])
            rows.append({"concurrency": concurrency, "w1": w1, "j": j})
    finally:
        await client.drop_database(db.name)
        await client.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=1000, help="inserts per block")
    p.add_argument("--blocks", type=int, default=4, help="alternating blocks of each kind")
    p.add_argument("--concurrency", default="1,16", help="inserts in flight, comma-separated")
    p.add_argument("--mongodb-uri", default="")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0))
    embedded = None
    folder = Path(tempfile.mkdtemp(prefix="wechat-journal-"))
    uri = args.mongodb_uri
    if not uri:
        embedded = EmbeddedDatabase(folder / "db")
        embedded.start()
        uri = embedded.uri
        if len(cpus) >= 2 and embedded.process is not None:
            pin_threads(embedded.process.pid, [cpus[1]])
            os.sched_setaffinity(0, {cpus[0]})
    try:
        levels = [int(c) for c in args.concurrency.split(",")]
        rows = asyncio.run(measure(uri, args.count, args.blocks, levels))
    finally:
        if embedded is not None:
            embedded.stop()
        shutil.rmtree(folder, ignore_errors=True)
    lines = [
        "| in flight | w:1 p50 ms | w:1 p99 ms | w:1 inserts/s | j:true p50 ms | j:true p99 ms "
        "| j:true inserts/s | j:true ÷ w:1 (mean latency) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        w1, j = r["w1"], r["j"]
        lines.append(
            f"| {r['concurrency']} | {w1['p50_ms']} | {w1['p99_ms']} | {w1['per_s']:.0f} "
            f"| {j['p50_ms']} | {j['p99_ms']} | {j['per_s']:.0f} "
            f"| {j['mean_ms'] / w1['mean_ms']:.2f} |"
        )
    print("\n".join(lines))
    if args.out:
        report = {"load_average": os.getloadavg(), "rows": rows}
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
