"""What the upstream receives when Claude Code's Messages requests pass through the gateway.

The fake upstream records the translated Chat Completions body; these tests send Claude-Code-shaped
requests with the official SDK and check that body (docs/protocol.md 3.1 and 3.7).
"""

from __future__ import annotations

import json
from typing import Any

import anthropic

from app.fake_upstream import FakeUpstreamThread
from tests.support.gateway import GatewayProcess

MODEL = "claude-sonnet-4-6"
HELLO: list[Any] = [{"role": "user", "content": "hello"}]


def claude(gateway: GatewayProcess, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.base_url, api_key=key, max_retries=0, timeout=20)


def upstream_body(fake: FakeUpstreamThread) -> dict[str, Any]:
    [request] = fake.requests
    assert request["path"] == "/chat/completions" or request["path"].endswith("/chat/completions")
    body: dict[str, Any] = request["body"]
    return body


def test_tool_result_turn_reaches_upstream_as_tool_messages_in_order(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    _, key = gateway.create_key("1")
    fake.enqueue({"content": "Both files read."})
    messages: list[Any] = [
        {"role": "user", "content": "Read /a and /b"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "I need both files.", "signature": "c2ln"},
                {"type": "text", "text": "Reading."},
                {"type": "tool_use", "id": "call_a", "name": "Read", "input": {"file_path": "/a"}},
                {"type": "tool_use", "id": "call_b", "name": "Read", "input": {"file_path": "/b"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_a", "content": "contents of a"},
                {
                    "type": "tool_result",
                    "tool_use_id": "call_b",
                    "content": [{"type": "text", "text": "no such file"}],
                    "is_error": True,
                },
                {"type": "text", "text": "Now summarise."},
            ],
        },
    ]
    tools: list[Any] = [
        {
            "name": "Read",
            "description": "Read a file",
            "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}},
            "cache_control": {"type": "ephemeral"},
        }
    ]
    with claude(gateway, key) as client:
        with client.messages.stream(model=MODEL, max_tokens=4096, messages=messages, tools=tools) as events:
            answer = events.get_final_message()
    assert answer.content[0].type == "text"
    assert answer.content[0].text == "Both files read."

    sent = upstream_body(fake)["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "tool", "user"]
    assistant = sent[1]
    assert assistant["content"] == "Reading."
    assert assistant["reasoning_content"] == "I need both files."
    calls = assistant["tool_calls"]
    assert [(c["id"], c["type"], c["function"]["name"]) for c in calls] == [
        ("call_a", "function", "Read"),
        ("call_b", "function", "Read"),
    ]
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [{"file_path": "/a"}, {"file_path": "/b"}]
    assert (sent[2]["tool_call_id"], sent[2]["content"]) == ("call_a", "contents of a")
    assert sent[3]["tool_call_id"] == "call_b"
    assert sent[3]["content"] != "no such file"
    assert sent[3]["content"].endswith("no such file")
    assert sent[4]["content"] == "Now summarise."
    assert upstream_body(fake)["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "Read",
                "description": "Read a file",
                "parameters": {"type": "object", "properties": {"file_path": {"type": "string"}}},
            },
        }
    ]


def test_system_blocks_and_mid_conversation_system_messages_become_one_leading_system_message(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    _, key = gateway.create_key("1")
    fake.enqueue({"content": "ok"})
    system: list[Any] = [
        {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
    ]
    messages: list[Any] = [
        {"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]},
        {"role": "assistant", "content": "hello"},
        {"role": "system", "content": "The user switched to plan mode."},
        {"role": "user", "content": "go"},
    ]
    with claude(gateway, key) as client:
        client.messages.create(model=MODEL, max_tokens=1024, system=system, messages=messages)
    body = upstream_body(fake)
    assert body["messages"] == [
        {"role": "system", "content": "You are Claude Code.\n\nBe brief.\n\nThe user switched to plan mode."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "go"},
    ]
    assert "cache_control" not in json.dumps(body)


def test_unknown_top_level_fields_are_tolerated_and_not_forwarded(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    _, key = gateway.create_key("1")
    fake.enqueue({"content": "ok"})
    extra = {
        "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
        "container": "container_123",
        "some_future_field": {"x": 1},
    }
    with claude(gateway, key) as client:
        message = client.messages.create(model=MODEL, max_tokens=1024, messages=HELLO, extra_body=extra)
    assert message.content[0].type == "text"
    assert message.content[0].text == "ok"
    body = upstream_body(fake)
    assert not set(extra) & set(body)


def test_adaptive_thinking_and_max_effort_map_to_ark_options(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    _, key = gateway.create_key("1")
    fake.enqueue({"content": "ok"})
    with claude(gateway, key) as client:
        with client.messages.stream(
            model=MODEL,
            max_tokens=1024,
            messages=HELLO,
            thinking={"type": "adaptive"},
            output_config={"effort": "max"},
        ) as events:
            events.get_final_message()
    body = upstream_body(fake)
    assert body["thinking"] == {"type": "auto"}
    assert body["reasoning_effort"] == "high"
    assert "output_config" not in body


def test_sampling_options_stop_sequences_and_user_id_are_mapped(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    _, key = gateway.create_key("1")
    fake.enqueue({"content": "ok"})
    with claude(gateway, key) as client:
        client.messages.create(
            model=MODEL,
            max_tokens=1024,
            messages=HELLO,
            stop_sequences=["END"],
            metadata={"user_id": "user-42"},
            tool_choice={"type": "any", "disable_parallel_tool_use": True},
            tools=[{"name": "Read", "input_schema": {"type": "object"}}],
            # this SDK version no longer has sampling parameters; Claude Code may still send them
            extra_body={"temperature": 0.5, "top_p": 0.9, "top_k": 40},
        )
    body = upstream_body(fake)
    assert (body["temperature"], body["top_p"], body["stop"], body["user"]) == (0.5, 0.9, ["END"], "user-42")
    assert "top_k" not in body
    assert body["tool_choice"] == "required"
    assert body["parallel_tool_calls"] is False


def test_images_are_sent_as_image_url_parts(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    _, key = gateway.create_key("1")
    fake.enqueue({"content": "a cat"})
    content: list[Any] = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "text", "text": "What is this?"},
    ]
    with claude(gateway, key) as client:
        client.messages.create(model=MODEL, max_tokens=1024, messages=[{"role": "user", "content": content}])
    [user] = upstream_body(fake)["messages"]
    assert user["content"] == [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        {"type": "text", "text": "What is this?"},
    ]


def test_beta_query_and_any_anthropic_beta_header_are_accepted(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    _, key = gateway.create_key("1")
    fake.enqueue({"content": "beta ok"}, {"content": "header ok"})
    with claude(gateway, key) as client:
        # the beta resource posts to /v1/messages?beta=true with an anthropic-beta header, like Claude Code
        raw = client.beta.messages.with_raw_response.create(
            model=MODEL,
            max_tokens=1024,
            messages=HELLO,
            betas=["interleaved-thinking-2025-05-14", "some-future-beta-2099-01-01"],
            extra_query={"beta": "true"},
        )
        assert raw.http_request.url.params["beta"] == "true"
        assert raw.http_request.headers["anthropic-beta"].startswith("interleaved-thinking")
        beta = raw.parse()
        plain = client.messages.create(
            model=MODEL,
            max_tokens=1024,
            messages=HELLO,
            extra_headers={
                "anthropic-beta": "not-a-real-beta, context-1m-2025-08-07",
                "x-claude-code-session-id": "s1",
            },
        )
    assert beta.content[0].type == "text"
    assert beta.content[0].text == "beta ok"
    assert plain.content[0].type == "text"
    assert plain.content[0].text == "header ok"
    assert len(fake.requests) == 2
    for request in fake.requests:
        assert not any(name.lower().startswith("anthropic") for name in request["headers"])


def test_bearer_token_authenticates_like_x_api_key(
    gateway: GatewayProcess, fake: FakeUpstreamThread, monkeypatch: Any
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)  # else the SDK would also send x-api-key
    _, key = gateway.create_key("1")
    fake.enqueue({"content": "bearer ok"})
    with anthropic.Anthropic(base_url=gateway.base_url, auth_token=key, max_retries=0, timeout=20) as client:
        message = client.messages.create(model=MODEL, max_tokens=1024, messages=HELLO)
    assert message.content[0].type == "text"
    assert message.content[0].text == "bearer ok"
