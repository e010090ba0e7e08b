"""The embedded default database: a SecantusDB server run as a child process.

SecantusDB is GPL-2.0, so it is only ever started as a separate program (``secantusd-py``) and
spoken to over the MongoDB wire protocol; nothing here imports it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["EmbeddedDatabase", "EmbeddedDatabaseError", "free_port", "running_uri"]

log = logging.getLogger(__name__)


class EmbeddedDatabaseError(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _executable() -> str:
    candidate = Path(sys.executable).with_name("secantusd-py")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("secantusd-py")
    if not found:
        raise EmbeddedDatabaseError(
            "the embedded database is not installed: pip install 'wechat-survey[embedded]' "
            "(or set MONGODB_URI to a MongoDB server)"
        )
    return found


def _state_file(storage_path: Path) -> Path:
    return storage_path.with_name(storage_path.name + ".json")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_uri(storage_path: Path) -> str | None:
    """The URI of a server already running on ``storage_path`` (started by ``serve``), if any.

    One process owns a storage folder; command-line tools (``create-owner``, ``media upload``)
    use this to talk to the running service's database instead of starting a second server.
    """
    try:
        state = json.loads(_state_file(storage_path).read_text(encoding="utf-8"))
        pid, host, port = int(state["pid"]), str(state["host"]), int(state["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _alive(pid):
        return None
    try:
        with socket.create_connection((host, port), timeout=0.5):
            pass
    except OSError:
        return None
    return f"mongodb://{host}:{port}/?retryWrites=false&directConnection=true"


class EmbeddedDatabase:
    """Start ``secantusd-py`` on loopback; ``uri`` is ready to hand to ``AsyncMongoClient``.

    ``storage_path=None`` keeps everything in memory (tests); otherwise data survives restarts.
    """

    def __init__(
        self,
        storage_path: Path | None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.storage_path = storage_path
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        # retryWrites=false: SecantusDB slows down badly after ~10k retryable writes.
        return f"mongodb://{self.host}:{self.port}/?retryWrites=false&directConnection=true"

    def start(self, timeout: float = 30.0) -> None:
        storage = ":memory:"
        if self.storage_path is not None:
            self.storage_path.mkdir(parents=True, exist_ok=True)
            storage = str(self.storage_path)
        args = [
            _executable(),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--storage-path",
            storage,
            "--log-level",
            "WARNING",
        ]
        output: Any = subprocess.DEVNULL
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            output = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        log.info("starting embedded database on %s:%d (%s)", self.host, self.port, storage)
        self.process = subprocess.Popen(  # noqa: S603 - fixed argument list
            args,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C in the terminal reaches us, not it
        )
        if output is not subprocess.DEVNULL:
            output.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmbeddedDatabaseError(
                    f"secantusd-py exited with code {self.process.returncode} during start-up"
                    + (f"; see {self.log_path}" if self.log_path else "")
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    self._write_state()
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise EmbeddedDatabaseError(f"secantusd-py did not open port {self.port} in {timeout}s")

    def _write_state(self) -> None:
        if self.storage_path is None or self.process is None:
            return
        state = {"pid": self.process.pid, "host": self.host, "port": self.port}
        _state_file(self.storage_path).write_text(json.dumps(state), encoding="utf-8")

    def stop(self, timeout: float = 20.0) -> None:
        process, self.process = self.process, None
        if self.storage_path is not None and process is not None:
            with contextlib.suppress(OSError):
                _state_file(self.storage_path).unlink()
        if process is None or process.poll() is not None:
            return
        log.info("stopping embedded database (pid %d)", process.pid)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("embedded database did not stop in %ss; killing it", timeout)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> EmbeddedDatabase:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
