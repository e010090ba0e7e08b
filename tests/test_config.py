from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.config import ENV_VARS, ConfigError, Settings

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
