"""What the live feed costs per message with 0, 1, 2 and 4 service processes watching.

Every process that has a dashboard WebSocket open follows the ``messages`` collection with one
change stream (``service/live.py`` ``Hub``, one per process, shared by all its sockets). This
starts an embedded SecantusDB and ``--processes`` services on it (as supervisord would), logs a
dashboard owner in, and for each watcher count opens a WebSocket on that many processes (plus
``--sockets`` on the first, to show that more sockets do not mean more streams). Then it sends
text messages to the first process only (``bench/load.py``, closed loop, ``--concurrency``) and
reads, over the measured window:

- the database process's CPU µs per message (the change stream's share is the difference to the
  row without watchers);
- each process's database commands per message (``/metrics``), ``getMore`` being the streams';
- the CPU µs per message of a process that only watches (it stores nothing itself);
- that every socket received every message.

    .venv/bin/python bench/watchers.py                    # 0,1,2,4 watching processes
    .venv/bin/python bench/watchers.py --duration 10 --watchers 0,1,4

Pinning as ``bench/run.py``'s default layout: the services on the first core, the database and
the load generator on the second. Prints a Markdown table; ``--out`` writes the JSON.
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
from urllib.parse import urlencode

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from run import (  # noqa: E402
    Bench,
    Config,
    Server,
    cpu_seconds,
    db_commands,
    log,
    pin_threads,
    pinned,
)

from service.embedded import free_port  # noqa: E402


class Socket:
    """A logged-in dashboard WebSocket that counts the message events it receives."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.events = 0
        self.hello: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._conn: Any = None

    async def open(self, owner: str, password: str) -> None:
        from tornado.httpclient import AsyncHTTPClient, HTTPRequest
        from tornado.websocket import websocket_connect

        base = f"http://127.0.0.1:{self.port}"
        client = AsyncHTTPClient()
        cookies: dict[str, str] = {}

        def keep(response: Any) -> None:
            for header in response.headers.get_list("Set-Cookie"):
                name, _, rest = header.partition("=")
                cookies[name.strip()] = rest.split(";", 1)[0]

        def header() -> str:
            return "; ".join(f"{k}={v}" for k, v in cookies.items())

        keep(await client.fetch(f"{base}/dashboard/login", raise_error=False))
        form = urlencode(
            {"name": owner, "password": password, "_xsrf": cookies.get("_xsrf", ""), "next": "/"}
        )
        response = await client.fetch(
            f"{base}/dashboard/login",
            method="POST",
            body=form,
            raise_error=False,
            follow_redirects=False,
            headers={"Cookie": header()},
        )
        if response.code not in (200, 302):
            raise SystemExit(f"dashboard login failed with {response.code}")
        keep(response)
        self._conn = await websocket_connect(
            HTTPRequest(f"ws://127.0.0.1:{self.port}/dashboard/ws", headers={"Cookie": header()})
        )
        self.hello = asyncio.get_running_loop().create_future()
        self._task = asyncio.get_running_loop().create_task(self._read())
        await asyncio.wait_for(self.hello, 30)

    async def _read(self) -> None:
        while True:
            text = await self._conn.read_message()
            if text is None:
                return
            event = json.loads(text)
            if event.get("type") == "hello" and self.hello and not self.hello.done():
                self.hello.set_result(None)
            elif event.get("type") == "message":
                self.events += 1

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._task is not None:
            self._task.cancel()


class Watchers:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        config = Config(
            duration=args.duration,
            warmup=args.warmup,
            repeats=1,
            concurrency=[args.concurrency],
            workloads=["a"],
            survey_users=0,
            soak=0,
            live=0,
            mongodb_uri="",
            out=Path(tempfile.gettempdir()),
            keep=args.keep,
            event_loop=args.event_loop,
        )
        # bench/run.py's set-up (embedded database, pinning, keys, environment), not its servers.
        self.bench = Bench(config)
        self.services: list[Server] = []
        self.sockets: list[tuple[int, Socket]] = []
        self.owner = ("watch", secrets.token_urlsafe(18))
        self.rows: list[dict[str, Any]] = []

    def start(self) -> None:
        bench = self.bench
        bench.config.workloads = []  # only the embedded database: no reference, no --no-store
        from service.embedded import EmbeddedDatabase

        bench.embedded = EmbeddedDatabase(bench.tmp / "secantus", log_path=bench.tmp / "db.log")
        bench.embedded.start()
        assert bench.embedded.process is not None
        if bench.db_cpus:
            pin_threads(bench.embedded.process.pid, bench.db_cpus)
        for index in range(self.args.processes):
            port = free_port()
            data_dir = bench.tmp / f"service-{index}"
            data_dir.mkdir()
            env = bench.service_env("wechat_survey_watchers", data_dir, bench.embedded.uri)
            server = Server(
                f"service {index}",
                [sys.executable, "-m", "service", "serve", "--port", str(port)],
                env,
                port,
                bench.tmp / f"service-{index}.log",
                bench.server_cpus,
            )
            server.start()
            self.services.append(server)
        for server in self.services:
            server.wait_ready(bench.side)
        bench.servers["store"] = self.services[0]  # bench.spec() aims workload (a) at it
        name, password = self.owner
        done = subprocess.run(
            [sys.executable, "-m", "service", "create-owner", name, "--password-stdin"],
            input=password + "\n",
            env=self.services[0].env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"create-owner failed: {done.stderr or done.stdout}")
        log(f"{len(self.services)} services on one embedded database (logs in {bench.tmp})")

    def stop(self) -> None:
        for server in self.services:
            server.stop()
        if self.bench.embedded is not None:
            self.bench.embedded.stop()
        if not self.args.keep:
            shutil.rmtree(self.bench.tmp, ignore_errors=True)

    async def watch(self, process: int) -> None:
        sock = Socket(self.services[process].port)
        await sock.open(*self.owner)
        self.sockets.append((process, sock))

    async def cell(self, watchers: int) -> dict[str, Any]:
        bench = self.bench
        watching = sorted({p for p, _ in self.sockets})
        spec = bench.spec("a", self.args.concurrency, watchers)
        spec["openid_prefix"] = f"sim-watch-{watchers}-"
        load = await asyncio.create_subprocess_exec(
            *pinned([sys.executable, str(BENCH / "load.py")], bench.load_cpus),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        assert load.stdin is not None and load.stdout is not None
        load.stdin.write((json.dumps(spec) + "\n").encode())
        await load.stdin.drain()
        db_pid = bench.embedded.process.pid  # type: ignore[union-attr]
        before: dict[str, Any] = {}
        after: dict[str, Any] = {}
        result: dict[str, Any] = {}

        def snapshot() -> dict[str, Any]:
            return {
                "db_cpu": cpu_seconds(db_pid),
                "cpu": [cpu_seconds(s.pid) for s in self.services],
                "commands": [db_commands(s, bench.metrics_token) or {} for s in self.services],
                "events": [sock.events for _, sock in self.sockets],
            }

        while True:
            line = await load.stdout.readline()
            if not line:
                break
            message = json.loads(line)
            if message["event"] == "window-start":
                before = await asyncio.to_thread(snapshot)
            elif message["event"] == "window-end":
                after = await asyncio.to_thread(snapshot)
            elif message["event"] == "result":
                result = message
                break
            load.stdin.write(b"ack\n")
            await load.stdin.drain()
        load.stdin.close()
        if await load.wait() != 0 or not result:
            raise SystemExit("load process failed")
        requests = max(1, result["requests"])
        # Every socket gets every message of the window: wait for the last ones to arrive.
        deadline = time.monotonic() + 10
        expected = [b + result["requests"] for b in before["events"]]
        while time.monotonic() < deadline:
            if all(s.events >= e for (_, s), e in zip(self.sockets, expected, strict=True)):
                break
            await asyncio.sleep(0.05)
        missing = sum(
            max(0, e - s.events) for (_, s), e in zip(self.sockets, expected, strict=True)
        )

        def per_msg(index: int, command: str | None = None) -> float:
            a, b = after["commands"][index], before["commands"][index]
            if command is None:
                total = sum(a.values()) - sum(b.values())
            else:
                total = a.get(command, 0) - b.get(command, 0)
            return round(total / requests, 3)

        others = [i for i in watching if i != 0]
        row = {
            "watching_processes": watchers,
            "sockets": len(self.sockets),
            "requests": result["requests"],
            "rps": result["rps"],
            "p99_ms": result["p99_ms"],
            "errors": result["errors"],
            "missing_events": missing,
            "db_cpu_us_per_msg": round((after["db_cpu"] - before["db_cpu"]) * 1e6 / requests, 1),
            "service_cpu_us_per_msg": round(
                (after["cpu"][0] - before["cpu"][0]) * 1e6 / requests, 1
            ),
            "watcher_cpu_us_per_msg": (
                round(
                    sum(after["cpu"][i] - before["cpu"][i] for i in others)
                    * 1e6
                    / requests
                    / len(others),
                    1,
                )
                if others
                else None
            ),
            "db_ops_per_msg_service": per_msg(0),
            "getmore_per_msg": [per_msg(i, "getMore") for i in range(len(self.services))],
            "aggregate_in_window": [
                after["commands"][i].get("aggregate", 0) - before["commands"][i].get("aggregate", 0)
                for i in range(len(self.services))
            ],
            "streams_opened": [c.get("aggregate", 0) for c in after["commands"]],
        }
        log(
            f"  {watchers} watching, {len(self.sockets)} socket(s): {row['rps']} req/s, "
            f"DB CPU {row['db_cpu_us_per_msg']} us/msg, getMore/msg {row['getmore_per_msg']}, "
            f"missing {missing}"
        )
        return row

    async def run(self) -> list[dict[str, Any]]:
        counts = sorted({int(w) for w in self.args.watchers.split(",")})
        for watchers in counts:
            for process in range(watchers):
                if process not in {p for p, _ in self.sockets}:
                    await self.watch(process)
            if watchers and self.args.sockets > 1:
                while sum(1 for p, _ in self.sockets if p == 0) < self.args.sockets:
                    await self.watch(0)
            await asyncio.sleep(1)  # the streams are open (hello) and past their first getMore
            for _ in range(self.args.repeats):
                self.rows.append(await self.cell(watchers))
        for _, sock in self.sockets:
            sock.close()
        self.sockets.clear()
        return self.rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| processes watching | sockets | req/s | DB CPU µs/msg | service CPU µs/msg "
        "| a watcher's CPU µs/msg | getMore per msg (each process) | DB ops/msg (service) "
        "| missing events | errors |",
        "|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        watcher = "–" if r["watcher_cpu_us_per_msg"] is None else f"{r['watcher_cpu_us_per_msg']}"
        lines.append(
            f"| {r['watching_processes']} | {r['sockets']} | {r['rps']:.0f} "
            f"| {r['db_cpu_us_per_msg']:.0f} | {r['service_cpu_us_per_msg']:.0f} | {watcher} "
            f"| {', '.join(map(str, r['getmore_per_msg']))} | {r['db_ops_per_msg_service']} "
            f"| {r['missing_events']} | {r['errors']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--watchers", default="0,1,2,4", help="watching process counts")
    p.add_argument("--processes", type=int, default=4, help="service processes started")
    p.add_argument("--sockets", type=int, default=3, help="WebSockets on the first process")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--event-loop", default="auto", choices=("auto", "uvloop", "asyncio"))
    p.add_argument("--out", type=Path)
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)
    if max(int(w) for w in args.watchers.split(",")) > args.processes:
        p.error("--watchers cannot exceed --processes")
    watchers = Watchers(args)
    try:
        watchers.start()
        rows = asyncio.run(watchers.run())
    finally:
        watchers.stop()
    report = {
        "started_at": watchers.bench.stamp,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "pinning": {
            "servers": watchers.bench.server_cpus,
            "database": watchers.bench.db_cpus,
            "load": watchers.bench.load_cpus,
        },
        "rows": rows,
    }
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(markdown(rows))
    log(f"load average {report['load_average']}")
    errors = sum(r["errors"] + r["missing_events"] for r in rows)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
