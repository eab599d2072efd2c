"""The official anthropic SDK, pointed at a running gateway, gets Claude-shaped answers: text, thinking, tools.

Each test scripts the fake upstream (OpenAI Chat Completions) and checks what the SDK builds from the
gateway's Messages answer or stream: content blocks in order, ``stop_reason``, usage.
"""

from __future__ import annotations

from typing import Any

import anthropic
import pytest
from anthropic.types import Message

from app.fake_upstream import FakeUpstreamThread
from tests.support.gateway import GatewayProcess

MODEL = "doubao-seed-2.0-pro"
HELLO: list[Any] = [{"role": "user", "content": "hello"}]


def claude(gateway: GatewayProcess, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.base_url, api_key=key, max_retries=0, timeout=20)


def ask(client: anthropic.Anthropic, *, stream: bool, **params: Any) -> Message:
    """One Messages call, as ``messages.create`` or ``messages.stream(...).get_final_message()``."""
    params.setdefault("model", MODEL)
    params.setdefault("max_tokens", 1024)
    params.setdefault("messages", HELLO)
    if stream:
        with client.messages.stream(**params) as events:
            return events.get_final_message()
    message: Message = client.messages.create(**params)
    return message


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_plain_text_answer_is_one_text_block_ending_the_turn(
    gateway: GatewayProcess, fake: FakeUpstreamThread, stream: bool
) -> None:
    _, key = gateway.create_key("1")
    fake.enqueue({"content_chunks": ["Hi ", "there", "!"], "usage": {"prompt_tokens": 12, "completion_tokens": 3}})
    with claude(gateway, key) as client:
        message = ask(client, stream=stream)
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.model == MODEL
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].type == "text"
    assert message.content[0].text == "Hi there!"
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    assert (message.usage.input_tokens, message.usage.output_tokens) == (12, 3)


def test_alias_model_is_served_and_upstream_gets_the_upstream_model(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    _, key = gateway.create_key("1")
    fake.enqueue({"content": "ok"})
    with claude(gateway, key) as client:
        message = ask(client, stream=False, model="claude-sonnet-4-6")
    assert message.content[0].type == "text"
    assert message.content[0].text == "ok"
    assert fake.requests[-1]["body"]["model"] == "doubao-seed-2-0-pro-260215"


def test_streamed_parallel_tool_calls_with_split_arguments_become_two_tool_use_blocks(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    _, key = gateway.create_key("1")
    fake.enqueue(
        {
            "content": "",
            "tool_calls": [
                {"id": "call_read", "name": "Read", "arguments_chunks": ['{"file_', 'path": "/a', '.py"}']},
                {"id": "call_grep", "name": "Grep", "arguments_chunks": ['{"pattern"', ': "TODO", "n', '": 3}']},
            ],
        }
    )
    tools: list[Any] = [
        {"name": "Read", "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}}},
        {"name": "Grep", "input_schema": {"type": "object", "properties": {"pattern": {"type": "string"}}}},
    ]
    starts: list[tuple[int, str]] = []
    json_deltas = 0
    with claude(gateway, key) as client:
        with client.messages.stream(model=MODEL, max_tokens=1024, messages=HELLO, tools=tools) as events:
            for event in events:
                if event.type == "content_block_start":
                    starts.append((event.index, event.content_block.type))
                elif event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                    json_deltas += 1
            message = events.get_final_message()
    assert starts == [(0, "tool_use"), (1, "tool_use")]
    assert json_deltas >= 2  # the arguments were streamed, not only delivered whole at the end
    assert message.stop_reason == "tool_use"
    blocks = [(b.id, b.name, b.input) for b in message.content if b.type == "tool_use"]
    assert blocks == [
        ("call_read", "Read", {"file_path": "/a.py"}),
        ("call_grep", "Grep", {"pattern": "TODO", "n": 3}),
    ]
    assert len(message.content) == 2


def test_non_stream_tool_call_has_parsed_input_and_tool_use_stop(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    _, key = gateway.create_key("1")
    fake.enqueue(
        {"content": "Let me look.", "tool_calls": [{"id": "call_1", "name": "Read", "arguments": '{"file_path":"/b"}'}]}
    )
    with claude(gateway, key) as client:
        message = ask(client, stream=False)
    assert [block.type for block in message.content] == ["text", "tool_use"]
    tool = message.content[1]
    assert tool.type == "tool_use"
    assert (tool.id, tool.name, tool.input) == ("call_1", "Read", {"file_path": "/b"})
    assert message.stop_reason == "tool_use"


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_reasoning_becomes_a_signed_thinking_block_before_the_text(
    gateway: GatewayProcess, fake: FakeUpstreamThread, stream: bool
) -> None:
    _, key = gateway.create_key("1")
    fake.enqueue({"reasoning_chunks": ["The user ", "greets me."], "content_chunks": ["Hello", "!"]})
    with claude(gateway, key) as client:
        message = ask(client, stream=stream, thinking={"type": "enabled", "budget_tokens": 512})
    assert [block.type for block in message.content] == ["thinking", "text"]
    thinking, text = message.content
    assert thinking.type == "thinking"
    assert thinking.thinking == "The user greets me."
    assert thinking.signature
    assert text.type == "text"
    assert text.text == "Hello!"
    assert message.stop_reason == "end_turn"
    assert fake.requests[-1]["body"]["thinking"] == {"type": "enabled"}


def test_the_same_thinking_gets_the_same_signature_streamed_or_not(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    _, key = gateway.create_key("1")
    fake.enqueue({"reasoning": "Same thoughts.", "content": "a"}, {"reasoning": "Same thoughts.", "content": "b"})
    with claude(gateway, key) as client:
        signatures = [ask(client, stream=stream).content[0] for stream in (False, True)]
    assert signatures[0].type == signatures[1].type == "thinking"
    assert signatures[0].signature == signatures[1].signature


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_length_finish_is_a_max_tokens_stop(gateway: GatewayProcess, fake: FakeUpstreamThread, stream: bool) -> None:
    _, key = gateway.create_key("1")
    fake.enqueue({"content_chunks": ["Once ", "upon"], "finish_reason": "length"})
    with claude(gateway, key) as client:
        message = ask(client, stream=stream, max_tokens=2)
    assert message.stop_reason == "max_tokens"
    assert message.content[0].type == "text"
    assert message.content[0].text == "Once upon"
    assert fake.requests[-1]["body"]["max_completion_tokens"] == 2


def test_max_tokens_above_the_model_limit_is_clamped_upstream(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    _, key = gateway.create_key("1")
    fake.enqueue({"content": "ok"})
    with claude(gateway, key) as client:
        ask(client, stream=True, max_tokens=32000)  # what Claude Code sends; the model allows 1000
    assert fake.requests[-1]["body"]["max_completion_tokens"] == 1000
