"""The CLI as a new operator meets it: no master key needed for database commands, a one-line error for a
missing or unmigrated database (and no stray file), readable tables, ``--json``, and a streamed CSV."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path

import yaml

from app.fake_upstream import FakeUpstreamThread
from tests.e2e.test_cli import cli, seedgate
from tests.support.gateway import GatewayProcess, api_client, base_config, chat_body


def keyless_config(tmp_path: Path, db: Path) -> Path:
    config = base_config("http://127.0.0.1:9/v1", f"sqlite+aiosqlite:///{db}")
    config["admin"] = {"master_key": ""}  # not demo mode (the upstream has a key): `serve` would refuse
    path = tmp_path / "keyless.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_database_commands_need_no_master_key(tmp_path: Path) -> None:
    config = keyless_config(tmp_path, tmp_path / "ops.db")
    assert seedgate("db", "upgrade", config=config, cwd=tmp_path).returncode == 0
    created = seedgate("keys", "create", "--name", "ops", "--balance", "1", "--json", config=config, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    listed = seedgate("keys", "list", config=config, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "ops" in listed.stdout
    refused = seedgate("serve", config=config, cwd=tmp_path)
    assert refused.returncode == 2
    assert "master_key" in refused.stderr


def test_a_missing_database_is_one_line_naming_the_fix_and_no_file_is_created(tmp_path: Path) -> None:
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    db = tmp_path / "data" / "missing.db"
    result = seedgate("keys", "list", config=keyless_config(tmp_path, db), cwd=workdir)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "does not exist" in lines[0]
    assert "seedgate db upgrade" in lines[0]
    assert not db.exists()
    assert not db.parent.exists()
    assert list(workdir.iterdir()) == []


def test_an_unmigrated_database_is_one_line_naming_the_fix(tmp_path: Path) -> None:
    db = tmp_path / "empty.db"
    sqlite3.connect(db).close()
    result = seedgate("usage", config=keyless_config(tmp_path, db), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "no Seedgate schema" in result.stderr
    assert "seedgate db upgrade" in result.stderr
    assert "Traceback" not in result.stderr


def test_lists_are_tables_and_json_stays_machine_readable(gateway: GatewayProcess) -> None:
    key_id, _ = gateway.create_key("3", name="table me")
    table = cli(gateway, "keys", "list")
    header, rule, *rows = table.stdout.splitlines()
    assert header.split()[:4] == ["id", "name", "key_hint", "balance_usd"]
    assert set(rule.replace(" ", "")) == {"-"}
    assert any(row.startswith(key_id) and "table me" in row for row in rows)
    shown = cli(gateway, "keys", "show", key_id)
    assert any(line.split()[:2] == ["balance_usd", "3.00"] for line in shown.stdout.splitlines())
    data = json.loads(cli(gateway, "keys", "list", "--json").stdout)
    assert key_id in {k["id"] for k in data}


def test_usage_csv_streams_the_selected_rows(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    key_id, key = gateway.create_key("3")
    other_id, other = gateway.create_key("3")
    with api_client(gateway, key) as http, api_client(gateway, other) as http_other:
        for _ in range(3):
            assert http.post("/v1/chat/completions", json=chat_body()).status_code == 200
        assert http_other.post("/v1/chat/completions", json=chat_body()).status_code == 200
    exported = cli(gateway, "usage", "--csv", "--key-id", key_id)
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert len(rows) == 3
    assert {r["key_id"] for r in rows} == {key_id}
    assert {r["status"] for r in rows} == {"ok"}
    with gateway.admin() as admin:
        over_http = admin.get("/admin/usage.csv", params={"key_id": key_id})
    assert over_http.headers["content-type"].startswith("text/csv")
    assert over_http.text == exported.stdout
    assert other_id not in exported.stdout
    bad = cli(gateway, "usage", "--csv", "--since", "last week")
    assert bad.returncode == 2
    assert "since" in bad.stderr
