"""The real Claude Code CLI against a real gateway and the fake upstream: what its users actually do.

One gateway for the module maps Claude Code's model families with glob aliases (``claude-*opus*`` ->
pro, ``claude-*sonnet*`` -> code, ``claude-*haiku*`` -> mini). Each test runs ``claude -p`` headless
(tests/support/claude_code.py) and checks both ends: the CLI's JSON result and what reached the
upstream and the ledger.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.fake_upstream import DEFAULT_CONTENT, FakeUpstreamThread
from tests.support.backends import backend_overrides, database_url
from tests.support.claude_code import ClaudeCode, ensure_cli
from tests.support.gateway import GatewayProcess, base_config, deep_merge, settled_rows

# the first test may have to `npm ci` the CLI (tens of seconds); each CLI run is bounded by RUN_TIMEOUT
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

PRICE = {"input": 0.47, "output": 2.37}
FAMILIES = {
    "opus": ("doubao-seed-2.0-pro", "doubao-seed-2-0-pro-260215"),
    "sonnet": ("doubao-seed-2.0-code", "doubao-seed-2-0-code-260215"),
    "haiku": ("doubao-seed-2.0-mini", "doubao-seed-2-0-mini-260215"),
}
MAIN = FAMILIES["opus"][1]  # Claude Code's default main model is an opus name


@pytest.fixture(scope="module")
def cli() -> Path:
    return ensure_cli()


@pytest.fixture(scope="module")
def families_gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstreamThread
) -> Iterator[GatewayProcess]:
    workdir = tmp_path_factory.mktemp("claude-code")
    models = [
        {
            "id": public,
            "upstream": "ark",
            "upstream_model": upstream_model,
            "aliases": [f"claude-*{family}*"],
            "max_output_tokens": 1000,
            "price": PRICE,
        }
        for family, (public, upstream_model) in FAMILIES.items()
    ]
    config = deep_merge(base_config(upstream.url, database_url(workdir)), backend_overrides())
    gateway = GatewayProcess(workdir, {**config, "models": models})
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.terminate()


@pytest.fixture
def account(families_gateway: GatewayProcess) -> tuple[str, str]:
    return families_gateway.create_key("10")


@pytest.fixture
def claude(cli: Path, tmp_path: Path, families_gateway: GatewayProcess, account: tuple[str, str]) -> ClaudeCode:
    return ClaudeCode(cli, tmp_path / "home", base_url=families_gateway.base_url, key=account[1])


def upstream_chats(fake: FakeUpstreamThread) -> list[dict[str, Any]]:
    return [r["body"] for r in fake.requests if r["path"].endswith("/chat/completions")]


def test_a_prompt_completes_and_is_billed_to_the_key(
    claude: ClaudeCode, fake: FakeUpstreamThread, families_gateway: GatewayProcess, account: tuple[str, str]
) -> None:
    run = claude.run("say hello")
    assert run.returncode == 0, run
    assert run.result["is_error"] is False, run.result
    assert run.result["result"] == DEFAULT_CONTENT
    chats = upstream_chats(fake)
    assert len(chats) == 1
    # no model configured: Claude Code's default (an opus name) lands on the opus pattern's model
    assert chats[0]["model"] == FAMILIES["opus"][1]
    [row] = settled_rows(families_gateway, account[0])
    assert (row["model"], row["endpoint"], row["status"]) == (FAMILIES["opus"][0], "messages", "ok")
    assert row["prompt_tokens"] > 1000  # Claude Code's system prompt and tools, counted by the upstream
    key = families_gateway.key(account[0])
    assert Decimal(row["cost_usd"]) > 0
    assert Decimal(key["topped_up_usd"]) - Decimal(key["balance_usd"]) == Decimal(row["cost_usd"]), key


def test_a_wrong_key_fails_in_seconds_not_minutes(
    cli: Path, tmp_path: Path, families_gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    claude = ClaudeCode(cli, tmp_path / "home", base_url=families_gateway.base_url, key="sk-not-a-seedgate-key")
    run = claude.run("say hello")
    assert run.seconds < 10, run  # 401 carries x-should-retry: false, so Claude Code does not retry
    assert run.returncode != 0
    assert run.result["is_error"] is True
    assert run.result["api_error_status"] == 401, run.result
    assert upstream_chats(fake) == []


@pytest.mark.parametrize("family", ["sonnet", "opus"])
def test_model_shorthands_are_served_by_the_family_pattern(
    claude: ClaudeCode,
    fake: FakeUpstreamThread,
    families_gateway: GatewayProcess,
    account: tuple[str, str],
    family: str,
) -> None:
    run = claude.run("say hello", "--model", family)
    assert run.returncode == 0, run
    requested = set(run.result["modelUsage"])  # the names Claude Code itself sent, e.g. claude-sonnet-5-5
    assert requested, run.result
    assert all(name.startswith("claude-") and family in name for name in requested), requested
    assert [chat["model"] for chat in upstream_chats(fake)] == [FAMILIES[family][1]]
    [row] = settled_rows(families_gateway, account[0])
    assert row["model"] == FAMILIES[family][0]


def test_a_write_tool_call_round_trips_through_the_cli(
    claude: ClaudeCode, fake: FakeUpstreamThread, families_gateway: GatewayProcess, account: tuple[str, str]
) -> None:
    target = claude.workdir / "notes.txt"
    arguments = orjson.dumps({"file_path": str(target), "content": "written through Seedgate\n"}).decode()
    fake.enqueue_for_model(
        MAIN,
        {"content": "", "tool_calls": [{"id": "call_write_1", "name": "Write", "arguments": arguments}]},
        {"content": "The file is written."},
    )
    run = claude.run("write notes.txt", "--allowedTools", "Write")
    assert run.returncode == 0, run
    assert run.result["result"] == "The file is written."
    assert target.read_text() == "written through Seedgate\n"
    first, second = upstream_chats(fake)
    assert any(t["function"]["name"] == "Write" for t in first["tools"])
    assistant, tool = second["messages"][-2:]
    assert assistant["tool_calls"][0]["id"] == "call_write_1"
    assert (tool["role"], tool["tool_call_id"]) == ("tool", "call_write_1")
    assert str(target) in tool["content"]
    assert len(settled_rows(families_gateway, account[0], 2)) == 2


def test_web_search_is_reported_unavailable_instead_of_answered_from_memory(
    claude: ClaudeCode, fake: FakeUpstreamThread
) -> None:
    query = orjson.dumps({"query": "seedgate release notes"}).decode()
    fake.enqueue_for_model(
        MAIN,
        {"content": "", "tool_calls": [{"id": "call_search_1", "name": "WebSearch", "arguments": query}]},
        {"content": "Web search is not available here."},
    )
    run = claude.run("search the web for seedgate release notes", "--allowedTools", "WebSearch")
    assert run.returncode == 0, run
    chats = upstream_chats(fake)
    # WebSearch's own request (one web_search_20250305 tool) was refused by the gateway, never sent upstream
    assert len(chats) == 2, [c["messages"][-1] for c in chats]
    tool = chats[1]["messages"][-1]
    assert tool["role"] == "tool"
    assert "'web_search' is not available through this gateway" in tool["content"], tool


def test_a_subagent_asking_for_sonnet_is_served_by_the_sonnet_pattern(
    claude: ClaudeCode, fake: FakeUpstreamThread, families_gateway: GatewayProcess, account: tuple[str, str]
) -> None:
    task = {
        "description": "Greet",
        "prompt": "say hi to the team",
        "subagent_type": "general-purpose",
        "model": "sonnet",
    }
    call = {"id": "call_agent_1", "name": "Agent", "arguments": orjson.dumps(task).decode()}
    fake.enqueue_for_model(MAIN, {"content": "", "tool_calls": [call]})
    fake.enqueue_for_model(FAMILIES["sonnet"][1], {"content": "Hi team, from the subagent."})
    run = claude.run("ask a subagent to greet the team", "--allowedTools", "Agent")
    assert run.returncode == 0, run
    sub = [chat for chat in upstream_chats(fake) if chat["model"] == FAMILIES["sonnet"][1]]
    assert len(sub) == 1, [chat["model"] for chat in upstream_chats(fake)]
    assert "say hi to the team" in orjson.dumps(sub[0]["messages"]).decode()
    # how often the main loop asks again (agent launched, agent finished) is Claude Code's business
    rows = settled_rows(families_gateway, account[0], len(upstream_chats(fake)))
    models = sorted(row["model"] for row in rows)
    assert models == sorted([FAMILIES["sonnet"][0], *[FAMILIES["opus"][0]] * (len(rows) - 1)]), models


def test_the_system_prefix_stays_byte_identical_across_the_turns_of_a_session(
    claude: ClaudeCode, fake: FakeUpstreamThread
) -> None:
    assert claude.run("first turn").returncode == 0
    assert claude.run("second turn", "--continue").returncode == 0
    first, second = upstream_chats(fake)
    # Claude Code's per-request billing line (cc_version, cch, cc_prev_msg...) is not sent upstream
    assert "x-anthropic-billing-header" not in orjson.dumps(first["messages"]).decode()
    assert first["messages"][0]["role"] == "system"
    assert second["messages"][0] == first["messages"][0]
    # the whole first turn is a byte-identical prefix of the second: the upstream's prefix cache can hit
    assert second["messages"][1 : len(first["messages"])] == first["messages"][1:]
