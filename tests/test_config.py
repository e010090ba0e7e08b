from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.config import ENV_VARS, NO_TOKEN, ConfigError, Settings

ROOT = Path(__file__).resolve().parents[1]


def test_every_setting_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", readme, flags=re.MULTILINE))
    missing = set(ENV_VARS) - documented
    assert not missing, f"settings missing from README.md's table: {sorted(missing)}"
    unknown = documented - set(ENV_VARS)
    assert not unknown, f"README.md documents settings that do not exist: {sorted(unknown)}"


def test_every_env_var_maps_to_a_field():
    fields = set(Settings.__dataclass_fields__)
    for name, (field, _kind) in ENV_VARS.items():
        assert field in fields, name


def test_from_env_reads_types():
    s = Settings.from_env(
        {
            "WECHAT_TOKEN": "t",
            "PORT": "9001",
            "REPLY_BUDGET": "2.5",
            "XHEADERS": "no",
            "DATA_DIR": "/srv/x",
            "UNRELATED": "ignored",
        }
    )
    assert (s.port, s.reply_budget, s.xheaders, str(s.data_dir)) == (9001, 2.5, False, "/srv/x")
    assert s.embedded_db


def test_config_file_and_environment_precedence(tmp_path):
    f = tmp_path / "env"
    f.write_text(
        '# comment\nWECHAT_TOKEN=from-file\nexport MONGODB_DB="filedb"\n', encoding="utf-8"
    )
    s = Settings.from_env({"MONGODB_DB": "envdb"}, config_file=f)
    assert s.wechat_token == "from-file"
    assert s.mongodb_db == "envdb"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "WECHAT_TOKEN"),
        ({"WECHAT_TOKEN": "t", "WECHAT_ENCODING_AES_KEY": "short", "WECHAT_APP_ID": "a"}, "43"),
        ({"WECHAT_TOKEN": "t", "WECHAT_ENCODING_AES_KEY": "a" * 43}, "WECHAT_APP_ID"),
        ({"WECHAT_TOKEN": "t", "PORT": "eighty"}, "PORT"),
        ({"WECHAT_TOKEN": "t", "XHEADERS": "maybe"}, "XHEADERS"),
        ({"WECHAT_TOKEN": "t", "REPLY_BUDGET": "6"}, "REPLY_BUDGET"),
    ],
)
def test_bad_settings_name_the_problem(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_tools_read_settings_without_a_token(tmp_path):
    """Command-line tools that never check a signature: no WECHAT_TOKEN is fine, the rest is read
    (and checked) as usual."""
    f = tmp_path / "env"
    f.write_text("MONGODB_DB=filedb\nWECHAT_TOKEN=\n", encoding="utf-8")
    s = Settings.from_env({"PORT": "9001"}, config_file=f, require_token=False)
    assert (s.wechat_token, s.has_token) == (NO_TOKEN, False)
    assert (s.mongodb_db, s.port) == ("filedb", 9001)
    with pytest.raises(ConfigError, match="WECHAT_TOKEN"):
        Settings.from_env({"PORT": "9001"}, config_file=f)  # the service itself needs one
    given = Settings.from_env({"WECHAT_TOKEN": "t"}, require_token=False)
    assert (given.wechat_token, given.has_token) == ("t", True)
    with pytest.raises(ConfigError, match="PORT"):
        Settings.from_env({"PORT": "eighty"}, require_token=False)
    with pytest.raises(ConfigError, match="43"):
        Settings.from_env({"WECHAT_ENCODING_AES_KEY": "short"}, require_token=False)


def test_serve_dev_fills_a_development_token(tmp_path, monkeypatch):
    import argparse

    from service.server import load_settings

    for name in [*ENV_VARS, "WECHAT_SURVEY_CONFIG"]:
        monkeypatch.delenv(name, raising=False)
    env = tmp_path / "env"
    env.write_text(f"DATA_DIR={tmp_path / 'data'}\n", encoding="utf-8")
    args = argparse.Namespace(config=str(env))
    with pytest.raises(ConfigError, match="WECHAT_TOKEN"):
        load_settings(args)
    first = load_settings(args, dev=True)
    assert first.has_token and first.wechat_token != NO_TOKEN
    assert load_settings(args, dev=True).wechat_token == first.wechat_token  # kept under DATA_DIR
    assert (tmp_path / "data" / "dev-token").read_text(encoding="utf-8").strip() == (
        first.wechat_token
    )


# -- the /wechat endpoint's settings (issue 14) -------------------------------------------------

KEYED = {"WECHAT_TOKEN": "t", "WECHAT_APP_ID": "wx1", "WECHAT_ENCODING_AES_KEY": "a" * 43}


def test_wire_settings_defaults():
    s = Settings.from_env({"WECHAT_TOKEN": "t"})
    assert (s.signature_max_age, s.idle_connection_timeout, s.body_timeout) == (300, 60.0, 10.0)
    assert s.effective_message_mode == "plain"
    assert Settings.from_env(KEYED).effective_message_mode == "safe"


def test_wire_settings_from_env():
    s = Settings.from_env(
        {
            **KEYED,
            "SIGNATURE_MAX_AGE": "60",
            "WECHAT_MESSAGE_MODE": " Compat ",
            "IDLE_CONNECTION_TIMEOUT": "30",
            "BODY_TIMEOUT": "2.5",
        }
    )
    assert (s.signature_max_age, s.idle_connection_timeout, s.body_timeout) == (60, 30.0, 2.5)
    assert s.effective_message_mode == "compat"
    plain = Settings.from_env({**KEYED, "WECHAT_MESSAGE_MODE": "plain"})
    assert plain.effective_message_mode == "plain"


@pytest.mark.parametrize(
    ("mode", "env", "words"),
    [
        ("", {"WECHAT_TOKEN": "t"}, ["plain", "plaintext"]),
        ("", KEYED, ["safe", "encrypted", "only"]),
        ("safe", KEYED, ["safe", "encrypted", "only"]),
        ("compat", KEYED, ["compat", "plaintext and encrypted"]),
        ("plain", KEYED, ["plain", "unused"]),
    ],
)
def test_the_mode_is_described_in_one_line(mode, env, words):
    text = Settings.from_env({**env, "WECHAT_MESSAGE_MODE": mode}).describe_message_mode()
    assert "\n" not in text
    for word in words:
        assert word in text


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WECHAT_TOKEN": "t", "WECHAT_MESSAGE_MODE": "safe"}, "WECHAT_ENCODING_AES_KEY"),
        ({"WECHAT_TOKEN": "t", "WECHAT_MESSAGE_MODE": "compat"}, "WECHAT_ENCODING_AES_KEY"),
        ({**KEYED, "WECHAT_MESSAGE_MODE": "aes"}, "plain, compat or safe"),
        ({"WECHAT_TOKEN": "t", "SIGNATURE_MAX_AGE": "0"}, "SIGNATURE_MAX_AGE"),
        ({"WECHAT_TOKEN": "t", "SIGNATURE_MAX_AGE": "soon"}, "SIGNATURE_MAX_AGE"),
        ({"WECHAT_TOKEN": "t", "IDLE_CONNECTION_TIMEOUT": "0"}, "IDLE_CONNECTION_TIMEOUT"),
        ({"WECHAT_TOKEN": "t", "BODY_TIMEOUT": "-1"}, "BODY_TIMEOUT"),
        ({"WECHAT_TOKEN": "t", "MAX_BODY_BYTES": str(64 * 1024 * 1024)}, "MAX_BODY_BYTES"),
    ],
)
def test_bad_wire_settings_name_the_problem(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_http_server_options():
    from service.config import http_server_options

    s = Settings.from_env(
        {"WECHAT_TOKEN": "t", "XHEADERS": "no", "IDLE_CONNECTION_TIMEOUT": "7", "BODY_TIMEOUT": "3"}
    )
    options = http_server_options(s)
    assert options == {
        "xheaders": False,
        "max_body_size": 8 * 1024 * 1024,
        "idle_connection_timeout": 7.0,
        "body_timeout": 3.0,
    }
    import tornado.httpserver

    tornado.httpserver.HTTPServer(lambda request: None, **options)  # all of them are accepted
