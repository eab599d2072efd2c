"""The ``seedgate`` command line against a running gateway's database, and start-up refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from app.cli import main
from app.fake_upstream import FakeUpstreamThread
from tests.support.gateway import GatewayProcess, api_client, base_config, chat_body, error_of, free_port, wait_until

# a stray SEEDGATE_* variable of the developer's shell would override the file under test
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("SEEDGATE_") or k.startswith("SEEDGATE_TEST_")}


def seedgate(*args: str, config: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=CLEAN_ENV,
        timeout=30,
        check=False,
    )


def ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def cli(gateway: GatewayProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return seedgate(*args, config=gateway.config_path, cwd=gateway.workdir)


def test_keys_create_prints_json_with_a_key_the_gateway_accepts(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    created = ok_json(cli(gateway, "keys", "create", "--name", "x", "--balance", "2", "--json"))
    assert created["id"].startswith("key_")
    assert created["key"].startswith("sk-")
    assert created["balance_usd"] == "2.00"
    with api_client(gateway, created["key"]) as http:
        assert http.post("/v1/chat/completions", json=chat_body()).status_code == 200
    assert gateway.key(created["id"])["name"] == "x"


def test_keys_create_takes_the_key_settings(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    created = ok_json(
        cli(
            gateway,
            *("keys", "create", "--name", "limited", "--balance", "0.5", "--json"),
            *("--models", "doubao-seed-2-0-mini", "--rpm", "7", "--tpm", "9000", "--monthly-quota", "3"),
            *("--expires-at", "2099-12-31T00:00:00Z"),
        )
    )
    assert created["models"] == ["doubao-seed-2.0-mini"]
    assert (created["rpm"], created["tpm"], created["monthly_quota_usd"]) == (7, 9000, "3.00")
    assert created["expires_at"].startswith("2099-12-31")
    with api_client(gateway, created["key"]) as http:
        error_of(http.post("/v1/chat/completions", json=chat_body()), 403)


def test_keys_create_without_json_shows_the_key_once(gateway: GatewayProcess) -> None:
    result = cli(gateway, "keys", "create", "--name", "human", "--balance", "1")
    assert result.returncode == 0, result.stderr
    keys = [word for word in result.stdout.split() if word.startswith("sk-")]
    assert len(keys) == 1
    assert result.stdout.count(keys[0]) == 1


def test_keys_list_show_topup_usage_and_revoke(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    created = ok_json(cli(gateway, "keys", "create", "--name", "cycle", "--balance", "2", "--json"))
    key_id, key = created["id"], created["key"]
    fake.enqueue({"usage": {"prompt_tokens": 1000, "completion_tokens": 1000}})
    with api_client(gateway, key) as http:
        request_id = http.post("/v1/chat/completions", json=chat_body()).headers["x-request-id"]

    listed = ok_json(cli(gateway, "keys", "list", "--json"))
    assert key_id in {k["id"] for k in listed}
    assert key not in json.dumps(listed)
    shown = ok_json(cli(gateway, "keys", "show", key_id, "--json"))
    assert shown["balance_usd"] == "1.99716"  # 2 - (1000 * 0.47 + 1000 * 2.37) / 1M
    assert "key" not in shown
    topped = ok_json(cli(gateway, "keys", "topup", key_id, "0.00284", "--json"))
    assert topped["balance_usd"] == "2.00"
    assert gateway.key(key_id)["balance_usd"] == "2.00"
    [row] = ok_json(cli(gateway, "usage", "--key-id", key_id, "--json"))
    assert (row["request_id"], row["cost_usd"]) == (request_id, "0.00284")

    revoked = ok_json(cli(gateway, "keys", "revoke", key_id, "--json"))
    assert revoked["revoked"] is True
    with api_client(gateway, key) as http:
        # another process revoked it: the gateway's auth cache (2 s) may answer a little longer

        def refused() -> httpx.Response | None:
            response = http.post("/v1/chat/completions", json=chat_body())
            return response if response.status_code == 401 else None

        error_of(wait_until(refused, timeout=4, interval=0.25), 401)
    assert gateway.ledger()["balanced"] is True


# The refusals below run ``app.cli.main`` (what the console script calls) in-process: a new
# interpreter per case would cost a second each for the same code path.
@pytest.mark.parametrize(
    "args",
    [("keys", "show", "key_missing"), ("keys", "topup", "key_missing", "1"), ("keys", "revoke", "key_missing")],
    ids=["show", "topup", "revoke"],
)
def test_unknown_key_id_exits_non_zero(
    gateway: GatewayProcess, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    assert main([*args, "--config", str(gateway.config_path)]) == 1
    assert "key_missing" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [("--balance", "-1"), ("--balance", "0.0000000000001"), ("--models", "gpt-nope")],
    ids=["negative", "fine", "model"],
)
def test_invalid_key_settings_exit_non_zero(
    gateway: GatewayProcess, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    with gateway.admin() as admin:
        before = len(admin.get("/admin/keys").json()["data"])
        assert main(["keys", "create", "--name", "bad", *args, "--config", str(gateway.config_path)]) == 2
        after = len(admin.get("/admin/keys").json()["data"])
    out, err = capsys.readouterr()
    assert err.strip()
    assert "sk-" not in out
    assert after == before


def _config(tmp_path: Path, fake: FakeUpstreamThread, change: dict[str, Any]) -> Path:
    config = base_config(fake.url, f"sqlite+aiosqlite:///{tmp_path}/refused.db")
    config["server"]["port"] = free_port()
    for section, value in change.items():
        config[section] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _models_with(**extra: Any) -> list[dict[str, Any]]:
    models: list[dict[str, Any]] = base_config("http://127.0.0.1:1/v1", "sqlite://")["models"]
    return [{**models[0], **extra}, models[1]]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"models": _models_with(upstream="nowhere")}, "nowhere"),
        ({"models": _models_with(aliases=["doubao-seed-2.0-mini"])}, "doubao-seed-2.0-mini"),
        ({"models": _models_with(aliases=["Doubao-Seed-2-0-Mini-260215"])}, "claim"),
        ({"admin": {"master_key": "short"}}, "master_key"),
        ({"admin": {"master_key": "change-me-change-me-change-me-123"}}, "master_key"),
        ({"server": {"port": "eighty"}}, "server.port"),
    ],
    ids=["unknown-upstream", "duplicate-alias", "duplicate-normal-form", "short-master", "example-master", "bad-type"],
)
def test_serve_refuses_an_invalid_config_with_a_clear_message(
    tmp_path: Path, fake: FakeUpstreamThread, change: dict[str, Any], reason: str
) -> None:
    result = seedgate("serve", config=_config(tmp_path, fake, change), cwd=tmp_path)
    assert result.returncode != 0
    assert reason in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "refused.db").exists()  # refused before touching anything
