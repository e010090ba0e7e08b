"""Command-line tools reach the embedded database of a running ``serve`` on the same DATA_DIR."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from pymongo import MongoClient

from service.config import ENV_VARS
from service.embedded import running_uri
from tests.test_shutdown import ROOT, Service, services  # noqa: F401 - fixture

pytestmark = pytest.mark.slow


def cli(
    tmp_path,
    *args: str,
    stdin: str = "",
    python: str = sys.executable,
    **env_vars: str,
) -> subprocess.CompletedProcess[str]:
    """``python -m service ARGS`` with a clean environment (plus ``env_vars``)."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    env.update(DATA_DIR=str(tmp_path / "data"), COOKIE_SECRET="x", **env_vars)
    return subprocess.run(
        [python, "-m", "service", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_create_owner_while_the_service_runs_on_the_embedded_database(tmp_path, services):  # noqa: F811
    service = Service(tmp_path, DATA_DIR=str(tmp_path / "data"))
    services.append(service)
    service.wait_ready()
    storage = tmp_path / "data" / "secantus"
    uri = running_uri(storage)
    assert uri is not None, "serve records where its embedded database listens"

    done = cli(tmp_path, "create-owner", "alice", "--password-stdin", stdin="correct horse 42\n")
    assert done.returncode == 0, done.stderr
    again = cli(tmp_path, "create-owner", "alice", "--password-stdin", stdin="correct horse 42\n")
    assert again.returncode == 1, "the second run saw the first one's owner"

    client: MongoClient[dict[str, Any]] = MongoClient(uri)
    try:
        names = [o["_id"] for o in client["wechat_survey"]["owners"].find({}, {"_id": 1})]
    finally:
        client.close()
    assert "alice" in names
    assert service.process.poll() is None, "the running service was not disturbed"

    service.process.terminate()
    assert service.process.wait(60) == 0
    assert running_uri(storage) is None, "the state file goes away with the server"


def test_serve_on_a_taken_port_exits_with_one_clear_line(tmp_path, mongo_uri):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli(tmp_path, "serve", WECHAT_TOKEN="tok", MONGODB_URI=mongo_uri, PORT=str(port))
    assert result.returncode == 2
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert f"cannot listen on 127.0.0.1:{port}" in output
    assert "PORT" in output


def test_serve_without_the_embedded_database_installed_says_how_to_install_it(tmp_path):
    """A production install (no ``[embedded]`` extra, no MONGODB_URI) gets one clear line."""
    import site
    import sysconfig

    # An interpreter next to which there is no secantusd-py, with the same packages importable.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python = bin_dir / "python3"
    python.symlink_to(os.path.realpath(sys.executable))
    paths = [str(ROOT), sysconfig.get_paths()["purelib"], *site.getsitepackages()]
    result = cli(
        tmp_path,
        "serve",
        python=str(python),
        PATH=str(bin_dir),
        PYTHONPATH=os.pathsep.join(paths),
        WECHAT_TOKEN="tok",
        PORT="0",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    assert "pip install 'wechat-survey[embedded]'" in output
