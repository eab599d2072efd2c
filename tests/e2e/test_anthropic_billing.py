"""Messages calls are billed exactly like chat completions, and count_tokens estimates locally.

Prices of ``doubao-seed-2.0-pro`` in the test config, USD per million tokens: input 0.47, output 2.37,
cached input 0.09. Usage input 1000 of which 200 cached, output 500 costs
``800 * 0.47 + 200 * 0.09 + 500 * 2.37 = 376 + 18 + 1185 = 1579`` per million = 0.001579 USD.
"""

from __future__ import annotations

from typing import Any

import anthropic
import pytest
from anthropic.types import Message

from app.fake_upstream import FakeUpstreamThread
from tests.support.gateway import GatewayProcess

MODEL = "claude-sonnet-4-6"
HELLO: list[Any] = [{"role": "user", "content": "hello"}]
KNOWN_USAGE = {"prompt_tokens": 1000, "completion_tokens": 500, "prompt_tokens_details": {"cached_tokens": 200}}


def claude(gateway: GatewayProcess, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.base_url, api_key=key, max_retries=0, timeout=20)


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_known_usage_changes_the_balance_exactly(
    gateway: GatewayProcess, fake: FakeUpstreamThread, stream: bool
) -> None:
    key_id, key = gateway.create_key("1")
    fake.enqueue({"content": "Done.", "usage": KNOWN_USAGE})
    message: Message
    with claude(gateway, key) as client:
        if stream:
            with client.messages.stream(model=MODEL, max_tokens=1000, messages=HELLO) as events:
                message = events.get_final_message()
        else:
            message = client.messages.create(model=MODEL, max_tokens=1000, messages=HELLO)
    assert message.usage.input_tokens == 800  # cache reads are not input tokens in the Anthropic shape
    assert message.usage.cache_read_input_tokens == 200
    assert message.usage.cache_creation_input_tokens == 0
    assert message.usage.output_tokens == 500
    account = gateway.key(key_id)
    assert account["balance_usd"] == "0.998421"
    assert account["held_usd"] == "0.00"
    [row] = gateway.usage(key_id)
    assert row["cost_usd"] == "0.001579"
    assert row["prompt_tokens"] == 1000
    assert row["completion_tokens"] == 500
    assert row["partial"] is False


def test_count_tokens_grows_with_content(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    _, key = gateway.create_key("1")
    tools: list[Any] = [
        {
            "name": "Read",
            "description": "Read a file from disk",
            "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}},
        }
    ]
    long_text: list[Any] = [{"role": "user", "content": "hello " * 200}]
    with claude(gateway, key) as client:
        short = client.messages.count_tokens(model=MODEL, messages=HELLO).input_tokens
        longer = client.messages.count_tokens(model=MODEL, messages=long_text).input_tokens
        with_system = client.messages.count_tokens(model=MODEL, messages=HELLO, system="Be brief. " * 50).input_tokens
        with_tools = client.messages.count_tokens(model=MODEL, messages=HELLO, tools=tools).input_tokens
        beta = client.beta.messages.count_tokens(model=MODEL, messages=long_text, betas=["token-counting-2024-11-01"])
    assert 0 < short < longer
    assert longer >= 200  # 1200 characters of text are well over 200 tokens at ~4 characters each
    assert short < with_system
    assert short < with_tools
    assert beta.input_tokens == longer
    assert fake.requests == []  # a local estimate: the upstream is never asked


def test_count_tokens_needs_a_valid_key(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    with claude(gateway, "sk-not-a-seedgate-key") as client, pytest.raises(anthropic.AuthenticationError) as caught:
        client.messages.count_tokens(model=MODEL, messages=HELLO)
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["error"]["type"] == "authentication_error"


def test_count_tokens_costs_nothing(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    key_id, key = gateway.create_key("1")
    with claude(gateway, key) as client:
        client.messages.count_tokens(model=MODEL, messages=HELLO)
    assert gateway.key(key_id)["balance_usd"] == "1.00"
    assert gateway.usage(key_id) == []
