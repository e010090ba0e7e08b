"""Helpers for the operations tests (reply budget, outages, health, shutdown, supervisord)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web

from service.wechat import Message, Reply


async def until(check: Callable[[], Any], *, timeout: float = 30.0, every: float = 0.05) -> Any:
    """Poll ``check()`` (sync or async) until it is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {check}")
        await asyncio.sleep(every)


def wait_until(check: Callable[[], Any], *, timeout: float = 30.0, every: float = 0.05) -> Any:
    """``until`` for synchronous tests (subprocesses): poll ``check()`` until it is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {check}")
        time.sleep(every)


def serve_app(
    app: tornado.web.Application, host: str = "127.0.0.1", **server_options: Any
) -> tuple[tornado.httpserver.HTTPServer, str]:
    """Serve ``app`` on a fresh port (a second process, as far as WeChat can tell)."""
    sockets = tornado.netutil.bind_sockets(0, host)
    server = tornado.httpserver.HTTPServer(app, **server_options)
    server.add_sockets(sockets)
    return server, f"http://{host}:{sockets[0].getsockname()[1]}"


async def close_app(app: tornado.web.Application) -> None:
    """What the ``app`` fixture does after a test: close the process (``Process.close``)."""
    await app.settings["process"].close()


class SlowSurvey:
    """A survey step that takes as long as the test wants: it waits for ``release``.

    This is the shape of a slow dependency (a slow database, a slow computation) as the endpoint
    sees it; it lets a test hold a reply past the budget without timing assumptions.
    """

    TRIGGER = "慢"

    def __init__(self, answer: str = "让你久等了：这是第 {n} 次计算的回复") -> None:
        self.answer = answer
        self.release = asyncio.Event()
        self.calls = 0

    def start_hint(self) -> str:
        return ""

    def might_claim(self, openid: str, text: str) -> bool:
        return text == self.TRIGGER

    def get(self, survey_id: str) -> Any:
        return None

    async def handle_text(self, db: Any, message: Message, text: str) -> Reply | None:
        if text != self.TRIGGER:
            return None
        self.calls += 1
        await asyncio.wait_for(self.release.wait(), 60)
        return Reply.text(self.answer.format(n=self.calls))


def pids_of(pattern: str) -> list[int]:
    """PIDs whose command line contains ``pattern`` (from /proc; no ps needed)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if pattern in cmdline and int(entry.name) != os.getpid():
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie has exited; it only waits for its parent to collect it.
    try:
        status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return status != "Z"


def wait_gone(pids: list[int], timeout: float = 30.0) -> list[int]:
    """Wait for ``pids`` to exit; return those still alive after ``timeout``."""
    with contextlib.suppress(AssertionError):
        wait_until(lambda: not any(alive(p) for p in pids), timeout=timeout, every=0.1)
    return [p for p in pids if alive(p)]


def kill_quietly(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
