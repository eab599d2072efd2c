import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.settings import ConfigError, Settings, expand_env, load_settings

GOOD_MASTER_KEY = "Zq8vN3xK7pL2mR9tW4yB6cD1"  # 24 characters, 24 distinct
UPSTREAM_KEY = "ark-secret-0123456789abcdef"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read the process environment: start every test without Seedgate variables."""
    for name in list(os.environ):
        if name.startswith(("SEEDGATE_", "UPSTREAM_", "SG_TEST_")):
            monkeypatch.delenv(name)


def write_config(tmp_path: Path, data: dict[str, Any] | str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def config(**sections: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "admin": {"master_key": GOOD_MASTER_KEY},
        "upstreams": [{"name": "ark", "base_url": "http://127.0.0.1:9/api/v3", "api_key": UPSTREAM_KEY}],
        "models": [{"id": "m", "upstream": "ark", "price": {"input": "0.1", "output": "0.2"}}],
    }
    base.update(sections)
    return base


def test_yaml_values_are_loaded(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path, config(server={"port": 9123})))
    assert settings.server.port == 9123
    assert settings.upstreams[0].base_url == "http://127.0.0.1:9/api/v3"
    assert settings.upstreams[0].api_key.get_secret_value() == UPSTREAM_KEY
    assert settings.models[0].price.input == Decimal("0.1")
    assert not settings.demo_mode


def test_env_references_in_yaml_are_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SG_TEST_HOST", "127.0.0.2")
    monkeypatch.setenv("SG_TEST_EMPTY", "")
    text = f"""
server:
  host: ${{SG_TEST_HOST}}
  port: ${{SG_TEST_UNSET_PORT:-8123}}
  instance_id: ${{SG_TEST_EMPTY:-fallback}}
admin:
  master_key: {GOOD_MASTER_KEY}
database:
  url: sqlite+aiosqlite:///${{SG_TEST_UNSET_DIR:-/tmp}}/x.db
"""
    settings = load_settings(write_config(tmp_path, text))
    assert settings.server.host == "127.0.0.2"
    assert settings.server.port == 8123
    assert settings.server.instance_id == "fallback"  # empty counts as unset, like the shell's :-
    assert settings.database.url == "sqlite+aiosqlite:////tmp/x.db"


def test_expand_env_walks_lists_and_mappings_and_leaves_other_values() -> None:
    tree = {"a": ["${X}", {"b": "pre-${Y:-dflt}-post"}], "n": 5, "none": None, "missing": "${NOPE}"}
    assert expand_env(tree, {"X": "x-value"}) == {
        "a": ["x-value", {"b": "pre-dflt-post"}],
        "n": 5,
        "none": None,
        "missing": "",
    }


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEEDGATE_SERVER__PORT", "9555")
    settings = load_settings(write_config(tmp_path, config(server={"port": 9123, "host": "127.0.0.3"})))
    assert settings.server.port == 9555
    assert settings.server.host == "127.0.0.3"  # the rest of the section still comes from the file


def test_master_key_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = config()
    del data["admin"]
    monkeypatch.setenv("SEEDGATE_ADMIN__MASTER_KEY", GOOD_MASTER_KEY)
    settings = load_settings(write_config(tmp_path, data))
    assert settings.admin.master_key.get_secret_value() == GOOD_MASTER_KEY


def test_secrets_never_show_in_repr(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path, config()))
    text = repr(settings) + str(settings.model_dump())
    assert GOOD_MASTER_KEY not in text
    assert UPSTREAM_KEY not in text


def test_invalid_yaml_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(write_config(tmp_path, "server: [unclosed\n  port: 1"))


def test_top_level_list_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(write_config(tmp_path, "- a\n- b\n"))


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "absent.yaml")


def test_model_naming_an_unknown_upstream_is_refused(tmp_path: Path) -> None:
    data = config(models=[{"id": "m", "upstream": "nowhere", "price": {"input": 1, "output": 1}}])
    with pytest.raises(ConfigError, match="unknown upstream 'nowhere'"):
        load_settings(write_config(tmp_path, data))


def test_two_upstreams_with_one_name_are_refused(tmp_path: Path) -> None:
    upstream = {"name": "ark", "base_url": "http://127.0.0.1:9"}
    with pytest.raises(ConfigError, match="share a name"):
        load_settings(write_config(tmp_path, config(upstreams=[upstream, upstream])))


@pytest.mark.parametrize(
    ("extra", "where"),
    [
        ({"surprise": 1}, "surprise"),
        ({"server": {"port": 8000, "prot": 1}}, "server.prot"),
        ({"billing": {"hold_ttl": 5}}, "billing.hold_ttl"),
    ],
)
def test_unknown_fields_are_refused(tmp_path: Path, extra, where) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write_config(tmp_path, config(**extra)))
    assert where in str(info.value)


def test_wrong_types_are_refused_with_the_field_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"server\.port"):
        load_settings(write_config(tmp_path, config(server={"port": "eighty"})))


def test_non_http_base_url_is_refused(tmp_path: Path) -> None:
    data = config(upstreams=[{"name": "ark", "base_url": "file:///etc/passwd"}])
    with pytest.raises(ConfigError, match="base_url"):
        load_settings(write_config(tmp_path, data))


@pytest.mark.parametrize(
    "key",
    [
        "short-Key-123",  # under 24 characters
        "change-me-change-me-change-me-0123",  # placeholder
        "this-is-an-EXAMPLE-master-key-1234",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",  # long but hardly random
    ],
)
def test_weak_master_keys_are_refused(tmp_path: Path, key) -> None:
    with pytest.raises(ConfigError, match="master_key") as info:
        load_settings(write_config(tmp_path, config(admin={"master_key": key})))
    assert key not in str(info.value)


def test_missing_master_key_is_refused_outside_demo_mode(tmp_path: Path) -> None:
    data = config()
    del data["admin"]
    with pytest.raises(ConfigError, match="master_key is not set"):
        load_settings(write_config(tmp_path, data))


def test_missing_master_key_is_allowed_in_demo_mode(tmp_path: Path) -> None:
    data = config(upstreams=[{"name": "ark", "base_url": "http://127.0.0.1:9"}])  # no api_key: demo mode
    del data["admin"]
    settings = load_settings(write_config(tmp_path, data))
    assert settings.demo_mode
    assert settings.admin.master_key.get_secret_value() == ""


def test_explicit_demo_flag_wins_over_the_upstream_keys(tmp_path: Path) -> None:
    data = config(demo=True)
    del data["admin"]
    assert load_settings(write_config(tmp_path, data)).demo_mode
    data = config(demo=False, upstreams=[{"name": "ark", "base_url": "http://127.0.0.1:9"}])
    del data["admin"]
    with pytest.raises(ConfigError, match="master_key is not set"):
        load_settings(write_config(tmp_path, data))


def test_keyword_overrides_apply_on_top_of_the_file(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path, config()), server={"port": 9777})
    assert settings.server.port == 9777


def test_example_config_loads_in_demo_mode_with_the_doubao_catalog() -> None:
    settings = load_settings("config.example.yaml")
    assert settings.demo_mode
    assert settings.server.port == 8000
    assert [u.name for u in settings.upstreams] == ["ark"]
    prices = {m.id: (m.price.input, m.price.output) for m in settings.models}
    assert len(prices) == 4
    assert prices["doubao-seed-2.0-mini"] == (Decimal("0.14"), Decimal("0.69"))
    assert prices["doubao-seed-2.0-lite"] == (Decimal("0.39"), Decimal("1.99"))
    assert prices["doubao-seed-2.0-code"] == (Decimal("1.49"), Decimal("6.99"))
    assert "doubao-seed-2.0-pro" in prices
    assert all(m.upstream_model and m.upstream_model.endswith("-260215") for m in settings.models)


def test_example_config_with_an_upstream_key_requires_a_master_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTREAM_API_KEY", UPSTREAM_KEY)
    with pytest.raises(ConfigError, match="master_key is not set"):
        load_settings("config.example.yaml")
    monkeypatch.setenv("SEEDGATE_ADMIN_KEY", GOOD_MASTER_KEY)
    settings = load_settings("config.example.yaml")
    assert not settings.demo_mode
    assert settings.upstreams[0].api_key.get_secret_value() == UPSTREAM_KEY


def test_settings_without_a_file_use_defaults() -> None:
    settings = Settings()
    assert settings.server.host == "127.0.0.1"
    assert settings.models == []
    assert settings.demo_mode


def test_checkpoints_rarer_than_a_third_of_the_lease_are_refused() -> None:
    with pytest.raises(ValueError, match="at most a third of hold_ttl_seconds"):
        Settings(billing={"hold_ttl_seconds": 2, "checkpoint_interval_seconds": 1})
    assert Settings(billing={"hold_ttl_seconds": 3, "checkpoint_interval_seconds": 1}).billing.hold_ttl_seconds == 3


def test_an_instance_id_longer_than_a_hold_owner_may_be_is_refused() -> None:
    with pytest.raises(ValueError, match="at most 48 characters"):
        Settings(server={"instance_id": "i" * 49})
    assert Settings(server={"instance_id": "i" * 48}).server.instance_id == "i" * 48
