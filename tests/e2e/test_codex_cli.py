"""The real Codex CLI (pinned npm ``@openai/codex``) works against a running gateway over ``/v1/responses``:
a text turn, a command it runs through a tool call (its sealed reasoning carried back), a wrong key
refused quickly; every turn billed."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from app.fake_upstream import FakeUpstreamThread
from tests.support.codex import codex_binary, run_codex
from tests.support.gateway import GatewayProcess

MODEL = "doubao-seed-2.0-pro"


@pytest.fixture(scope="module", autouse=True)
def installed_codex() -> None:
    codex_binary()  # npm ci on first use (outside the tests' own timeouts: module-scoped setup)


@pytest.mark.timeout(120)
def test_codex_completes_a_turn_and_it_is_billed(
    gateway: GatewayProcess, fake: FakeUpstreamThread, tmp_path: Path
) -> None:
    key_id, key = gateway.create_key("1")
    fake.enqueue({"content": "Hello from Seedgate.", "usage": {"prompt_tokens": 5000, "completion_tokens": 6}})
    run = run_codex(tmp_path, gateway.base_url, key, "say hello", model=MODEL)
    assert run.returncode == 0, run.stderr[-2000:]
    messages = [e["item"]["text"] for e in run.of_type("item.completed") if e["item"]["type"] == "agent_message"]
    assert messages == ["Hello from Seedgate."]
    [completed] = run.of_type("turn.completed")
    assert completed["usage"]["input_tokens"] == 5000
    [row] = gateway.usage(key_id)
    assert (row["endpoint"], row["stream"], row["prompt_tokens"], row["completion_tokens"]) == (
        "responses",
        True,
        5000,
        6,
    )
    # 5000 * 0.47/M + 6 * 2.37/M = 0.00235 + 0.00001422
    assert row["cost_usd"] == "0.00236422"
    assert Decimal(gateway.key(key_id)["balance_usd"]) == Decimal("1") - Decimal(row["cost_usd"])
    sent = fake.requests[-1]["body"]
    assert sent["stream"] is True
    assert any(tool["function"]["name"] == "exec_command" for tool in sent["tools"])


@pytest.mark.timeout(120)
def test_codex_runs_a_command_through_a_tool_call_round_trip(
    gateway: GatewayProcess, fake: FakeUpstreamThread, tmp_path: Path
) -> None:
    key_id, key = gateway.create_key("1")
    command = orjson.dumps({"cmd": "echo codex-was-here > proof.txt"}).decode()
    fake.enqueue(
        {
            "reasoning": "I should write the proof file.",
            "content": "",
            "tool_calls": [{"id": "call_proof", "name": "exec_command", "arguments": command}],
        },
        {"content": "Done."},
    )
    run = run_codex(tmp_path, gateway.base_url, key, "write the proof file", model=MODEL)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "proof.txt").read_text().strip() == "codex-was-here"
    followup = fake.requests[-1]["body"]["messages"]
    assert followup[-2]["tool_calls"][0]["id"] == "call_proof"
    # Codex sent the reasoning item back (it asks for encrypted_content); the upstream gets it again
    assert followup[-2]["reasoning_content"] == "I should write the proof file."
    assert followup[-1]["role"] == "tool"
    assert followup[-1]["tool_call_id"] == "call_proof"
    assert "exited with code 0" in followup[-1]["content"]
    rows = gateway.usage(key_id)
    assert len(rows) == 2
    assert all(row["endpoint"] == "responses" and row["status"] == "ok" for row in rows)
    spent = sum(Decimal(row["cost_usd"]) for row in rows)
    assert Decimal(gateway.key(key_id)["balance_usd"]) == Decimal("1") - spent


@pytest.mark.timeout(120)
def test_codex_with_a_wrong_key_fails_in_under_ten_seconds(gateway: GatewayProcess, tmp_path: Path) -> None:
    run = run_codex(tmp_path, gateway.base_url, "sk-not-a-seedgate-key", "say hello", model=MODEL)
    assert run.returncode != 0
    assert run.seconds < 10
    [failed] = run.of_type("turn.failed")
    assert "401" in failed["error"]["message"]
