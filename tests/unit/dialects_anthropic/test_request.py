"""docs/protocol.md 3.7, Anthropic -> OpenAI direction: top-level fields, row by row, plus validation."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from app.dialects.anthropic import AnthropicRequestError, messages_to_chat
from app.dialects.anthropic.request import translate


def body(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "hi"}],
    }
    base.update(fields)
    return base


def chat_messages(**fields: Any) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = messages_to_chat(body(**fields))["messages"]
    return messages


# --- system -----------------------------------------------------------------------------------------


def test_system_blocks_and_system_messages_become_one_leading_system_message() -> None:
    messages = chat_messages(
        system=[
            {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Be brief."},
        ],
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "system", "content": [{"type": "text", "text": "Mid-conversation rule."}]},
            {"role": "user", "content": "go"},
        ],
    )
    assert messages[0] == {"role": "system", "content": "You are Claude Code.\n\nBe brief.\n\nMid-conversation rule."}
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]


def test_string_system_is_the_system_message() -> None:
    assert chat_messages(system="Be brief.")[0] == {"role": "system", "content": "Be brief."}


def test_no_system_means_no_system_message() -> None:
    assert chat_messages() == [{"role": "user", "content": "hi"}]


def test_cache_control_never_reaches_the_upstream() -> None:
    chat = messages_to_chat(
        body(
            system=[{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}],
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}}]}
            ],
            tools=[{"name": "f", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}],
        )
    )
    assert b"cache_control" not in orjson.dumps(chat)


# --- tools and tool_choice -------------------------------------------------------------------------------


def test_tools_become_function_tools_and_server_tools_are_left_out() -> None:
    chat, dropped = translate(
        body(
            tools=[
                {"name": "Read", "description": "Read a file", "input_schema": {"type": "object"}, "strict": True},
                {"type": "custom", "name": "Bash", "input_schema": {"type": "object", "properties": {}}},
                {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
            ]
        )
    )
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {"name": "Read", "description": "Read a file", "parameters": {"type": "object"}},
        },
        {"type": "function", "function": {"name": "Bash", "parameters": {"type": "object", "properties": {}}}},
    ]
    assert dropped == ["web_search"]


_TOOLS = [{"name": "Read", "input_schema": {"type": "object"}}]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "Read"}, {"type": "function", "function": {"name": "Read"}}),
    ],
)
def test_tool_choice_maps_to_openai(choice: dict[str, Any], expected: Any) -> None:
    chat = messages_to_chat(body(tools=_TOOLS, tool_choice=choice))
    assert chat["tool_choice"] == expected
    assert "parallel_tool_calls" not in chat


def test_disable_parallel_tool_use_turns_parallel_tool_calls_off() -> None:
    chat = messages_to_chat(body(tools=_TOOLS, tool_choice={"type": "auto", "disable_parallel_tool_use": True}))
    assert chat["parallel_tool_calls"] is False


def test_tool_choice_none_with_only_server_tools_sends_no_tools() -> None:
    chat = messages_to_chat(
        body(tools=[{"type": "web_search_20250305", "name": "web_search"}], tool_choice={"type": "none"})
    )
    assert "tools" not in chat
    assert "tool_choice" not in chat


_WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 8}


def test_a_left_out_server_tool_is_named_to_the_model_in_the_system_prompt() -> None:
    chat, dropped = translate(body(system="Be brief.", tools=[*_TOOLS, _WEB_SEARCH, {"type": "web_fetch_20250910"}]))
    assert dropped == ["web_search", "web_fetch_20250910"]
    system = chat["messages"][0]
    assert system["role"] == "system"
    assert system["content"].startswith("Be brief.\n\nNote: the tools web_search, web_fetch_20250910 are not available")
    assert "Do not claim to have used them" in system["content"]


def test_no_server_tool_means_no_note() -> None:
    chat, dropped = translate(body(system="Be brief.", tools=_TOOLS))
    assert dropped == []
    assert chat["messages"][0]["content"] == "Be brief."


@pytest.mark.parametrize(
    ("tools", "choice", "named"),
    [
        ([_WEB_SEARCH], None, "web_search"),  # Claude Code's WebSearch sub-request
        ([_WEB_SEARCH], {"type": "any"}, "web_search"),
        ([{"type": "code_execution_20250825", "name": "code_execution"}], {"type": "auto"}, "code_execution"),
        ([*_TOOLS, _WEB_SEARCH], {"type": "tool", "name": "web_search"}, "web_search"),
    ],
)
def test_a_request_that_needs_a_server_tool_is_refused_naming_it(
    tools: list[dict[str, Any]], choice: dict[str, Any] | None, named: str
) -> None:
    with pytest.raises(AnthropicRequestError) as caught:
        translate(body(tools=tools, tool_choice=choice))
    assert caught.value.code == "server_tool_unavailable"
    assert f"'{named}' is not available through this gateway" in caught.value.message


# --- Claude Code's billing header ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("system", "sent"),
    [
        (
            [
                {
                    "type": "text",
                    "text": "x-anthropic-billing-header: cc_version=2.1.332.a1b; cc_entrypoint=sdk-cli; cch=0;",
                },
                {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
            ],
            "You are Claude Code.",
        ),
        ("x-anthropic-billing-header: cc_version=2.1.332.c3d;\nYou are Claude Code.", "You are Claude Code."),
        # only a leading line is Claude Code's header; the same words later are the client's text
        ("Quote: x-anthropic-billing-header: a", "Quote: x-anthropic-billing-header: a"),
    ],
)
def test_claude_code_billing_header_never_reaches_the_upstream(system: Any, sent: str) -> None:
    assert chat_messages(system=system)[0] == {"role": "system", "content": sent}


def test_system_prefix_is_identical_whatever_the_billing_header() -> None:
    first, second = (
        chat_messages(
            system=[{"type": "text", "text": f"x-anthropic-billing-header: cch={n};"}, {"type": "text", "text": "S"}]
        )
        for n in ("1a2b", "9f8e")
    )
    assert first == second


# --- scalar options ----------------------------------------------------------------------------------------


def test_max_tokens_becomes_max_completion_tokens() -> None:
    chat = messages_to_chat(body(max_tokens=32000))
    assert chat["max_completion_tokens"] == 32000
    assert "max_tokens" not in chat


def test_stop_sequences_become_stop() -> None:
    assert messages_to_chat(body(stop_sequences=["END", "\n\nHuman:"]))["stop"] == ["END", "\n\nHuman:"]


def test_temperature_and_top_p_are_copied_and_top_k_dropped() -> None:
    chat = messages_to_chat(body(temperature=0.3, top_p=1, top_k=40))
    assert (chat["temperature"], chat["top_p"]) == (0.3, 1)
    assert "top_k" not in chat


def test_metadata_user_id_becomes_user() -> None:
    assert messages_to_chat(body(metadata={"user_id": "user_abc"}))["user"] == "user_abc"


@pytest.mark.parametrize(
    ("thinking", "expected"),
    [
        ({"type": "enabled", "budget_tokens": 2048}, {"type": "enabled"}),
        ({"type": "disabled"}, {"type": "disabled"}),
        ({"type": "adaptive"}, {"type": "auto"}),
    ],
)
def test_thinking_maps_to_ark_thinking(thinking: dict[str, Any], expected: dict[str, str]) -> None:
    assert messages_to_chat(body(thinking=thinking))["thinking"] == expected


def test_absent_thinking_sends_nothing() -> None:
    assert "thinking" not in messages_to_chat(body())


@pytest.mark.parametrize(
    ("effort", "expected"),
    [("low", "low"), ("medium", "medium"), ("high", "high"), ("xhigh", "high"), ("max", "high")],
)
def test_output_config_effort_maps_to_reasoning_effort(effort: str, expected: str) -> None:
    assert messages_to_chat(body(output_config={"effort": effort}))["reasoning_effort"] == expected


def test_output_config_format_becomes_json_schema_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    chat = messages_to_chat(body(output_config={"format": {"type": "json_schema", "schema": schema}}))
    assert chat["response_format"] == {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}


def test_the_older_top_level_output_format_is_the_same_as_output_config_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    fmt = {"type": "json_schema", "schema": schema}
    chat = messages_to_chat(body(output_format=fmt))
    assert chat["response_format"] == {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
    with pytest.raises(AnthropicRequestError) as both:
        messages_to_chat(body(output_format=fmt, output_config={"format": fmt}))
    assert both.value.param == "output_format"
    with pytest.raises(AnthropicRequestError) as wrong:
        messages_to_chat(body(output_format={"type": "text"}))
    assert wrong.value.param == "output_format.type"


def test_streaming_asks_the_upstream_for_usage() -> None:
    chat = messages_to_chat(body(stream=True))
    assert chat["stream"] is True
    assert chat["stream_options"] == {"include_usage": True}


def test_non_streaming_is_copied_without_stream_options() -> None:
    chat = messages_to_chat(body(stream=False))
    assert chat["stream"] is False
    assert "stream_options" not in chat


def test_unknown_top_level_fields_are_ignored_and_model_is_kept() -> None:
    chat = messages_to_chat(
        body(
            model="Claude-Opus-4-1-20250805",
            context_management={"edits": []},
            container="c1",
            service_tier="auto",
            mcp_servers=[],
        )
    )
    assert chat == {
        "model": "Claude-Opus-4-1-20250805",
        "messages": [{"role": "user", "content": "hi"}],
        "max_completion_tokens": 1024,
    }


# --- validation --------------------------------------------------------------------------------------------

_USER = {"role": "user", "content": "hi"}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"model": ""}, "model"),
        ({"model": 5}, "model"),
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"max_tokens": 1.5}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [_USER, "hi"]}, "messages.1"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
        ({"messages": [_USER, {"role": "assistant", "content": 5}]}, "messages.1.content"),
        ({"messages": [{"role": "user", "content": [{"text": "no type"}]}]}, "messages.0.content.0"),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages.0.content.0.text"),
        ({"messages": [{"role": "user", "content": [{"type": "tool_use"}]}]}, "messages.0.content.0.type"),
        (
            {"messages": [_USER, {"role": "assistant", "content": [{"type": "tool_result"}]}]},
            "messages.1.content.0.type",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file"}}]}]},
            "messages.0.content.0.source.type",
        ),
        ({"messages": [{"role": "user", "content": [{"type": "tool_result"}]}]}, "messages.0.content.0.tool_use_id"),
        (
            {
                "messages": [
                    _USER,
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": []}]},
                ]
            },
            "messages.1.content.0.input",
        ),
        ({"system": 5}, "system"),
        ({"system": [{"type": "image"}]}, "system.0"),
        ({"temperature": 1.5}, "temperature"),
        ({"temperature": "0.5"}, "temperature"),
        ({"top_p": -0.1}, "top_p"),
        ({"stop_sequences": "END"}, "stop_sequences"),
        ({"stop_sequences": ["END", 3]}, "stop_sequences"),
        ({"tools": {"name": "f"}}, "tools"),
        ({"tools": [{"input_schema": {}}]}, "tools.0.name"),
        ({"tools": [{"name": "f"}]}, "tools.0.input_schema"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
        ({"tool_choice": {"type": "tool"}}, "tool_choice.name"),
        ({"thinking": {"type": "on"}}, "thinking.type"),
        ({"thinking": True}, "thinking"),
        ({"thinking": {"type": "enabled", "budget_tokens": -1}}, "thinking.budget_tokens"),
        ({"output_config": {"effort": "extreme"}}, "output_config.effort"),
        ({"output_config": {"format": {"type": "json_object"}}}, "output_config.format.type"),
        ({"metadata": {"user_id": 7}}, "metadata.user_id"),
        ({"stream": "yes"}, "stream"),
    ],
)
def test_invalid_fields_are_rejected_with_their_param(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(AnthropicRequestError) as caught:
        messages_to_chat(body(**fields))
    assert caught.value.param == param
    assert caught.value.message.startswith(param)


def test_missing_max_tokens_is_rejected() -> None:
    request = body()
    del request["max_tokens"]
    with pytest.raises(AnthropicRequestError) as caught:
        messages_to_chat(request)
    assert caught.value.param == "max_tokens"


def test_non_object_body_is_rejected_without_param() -> None:
    with pytest.raises(AnthropicRequestError) as caught:
        messages_to_chat(["not", "an", "object"])
    assert caught.value.param is None


def test_error_messages_never_echo_client_values() -> None:
    secret = "sk-live-0123456789abcdef"
    with pytest.raises(AnthropicRequestError) as caught:
        messages_to_chat(body(messages=[{"role": secret, "content": secret}]))
    assert secret not in str(caught.value)
