"""The benchmark script runs end to end (tiny windows, no timing asserted), and ``--no-store``.

``bench/run.py`` is not part of the test suite; this only checks that it still works: it starts
its servers, drives every workload, reports the figures with the expected keys and zero errors.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from service.bot import GREETINGS
from service.config import Settings

ROOT = Path(__file__).resolve().parents[1]

CELL_KEYS = {
    "workload",
    "label",
    "concurrency",
    "repeat",
    "requests",
    "rps",
    "p50_ms",
    "p99_ms",
    "errors",
    "db_ops",
    "db_ops_per_msg",
    "rss_mb",
    "peak_rss_mb",
    "ratio",
    "connections",
    "cpu_us_per_req",
    "cpu_ratio",
}
ROW_KEYS = {
    "workload",
    "label",
    "concurrency",
    "rps",
    "p50_ms",
    "p99_ms",
    "ratio",
    "errors",
    "db_ops_per_msg",
    "peak_rss_mb",
    "cpu_us_per_req",
    "cpu_ratio",
}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.replace(store_messages=False)


@pytest.mark.gen_test
async def test_no_store_answers_without_writing(send, wechat, db, app):
    response, reply = await send(wechat.text("sim-nostore", "你好"))
    assert response.code == 200
    assert reply["Content"] in GREETINGS
    await app.settings["users"].flush()
    assert await db["messages"].count_documents({}) == 0
    assert await db["users"].count_documents({}) == 0


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_bench_runs_and_reports_every_workload(mongo_uri, tmp_path):
    out = tmp_path / "bench.json"
    command = [
        sys.executable,
        str(ROOT / "bench" / "run.py"),
        "--duration",
        "0.5",
        "--warmup",
        "0.2",
        "--repeats",
        "1",
        "--concurrency",
        "1,3",
        "--survey-users",
        "3",
        "--soak",
        "0",
        "--live",
        "20",
        "--mongodb-uri",
        mongo_uri,
        "--out",
        str(out),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["errors"] == 0
    workloads = {row["workload"] for row in report["summary"]}
    assert workloads == {"reference", "a-nostore", "b-nostore", "a", "b", "c", "d"}
    for row in report["summary"]:
        assert set(row) >= ROW_KEYS, row
        assert row["errors"] == 0, row
        assert row["rps"] > 0, row
    for cell in report["cells"]:
        assert set(cell) >= CELL_KEYS, cell
        if cell["workload"] in ("a", "b", "c", "d"):
            assert cell["db_ops_per_msg"] is not None and cell["db_ops_per_msg"] > 0, cell
    for phase in ("light", "busy"):
        live = report["live_feed"][phase]
        assert live["missing"] == 0 and live["p99_ms"] is not None, live
    assert {t["target"] for t in report["targets"]} >= {"no errors"}
    assert report["machine"]["python"]
    # Every server says which event loop it runs on; the reference runs on the services' loop.
    loops = report["machine"]["event_loops"]
    assert set(loops) == {"reference", "nostore", "store"}
    assert len(set(loops.values())) == 1 and "?" not in loops.values(), loops
    # The printed table is the same figures.
    assert "| (a) text |" in done.stdout


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2 or shutil.which("taskset") is None,
    reason="--one-core pins to one core and the load to another: needs taskset and 2 cores",
)
def test_bench_one_core_puts_the_service_and_its_database_on_one_core(tmp_path):
    out = tmp_path / "bench.json"
    command = [
        sys.executable,
        str(ROOT / "bench" / "run.py"),
        *("--workloads", "a", "--concurrency", "2", "--duration", "0.5", "--warmup", "0.2"),
        *("--repeats", "1", "--soak", "0", "--live", "0", "--one-core", "--event-loop", "asyncio"),
        *("--out", str(out)),
    ]
    env = {k: v for k, v in os.environ.items() if k != "MONGODB_URI"}  # the embedded database
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(out.read_text(encoding="utf-8"))
    machine = report["machine"]
    assert machine["layout"] == "one-core"
    pins = machine["pinning"]
    assert pins["database"] == pins["servers"] and pins["load"] != pins["servers"], pins
    assert set(machine["event_loops"].values()) == {"asyncio"}
    (row,) = [r for r in report["summary"] if r["workload"] == "a"]
    assert row["errors"] == 0 and row["db_ops_per_msg"] > 0
    assert row["db_cpu_us_per_req"] is not None and row["db_cpu_us_per_req"] > 0, row
    assert "Layout: one-core" in done.stdout
