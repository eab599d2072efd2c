"""The CLI as a new operator meets it: no master key needed for database commands, a one-line error for a
missing or unmigrated database (and no stray file), readable tables, ``--json``, and a streamed CSV."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from app.cli import main
from app.fake_upstream import FakeUpstreamThread
from tests.support.gateway import GatewayProcess, api_client, base_config, chat_body

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    """``seedgate ARGS --config CONFIG`` in this process (a subprocess costs seconds of imports)."""
    for name in list(os.environ):
        if name.startswith("SEEDGATE_") and not name.startswith("SEEDGATE_TEST_"):
            monkeypatch.delenv(name)

    def invoke(*args: str, config: Path, cwd: Path | None = None) -> tuple[int, str, str]:
        if cwd is not None:
            monkeypatch.chdir(cwd)
        capsys.readouterr()
        code = main([*args, "--config", str(config)])
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def keyless_config(tmp_path: Path, db: Path) -> Path:
    config = base_config("http://127.0.0.1:9/v1", f"sqlite+aiosqlite:///{db}")
    config["admin"] = {"master_key": ""}  # not demo mode (the upstream has a key): `serve` would refuse
    path = tmp_path / "keyless.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_database_commands_need_no_master_key(tmp_path: Path, run: Run) -> None:
    config = keyless_config(tmp_path, tmp_path / "ops.db")
    assert run("db", "upgrade", config=config)[0] == 0
    code, _, err = run("keys", "create", "--name", "ops", "--balance", "1", "--json", config=config)
    assert code == 0, err
    code, out, err = run("keys", "list", config=config)
    assert code == 0, err
    assert "ops" in out
    code, _, err = run("serve", config=config)
    assert code == 2
    assert "master_key" in err


def test_a_missing_database_is_one_line_naming_the_fix_and_no_file_is_created(tmp_path: Path, run: Run) -> None:
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    db = tmp_path / "data" / "missing.db"
    code, _, err = run("keys", "list", config=keyless_config(tmp_path, db), cwd=workdir)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert "does not exist" in lines[0]
    assert "seedgate db upgrade" in lines[0]
    assert not db.exists()
    assert not db.parent.exists()
    assert list(workdir.iterdir()) == []


def test_an_unmigrated_database_is_one_line_naming_the_fix(tmp_path: Path, run: Run) -> None:
    db = tmp_path / "empty.db"
    sqlite3.connect(db).close()
    code, _, err = run("usage", config=keyless_config(tmp_path, db))
    assert code == 2
    assert err.count("\n") == 1
    assert "no Seedgate schema" in err
    assert "seedgate db upgrade" in err


def test_lists_are_tables_and_json_stays_machine_readable(gateway: GatewayProcess, run: Run) -> None:
    key_id, _ = gateway.create_key("3", name="table me")
    header, rule, *rows = run("keys", "list", config=gateway.config_path)[1].splitlines()
    assert header.split()[:4] == ["id", "name", "key_hint", "balance_usd"]
    assert set(rule.replace(" ", "")) == {"-"}
    assert any(row.startswith(key_id) and "table me" in row for row in rows)
    shown = run("keys", "show", key_id, config=gateway.config_path)[1]
    assert any(line.split()[:2] == ["balance_usd", "3.00"] for line in shown.splitlines())
    data = json.loads(run("keys", "list", "--json", config=gateway.config_path)[1])
    assert key_id in {k["id"] for k in data}


def test_usage_csv_streams_the_selected_rows(gateway: GatewayProcess, fake: FakeUpstreamThread, run: Run) -> None:
    key_id, key = gateway.create_key("3")
    other_id, other = gateway.create_key("3")
    with api_client(gateway, key) as http, api_client(gateway, other) as http_other:
        for _ in range(3):
            assert http.post("/v1/chat/completions", json=chat_body()).status_code == 200
        assert http_other.post("/v1/chat/completions", json=chat_body()).status_code == 200
    code, exported, err = run("usage", "--csv", "--key-id", key_id, config=gateway.config_path)
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert len(rows) == 3
    assert {r["key_id"] for r in rows} == {key_id}
    assert {r["status"] for r in rows} == {"ok"}
    with gateway.admin() as admin:
        over_http = admin.get("/admin/usage.csv", params={"key_id": key_id})
    assert over_http.headers["content-type"].startswith("text/csv")
    assert over_http.text == exported
    assert other_id not in exported
    code, _, err = run("usage", "--csv", "--since", "last week", config=gateway.config_path)
    assert code == 2
    assert "since" in err
