"""supervisord with the repository's own ``supervisord.conf``: every process answers, every option
has the value we meant (supervisord silently ignores misspelled keys), and shutdown is clean.

Nothing is rewritten: the test starts ``.venv/bin/supervisord -c supervisord.conf`` and overrides
ports and paths only through the ``WECHAT_SURVEY_*`` environment variables the file reads. It runs
the single-VM layout: two service processes on the embedded database program.
"""

from __future__ import annotations

import configparser
import inspect
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import xmlrpc.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import supervisor.datatypes
import supervisor.options
from supervisor.xmlrpc import SupervisorTransport

from service.config import ENV_VARS
from service.embedded import free_port
from service.wechat_client import WeChatSide
from tests.conftest import TOKEN
from tests.ops_helpers import alive, wait_gone, wait_until

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "supervisord.conf"
BIN = Path(sys.executable).parent
PROCS = 2
MB = 1024 * 1024
pytestmark = pytest.mark.slow


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_prefix(count: int) -> str:
    """A port prefix P such that P00 .. P<count-1> are free (the file's port scheme)."""
    for _ in range(500):
        prefix = random.randint(200, 640)
        if all(_port_free(prefix * 100 + n) for n in range(count)):
            return str(prefix)
    raise AssertionError("no free port range found")


class Supervisor:
    def __init__(self, tmp_path: Path) -> None:
        # A unix socket path must stay short (108 bytes): keep run/ under a short temp dir.
        self.run_dir = Path(tempfile.mkdtemp(prefix="wsv-"))
        self.log_dir = tmp_path / "log"
        self.log_dir.mkdir()
        self.prefix = free_prefix(PROCS)
        self.ports = [int(f"{self.prefix}{n:02d}") for n in range(PROCS)]
        self.db_port = free_port()
        self.db_path = tmp_path / "secantus"
        self.config_file = tmp_path / "wechat-survey.env"
        self.config_file.write_text(
            "\n".join(
                [
                    f"WECHAT_TOKEN={TOKEN}",
                    f"MONGODB_URI=mongodb://127.0.0.1:{self.db_port}/?retryWrites=false",
                    "MONGODB_DB=wechat_survey",
                    "COOKIE_SECRET=supervisord-test-cookie-secret",
                    f"DATA_DIR={tmp_path / 'data'}",
                    "REPLY_BUDGET=4",
                ]
            )
            + "\n",
            encoding="utf-8",
        )
        self.env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
        self.env.update(
            WECHAT_SURVEY_CONFIG=str(self.config_file),
            WECHAT_SURVEY_PROCS=str(PROCS),
            WECHAT_SURVEY_PORT_PREFIX=self.prefix,
            WECHAT_SURVEY_LOG_DIR=str(self.log_dir),
            WECHAT_SURVEY_RUN_DIR=str(self.run_dir),
            WECHAT_SURVEY_DB_AUTOSTART="true",
            WECHAT_SURVEY_DB_PORT=str(self.db_port),
            WECHAT_SURVEY_DB_PATH=str(self.db_path),
        )
        self.output = tmp_path / "supervisord.out"
        with open(self.output, "wb") as out:
            self.process = subprocess.Popen(
                [str(BIN / "supervisord"), "--nodaemon", "-c", str(CONF)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.socket = self.run_dir / "supervisor.sock"

    def rpc(self, method: str, *args: Any) -> Any:
        """One XML-RPC call over the unix socket (a fresh connection each time)."""
        transport = SupervisorTransport("", "", f"unix://{self.socket}")
        try:
            proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
            return getattr(proxy.supervisor, method)(*args)
        finally:
            transport.close()

    def log(self, name: str = "supervisord.log") -> str:
        path = self.log_dir / name
        return path.read_text(errors="replace") if path.exists() else ""

    def describe(self) -> str:
        parts = [f"--- supervisord output\n{self.output.read_text(errors='replace')}"]
        parts += [f"--- {p.name}\n{p.read_text(errors='replace')}" for p in self.log_dir.iterdir()]
        return "\n".join(parts)

    def wait_running(self, timeout: float = 90.0) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"supervisord exited:\n{self.describe()}")
            try:
                infos = self.rpc("getAllProcessInfo")
            except (OSError, xmlrpc.client.Fault) as e:
                last = e
            else:
                last = {i["name"]: i["statename"] for i in infos}
                if infos and all(i["statename"] == "RUNNING" for i in infos):
                    return {i["name"]: i for i in infos}
            time.sleep(0.2)
        raise AssertionError(f"not all RUNNING in {timeout} s ({last}):\n{self.describe()}")

    def supervisorctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "supervisorctl"), "-c", str(CONF), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


@pytest.fixture
def supervisor_run(tmp_path: Path) -> Iterator[Supervisor]:
    assert (ROOT / ".venv" / "bin" / "python").exists(), "supervisord.conf runs the .venv's python"
    sup = Supervisor(tmp_path)
    yield sup
    if sup.process.poll() is None:  # the test failed half-way: stop everything it started
        sup.process.send_signal(signal.SIGTERM)
        try:
            sup.process.wait(120)
        except subprocess.TimeoutExpired:
            sup.process.kill()
            sup.process.wait()


def get_json(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, None


def wait_healthy(url: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status, body = get_json(f"{url}/healthz")
        except OSError:
            status, body = 0, None
        if status == 200:
            return dict(body)
        time.sleep(0.2)
    raise AssertionError(f"{url} not healthy in {timeout} s")


def known_program_keys() -> set[str]:
    """Every key supervisord reads in a [program:x] section (from its own parser's source)."""
    source = inspect.getsource(supervisor.options.ServerOptions._processes_from_section)
    keys = set(re.findall(r"get\(section,\s*'(\w+)'", source))
    for stream in ("stdout", "stderr"):
        for suffix in re.findall(r"'%s_(\w+)' % k", source):
            keys.add(f"{stream}_{suffix}")
    assert {"command", "stopwaitsecs", "stdout_logfile_maxbytes"} <= keys
    return keys


def known_supervisord_keys() -> set[str]:
    source = inspect.getsource(supervisor.options.ServerOptions.read_config)
    keys = set(re.findall(r"get\('(\w+)'", source))
    assert {"logfile", "pidfile", "minfds"} <= keys
    return keys


def test_every_key_in_the_file_is_one_supervisord_knows():
    parser = configparser.RawConfigParser(interpolation=None)
    parser.read(CONF)
    program_keys = known_program_keys()
    for section in parser.sections():
        keys = set(parser.options(section))
        if section.startswith("program:"):
            unknown = keys - program_keys
        elif section == "supervisord":
            unknown = keys - known_supervisord_keys()
        elif section.startswith("group:"):
            unknown = keys - {"programs", "priority"}
        elif section == "unix_http_server":
            unknown = keys - {"file", "chmod", "chown", "username", "password"}
        elif section == "supervisorctl":
            unknown = keys - {"serverurl", "username", "password", "prompt", "history_file"}
        elif section.startswith("rpcinterface:"):
            unknown = keys - {"supervisor.rpcinterface_factory"}
        else:
            raise AssertionError(f"unexpected section [{section}]")
        assert not unknown, f"[{section}] has keys supervisord ignores: {sorted(unknown)}"


@pytest.mark.parametrize("db_autostart", ["true", "false"])
def test_supervisord_parses_the_file_as_intended(monkeypatch, tmp_path, db_autostart):
    """supervisord's own parser on the file: what XML-RPC does not show (stopasgroup, ...)."""
    values = {
        "WECHAT_SURVEY_CONFIG": str(tmp_path / "wechat-survey.env"),
        "WECHAT_SURVEY_PROCS": "3",
        "WECHAT_SURVEY_PORT_PREFIX": "80",
        "WECHAT_SURVEY_LOG_DIR": str(tmp_path),
        "WECHAT_SURVEY_RUN_DIR": str(tmp_path),
        "WECHAT_SURVEY_DB_AUTOSTART": db_autostart,
        "WECHAT_SURVEY_DB_PORT": "27017",
        "WECHAT_SURVEY_DB_PATH": str(tmp_path / "secantus"),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    options = supervisor.options.ServerOptions()
    options.realize(args=["-c", str(CONF)])
    assert options.minfds == 4096
    assert options.logfile_maxbytes == 10 * MB
    assert options.logfile_backups == 5
    assert options.pidfile == str(tmp_path / "supervisord.pid")
    groups = {g.name: g for g in options.process_group_configs}
    assert sorted(groups) == ["wechat-survey", "wechat-survey-db"]
    web = groups["wechat-survey"].process_configs
    assert [p.name for p in web] == ["web_00", "web_01", "web_02"]
    assert [p.command.split("--port ")[1] for p in web] == ["8000", "8001", "8002"]
    for p in [*web, *groups["wechat-survey-db"].process_configs]:
        assert p.stopsignal == signal.SIGTERM
        assert p.stopasgroup is True
        assert p.killasgroup is True
        assert p.autorestart is supervisor.datatypes.RestartUnconditionally
        assert p.stdout_logfile_maxbytes == 20 * MB
    assert all(p.environment == {"PYTHONUNBUFFERED": "1"} for p in web)
    (database,) = groups["wechat-survey-db"].process_configs
    assert database.autostart is (db_autostart == "true")
    assert database.command.endswith(
        f"--port 27017 --storage-path {tmp_path / 'secantus'} --log-level WARNING"
    )


def test_supervisord_runs_every_process_with_the_intended_options(supervisor_run):
    sup = supervisor_run
    running = sup.wait_running()
    web = [f"web_{n:02d}" for n in range(PROCS)]
    assert sorted(running) == sorted([*web, "wechat-survey-db"])

    # Every service process answers: health, and a signed message through /wechat.
    wechat = WeChatSide(TOKEN)
    for n, port in enumerate(sup.ports):
        url = f"http://127.0.0.1:{port}"
        health = wait_healthy(url)
        assert health["database"]["ok"] is True
        assert health["pid"] == running[web[n]]["pid"]
        signed = wechat.sign(wechat.text(f"user-{n}", "hello"))
        request = urllib.request.Request(signed.url(url), data=signed.body, method="POST")  # noqa: S310
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            reply = wechat.open_reply(response.read())
        assert reply["ToUserName"] == f"user-{n}"
        assert reply["MsgType"] == "text"
        environ = Path(f"/proc/{health['pid']}/environ").read_bytes().split(b"\0")
        assert b"PYTHONUNBUFFERED=1" in environ  # environment=

    # The effective options, as supervisord understood the file.
    configs = {c["name"]: c for c in sup.rpc("getAllConfigInfo")}
    assert sorted(configs) == sorted([*web, "wechat-survey-db"])  # numprocs, process_name
    for n, name in enumerate(web):
        c = configs[name]
        assert c["group"] == "wechat-survey"
        assert f"--port {sup.ports[n]}" in c["command"]
        assert "--host 127.0.0.1" in c["command"]
        assert f"--config {sup.config_file}" in c["command"]
        assert c["command"].startswith(str(ROOT / ".venv" / "bin" / "python"))
        assert c["directory"] == str(ROOT)
        assert c["stopsignal"] == signal.SIGTERM
        assert c["stopwaitsecs"] == 40
        assert c["killasgroup"] is True  # stopasgroup is checked below, through the parser
        assert c["autostart"] is True
        assert c["startsecs"] == 3
        assert c["startretries"] == 5
        assert c["redirect_stderr"] is True
        assert c["stdout_logfile"] == str(sup.log_dir / f"{name}.log")
        assert c["stdout_logfile_maxbytes"] == 20 * MB
        assert c["stdout_logfile_backups"] == 10
        assert c["group_prio"] == 20
        assert c["process_prio"] == 20
    db = configs["wechat-survey-db"]
    assert db["group"] == "wechat-survey-db"
    assert f"--port {sup.db_port}" in db["command"]
    assert f"--storage-path {sup.db_path}" in db["command"]
    assert db["autostart"] is True  # WECHAT_SURVEY_DB_AUTOSTART
    assert db["stopsignal"] == signal.SIGTERM
    assert db["stopwaitsecs"] == 60
    assert db["killasgroup"] is True
    assert db["group_prio"] == 10  # started before the service processes, stopped after them
    assert db["stdout_logfile_maxbytes"] == 20 * MB
    assert db["stdout_logfile_backups"] == 5
    assert (sup.socket.stat().st_mode & 0o777) == 0o700  # [unix_http_server] chmod
    assert (sup.run_dir / "supervisord.pid").read_text().strip() == str(sup.process.pid)

    # autorestart: a crashed service process comes back (and answers again).
    victim = running[web[1]]["pid"]
    os.kill(victim, signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        info = sup.rpc("getProcessInfo", f"wechat-survey:{web[1]}")
        return info if info["statename"] == "RUNNING" and info["pid"] != victim else None

    info = wait_until(restarted, timeout=60, every=0.2)
    assert wait_healthy(f"http://127.0.0.1:{sup.ports[1]}")["pid"] == info["pid"]

    # Shutdown: services first (they exit 0 after a graceful stop), then the database.
    pids = [i["pid"] for i in sup.rpc("getAllProcessInfo")]
    result = sup.supervisorctl("shutdown")
    assert result.returncode == 0, result.stdout + result.stderr
    assert sup.process.wait(120) == 0
    assert wait_gone(pids) == [], "processes left behind after shutdown"
    assert not alive(sup.process.pid)
    log = sup.log()
    for name in web:
        assert f"stopped: {name} (exit status 0)" in log, sup.describe()
        assert "stopped" in sup.log(f"{name}.log").splitlines()[-1]
    assert "stopped: wechat-survey-db" in log
    assert log.index("stopped: wechat-survey-db") > max(
        log.index(f"stopped: {name}") for name in web
    )
    assert not sup.socket.exists()


def test_the_nginx_site_keeps_query_strings_out_of_its_access_log():
    """/wechat's query string is a signed URL (issue 14): a log that keeps it keeps replays."""
    site = (ROOT / "deploy" / "nginx-wechat-survey.conf").read_text(encoding="utf-8")
    formats = dict(re.findall(r"log_format\s+(\w+)\s+((?:'[^']*'\s*)+);", site))
    logs = re.findall(r"^\s*access_log\s+(\S+)(?:\s+(\w+))?\s*;", site, re.MULTILINE)
    assert logs, "the site names its access log and format"
    servers = len(re.findall(r"^server\s*\{", site, re.MULTILINE))
    assert len(logs) == servers
    for _path, name in logs:
        assert name in formats, f"access_log uses nginx's default format ({name or 'combined'})"
        for variable in ("$request ", '$request"', "$request_uri", "$args", "$query_string"):
            assert variable not in formats[name], variable
