"""How fast ``/wechat`` answers, against a reference measured in the same run.

Starts, on loopback: a reference server (a bare Tornado handler with a constant reply), the
service with ``--no-store`` (the ceiling without database writes) and the service as deployed,
both on the embedded SecantusDB (started here, on a temporary folder) or on ``MONGODB_URI``.
Each measured cell (workload x connections x repeat) runs a separate load process
(``bench/load.py``) pinned to another core than the servers. Prints a Markdown table and writes
the same figures to ``bench/results/<timestamp>.json``. See ``bench/README.md``.

    .venv/bin/python bench/run.py                 # the full run (about 10 minutes)
    .venv/bin/python bench/run.py --quick         # a one-minute look
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from service.embedded import EmbeddedDatabase, free_port  # noqa: E402
from service.wechat_client import WeChatSide  # noqa: E402

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
SURVEY_KEYWORD = "爆肝度调查"
DB_METRIC = "wechat_survey_database_commands_total{"

# Workload id -> (label, service, mode). "service" is which server the load is aimed at.
WORKLOADS: dict[str, tuple[str, str, str]] = {
    "reference": ("reference (constant reply)", "reference", "plain"),
    "a-nostore": ("(a) text, --no-store", "nostore", "plain"),
    "b-nostore": ("(b) safe mode, --no-store", "nostore", "aes"),
    "a": ("(a) text", "store", "plain"),
    "b": ("(b) safe mode", "store", "aes"),
    "c": ("(c) survey, whole 爆肝度调查", "store", "plain"),
    "d": ("(d) retry storm x3", "store", "plain"),
}
LOAD_KIND = {"reference": "ref", "a-nostore": "text", "b-nostore": "text", "a": "text",
             "b": "text", "c": "survey", "d": "retry"}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- processes --------------------------------------------------------------------------------
def pinned(argv: list[str], cpus: list[int] | None) -> list[str]:
    if cpus and shutil.which("taskset"):
        return ["taskset", "-c", ",".join(map(str, cpus)), *argv]
    return argv


def read_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of ``pid`` in kB, from /proc."""
    values: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


class Server:
    """A server process on loopback, its output in a log file."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], port: int, log_path: Path,
        cpus: list[int] | None,
    ) -> None:
        self.name = name
        self.argv = pinned(argv, cpus)
        self.env = env
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=ROOT,
            )

    def wait_ready(self, side: WeChatSide | None, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise SystemExit(f"{self.name} exited with {self.process.returncode}:\n{tail}")
            try:
                if side is None:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                        return
                query = urlencode(side.handshake("ready"))
                url = f"{self.base_url}/wechat?{query}"
                with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - our loopback URL
                    if r.read() == b"ready":
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"{self.name} did not become ready in {timeout:.0f} s")

    def stop(self, timeout: float = 30.0) -> int | None:
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                return process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                return process.wait()
        return process.returncode

    def memory(self) -> dict[str, float]:
        status = read_status(self.pid)
        return {
            "rss_mb": round(status.get("VmRSS", 0) / 1024, 1),
            "peak_rss_mb": round(status.get("VmHWM", 0) / 1024, 1),
        }


# -- the service's database counter ----------------------------------------------------------
def db_commands(server: Server, token: str) -> dict[str, int] | None:
    """Commands the service's PyMongo client has sent so far, by name (command monitoring).

    Read from ``/metrics`` (``wechat_survey_database_commands_total{command=...}``), which the
    service fills from PyMongo's command monitoring; None when the service has no such metric.
    """
    request = urllib.request.Request(  # noqa: S310 - our loopback URL
        f"{server.base_url}/metrics", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            text = response.read().decode("utf-8")
    except (OSError, urllib.error.HTTPError):
        return None
    counts: dict[str, int] | None = None
    for line in text.splitlines():
        if line.startswith(DB_METRIC):
            name = line.partition('command="')[2].partition('"')[0] or "?"
            counts = counts or {}
            counts[name] = counts.get(name, 0) + int(float(line.rsplit(" ", 1)[1]))
    return counts


# -- the run ----------------------------------------------------------------------------------
@dataclasses.dataclass
class Config:
    duration: float
    warmup: float
    repeats: int
    concurrency: list[int]
    workloads: list[str]
    survey_users: int
    soak: int
    live: int
    mongodb_uri: str
    out: Path
    keep: bool


class Bench:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.tmp = Path(tempfile.mkdtemp(prefix="wechat-bench-"))
        self.token = secrets.token_hex(8)
        self.app_id = "wxbench" + secrets.token_hex(5)
        self.aes_key = base64.b64encode(secrets.token_bytes(32)).decode("ascii")[:43]
        self.metrics_token = secrets.token_hex(16)
        self.side = WeChatSide(self.token, encoding_aes_key=self.aes_key, app_id=self.app_id)
        self.stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.msg_ids = 25_000_000_000_000_000 + (int(time.time()) % 100_000) * 10**9
        cpus = sorted(os.sched_getaffinity(0))
        self.pinning = len(cpus) >= 2 and shutil.which("taskset") is not None
        self.server_cpus = cpus[:1] if self.pinning else None
        self.load_cpus = cpus[1:2] if self.pinning else None
        self.db_cpus = (cpus[2:] or cpus[1:2]) if self.pinning else None
        self.embedded: EmbeddedDatabase | None = None
        self.servers: dict[str, Server] = {}
        self.cells: list[dict[str, Any]] = []
        self.db_names: list[str] = []

    # -- start / stop -------------------------------------------------------------------------
    def service_env(self, db_name: str, data_dir: Path, uri: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WECHAT_", "MONGODB_"))}
        env.update(
            WECHAT_TOKEN=self.token,
            WECHAT_APP_ID=self.app_id,
            WECHAT_ENCODING_AES_KEY=self.aes_key,
            MONGODB_URI=uri,
            MONGODB_DB=db_name,
            METRICS_TOKEN=self.metrics_token,
            COOKIE_SECRET=secrets.token_hex(16),
            DATA_DIR=str(data_dir),
            PYTHONUNBUFFERED="0",
        )
        return env

    def start(self) -> None:
        uri = self.config.mongodb_uri
        if not uri:
            self.embedded = EmbeddedDatabase(
                self.tmp / "secantus", log_path=self.tmp / "secantus.log"
            )
            self.embedded.start()
            uri = self.embedded.uri
            assert self.embedded.process is not None
            if self.db_cpus:
                subprocess.run(  # all of its threads, not just the main one
                    ["taskset", "-a", "-p", "-c", ",".join(map(str, self.db_cpus)),
                     str(self.embedded.process.pid)],
                    check=True, stdout=subprocess.DEVNULL,
                )
        self.uri = uri
        python = sys.executable
        ref_port = free_port()
        self.servers["reference"] = Server(
            "reference", [python, str(BENCH / "reference_server.py"), "--port", str(ref_port)],
            dict(os.environ), ref_port, self.tmp / "reference.log", self.server_cpus,
        )
        for name, extra in (("nostore", ["--no-store"]), ("store", [])):
            port = free_port()
            db_name = f"wechat_survey_bench_{self.stamp.replace('-', '_')}_{name}"
            self.db_names.append(db_name)
            data_dir = self.tmp / name
            data_dir.mkdir()
            argv = [python, "-m", "service", "serve", "--port", str(port), *extra]
            self.servers[name] = Server(
                f"service ({name})", argv, self.service_env(db_name, data_dir, uri), port,
                self.tmp / f"service-{name}.log", self.server_cpus,
            )
        for server in self.servers.values():
            server.start()
        for name, server in self.servers.items():
            server.wait_ready(None if name == "reference" else self.side)
        log(f"servers ready (logs in {self.tmp})")

    def stop(self) -> None:
        for name, server in self.servers.items():
            code = server.stop()
            if code not in (0, None, -signal.SIGTERM):
                log(f"warning: {name} exited with {code}; see {server.log_path}")
        if self.config.mongodb_uri and self.db_names:
            from pymongo import MongoClient

            with MongoClient(self.config.mongodb_uri, serverSelectionTimeoutMS=3000) as client:
                for name in self.db_names:
                    client.drop_database(name)
        if self.embedded is not None:
            self.embedded.stop()
        if not self.config.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- one cell -----------------------------------------------------------------------------
    def spec(self, workload: str, concurrency: int, repeat: int) -> dict[str, Any]:
        _, target, mode = WORKLOADS[workload]
        server = self.servers[target]
        self.msg_ids += 10**8
        spec: dict[str, Any] = {
            "workload": LOAD_KIND[workload],
            "mode": mode,
            "port": server.port,
            "concurrency": concurrency,
            "warmup": self.config.warmup,
            "duration": self.config.duration,
            "token": self.token,
            "app_id": self.app_id,
            "aes_key": self.aes_key,
            "openid_prefix": f"sim-bench-{workload}-",
            "users": 10_000,
            "msg_id_base": self.msg_ids,
            "seed": repeat * 1000 + concurrency,
            "run_tag": f"{concurrency}x{repeat}",
        }
        if workload == "c":
            spec["survey"] = dict(self.survey, users=self.config.survey_users,
                                  warmup_users=min(20, self.config.survey_users))
        return spec

    def run_cell(self, workload: str, concurrency: int, repeat: int) -> dict[str, Any]:
        spec = self.spec(workload, concurrency, repeat)
        target = self.servers[WORKLOADS[workload][1]]
        counting = target.name != "reference"
        load = subprocess.Popen(
            pinned([sys.executable, str(BENCH / "load.py")], self.load_cpus),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )
        assert load.stdin is not None and load.stdout is not None
        load.stdin.write(json.dumps(spec) + "\n")
        load.stdin.flush()
        before = after = None
        result: dict[str, Any] = {}
        for line in load.stdout:
            message = json.loads(line)
            if message["event"] == "window-start":
                before = db_commands(target, self.metrics_token) if counting else None
            elif message["event"] == "window-end":
                after = db_commands(target, self.metrics_token) if counting else None
            elif message["event"] == "result":
                result = message
                break
            load.stdin.write("ack\n")
            load.stdin.flush()
        load.stdin.close()
        code = load.wait()
        if code != 0 or not result:
            raise SystemExit(f"load process failed ({code}) on {workload} x{concurrency}")
        result.pop("event", None)
        cell: dict[str, Any] = {
            "workload": workload,
            "label": WORKLOADS[workload][0],
            "mode": spec["mode"],
            "concurrency": concurrency,
            "repeat": repeat,
            **result,
            **target.memory(),
        }
        if before is not None and after is not None:
            by_command = {k: v - before.get(k, 0) for k, v in after.items()}
            cell["db_ops"] = sum(by_command.values())
            cell["db_ops_per_msg"] = round(cell["db_ops"] / max(1, result["requests"]), 3)
            cell["db_ops_by_command"] = {k: v for k, v in by_command.items() if v}
        else:
            cell["db_ops"] = cell["db_ops_per_msg"] = None
        self.cells.append(cell)
        log(
            f"  {workload:>10} x{concurrency:<3} #{repeat}: {cell['rps']:8.1f} req/s  "
            f"p50 {cell['p50_ms']} ms  p99 {cell['p99_ms']} ms  errors {cell['errors']}  "
            f"db/msg {cell['db_ops_per_msg']}  rss {cell['rss_mb']} MB"
        )
        return cell

    def survey_shape(self) -> dict[str, Any]:
        """The keyword and the number of options of each question of the shipped survey."""
        from service import surveys

        loaded = surveys.load_shipped()  # type: ignore[attr-defined]
        survey = next(s for s in loaded if SURVEY_KEYWORD in s.keywords)
        return {"keyword": SURVEY_KEYWORD, "options": [len(q.options) for q in survey.questions]}

    def run(self) -> dict[str, Any]:
        cfg = self.config
        closed = [w for w in ("reference", "a-nostore", "b-nostore", "a", "b", "d")
                  if w in cfg.workloads]
        if "c" in cfg.workloads:
            self.survey = self.survey_shape()
        for repeat in range(1, cfg.repeats + 1):
            for concurrency in cfg.concurrency:
                log(f"repeat {repeat}, {concurrency} connection(s)")
                for workload in closed:
                    self.run_cell(workload, concurrency, repeat)
                if "c" in cfg.workloads:
                    self.run_cell("c", concurrency, repeat)
        return self.report()

    # -- figures ------------------------------------------------------------------------------
    def summary(self) -> list[dict[str, Any]]:
        reference = {(c["concurrency"], c["repeat"]): c["rps"]
                     for c in self.cells if c["workload"] == "reference"}
        for cell in self.cells:
            ref = reference.get((cell["concurrency"], cell["repeat"]))
            cell["ratio"] = round(cell["rps"] / ref, 3) if ref else None
        rows = []
        for workload in WORKLOADS:
            for concurrency in self.config.concurrency:
                cells = [c for c in self.cells
                         if c["workload"] == workload and c["concurrency"] == concurrency]
                if not cells:
                    continue

                def median(key: str, cells: list[dict[str, Any]] = cells) -> float | None:
                    values = [c[key] for c in cells if c.get(key) is not None]
                    return round(statistics.median(values), 3) if values else None

                rows.append({
                    "workload": workload,
                    "label": WORKLOADS[workload][0],
                    "concurrency": concurrency,
                    "connections": cells[0]["connections"],
                    "repeats": len(cells),
                    "rps": median("rps"),
                    "rps_min": min(c["rps"] for c in cells),
                    "rps_max": max(c["rps"] for c in cells),
                    "p50_ms": median("p50_ms"),
                    "p99_ms": median("p99_ms"),
                    "ratio": median("ratio"),
                    "errors": sum(c["errors"] for c in cells),
                    "db_ops_per_msg": median("db_ops_per_msg"),
                    "peak_rss_mb": max(c["peak_rss_mb"] for c in cells),
                    "requests": sum(c["requests"] for c in cells),
                })
        return rows

    def machine(self) -> dict[str, Any]:
        model = ""
        with contextlib.suppress(OSError):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        import pymongo
        import tornado

        return {
            "cpu": model,
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "tornado": tornado.version,
            "pymongo": pymongo.version,
            "database": "MONGODB_URI" if self.config.mongodb_uri else "embedded SecantusDB",
            "pinning": {
                "servers": self.server_cpus, "load": self.load_cpus, "database": self.db_cpus,
            } if self.pinning else None,
        }

    def report(self) -> dict[str, Any]:
        rows = self.summary()
        cfg = self.config
        return {
            "started_at": self.stamp,
            "machine": self.machine(),
            "config": {
                "duration_s": cfg.duration, "warmup_s": cfg.warmup, "repeats": cfg.repeats,
                "concurrency": cfg.concurrency, "workloads": cfg.workloads,
                "survey_users": cfg.survey_users,
            },
            "summary": rows,
            "cells": self.cells,
            "errors": sum(c["errors"] for c in self.cells),
        }


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "| workload | conns | req/s | p50 ms | p99 ms | × ref | errors | DB ops/msg "
        "| peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["summary"]:
        spread = f" ({row['rps_min']:.0f}–{row['rps_max']:.0f})" if row["repeats"] > 1 else ""
        lines.append(
            f"| {row['label']} | {row['connections']} | {fmt(row['rps'], 0)}{spread} "
            f"| {fmt(row['p50_ms'], 2)} | {fmt(row['p99_ms'], 2)} | {fmt(row['ratio'], 2)} "
            f"| {row['errors']} | {fmt(row['db_ops_per_msg'], 2)} | {fmt(row['peak_rss_mb'])} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=10.0, help="measured window, seconds")
    p.add_argument("--warmup", type=float, default=3.0, help="warm-up before each window")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--concurrency", default="1,16,64", help="connections, comma-separated")
    p.add_argument("--workloads", default=",".join(WORKLOADS),
                   help="comma-separated subset of: " + ", ".join(WORKLOADS))
    p.add_argument("--survey-users", type=int, default=500)
    p.add_argument("--soak", type=int, default=100_000,
                   help="messages to send before the final peak-RSS reading (0: skip)")
    p.add_argument("--live", type=int, default=2000,
                   help="messages whose live-feed delay is measured (0: skip)")
    p.add_argument("--mongodb-uri", default=os.environ.get("MONGODB_URI", ""),
                   help="use this server (a scratch database, dropped after) instead of "
                        "an embedded SecantusDB")
    p.add_argument("--out", type=Path, default=None, help="JSON file (default bench/results/)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder and logs")
    p.add_argument("--quick", action="store_true",
                   help="short windows, one repeat, 50 survey users, no soak")
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.repeats = 3.0, 1.0, 1
        args.survey_users, args.soak, args.live = 50, 0, 200
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = set(workloads) - set(WORKLOADS)
    if unknown:
        p.error(f"unknown workload(s): {', '.join(sorted(unknown))}")
    if "reference" not in workloads:
        workloads.insert(0, "reference")
    return Config(
        duration=args.duration, warmup=args.warmup, repeats=args.repeats,
        concurrency=[int(c) for c in args.concurrency.split(",")], workloads=workloads,
        survey_users=args.survey_users, soak=args.soak, live=args.live,
        mongodb_uri=args.mongodb_uri, out=args.out, keep=args.keep,
    )


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    bench = Bench(config)
    try:
        bench.start()
        report = bench.run()
    finally:
        bench.stop()
    out = config.out or RESULTS / f"{bench.stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(markdown(report))
    log(f"\nwritten to {out}")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
