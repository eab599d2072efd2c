"""Responses request -> Chat Completions body: items, roles, tools, options, and 400s naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from app.dialects.responses.dialect import OpenAIResponses
from app.dialects.responses.request import responses_to_chat
from app.dialects.responses.seal import Sealer
from app.errors import InvalidRequest


def never(token: str) -> str | None:
    return None


def chat(**body: Any) -> dict[str, Any]:
    converted, _ = responses_to_chat({"model": "m", **body}, never)
    return converted


def test_instructions_lead_and_a_string_input_is_one_user_message() -> None:
    assert chat(instructions="sys", input="hi")["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "hi"},
    ]


def test_message_items_keep_roles_and_parts_become_chat_parts() -> None:
    messages = chat(
        input=[
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "rules"}]},
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "look"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AA", "detail": "low"},
                ],
            },
            {
                "role": "assistant",
                "content": [{"type": "output_text", "text": "a"}, {"type": "output_text", "text": "b"}],
            },
        ]
    )["messages"]
    assert messages == [
        {"role": "developer", "content": "rules"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA", "detail": "low"}},
            ],
        },
        {"role": "assistant", "content": "ab"},
    ]


def test_function_calls_join_one_assistant_turn_with_the_reasoning_before_them() -> None:
    messages = chat(
        input=[
            {"role": "user", "content": "go"},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "plan"}]},
            {"type": "function_call", "call_id": "c1", "name": "a", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "b", "arguments": '{"x":1}'},
            {"type": "function_call_output", "call_id": "c1", "output": "one"},
            {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "two"}]},
            {"type": "web_search_call", "id": "ws_1"},
        ]
    )["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "a", "arguments": "{}"}},
            {"id": "c2", "type": "function", "function": {"name": "b", "arguments": '{"x":1}'}},
        ],
        "reasoning_content": "plan",
    }
    assert messages[2:] == [
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
        {"role": "tool", "tool_call_id": "c2", "content": "two"},
    ]


def test_sealed_reasoning_is_preferred_to_the_summary() -> None:
    def opener(token: str) -> str | None:
        return "full thoughts" if token == "sealed" else None

    body = {
        "model": "m",
        "input": [
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "s"}], "encrypted_content": "sealed"},
            {"role": "assistant", "content": "answer"},
        ],
    }
    converted, _ = responses_to_chat(body, opener)
    assert converted["messages"][0]["reasoning_content"] == "full thoughts"


def test_tools_are_nested_namespaces_flattened_and_hosted_tools_dropped() -> None:
    body = {
        "model": "m",
        "input": "x",
        "tools": [
            {"type": "function", "name": "run", "description": "d", "parameters": {"type": "object"}, "strict": False},
            {"type": "namespace", "name": "multi_agent_v1", "tools": [{"type": "function", "name": "spawn"}]},
            {"type": "web_search", "external_web_access": False},
        ],
        "tool_choice": {"type": "function", "name": "run"},
    }
    converted, tools = responses_to_chat(body, never)
    assert [t["function"]["name"] for t in converted["tools"]] == ["run", "multi_agent_v1__spawn"]
    assert converted["tools"][0]["function"] == {
        "name": "run",
        "description": "d",
        "parameters": {"type": "object"},
        "strict": False,
    }
    assert tools.names == {"multi_agent_v1__spawn": ("multi_agent_v1", "spawn")}
    assert tools.dropped == ["web_search"]
    assert converted["tool_choice"] == {"type": "function", "function": {"name": "run"}}


def test_options_map_to_their_chat_names() -> None:
    converted = chat(
        input="x",
        reasoning={"effort": "high", "summary": "auto"},
        max_output_tokens=300,
        temperature=0.5,
        top_p=0.9,
        parallel_tool_calls=False,
        user="u1",
        metadata={"a": "b"},
        text={"format": {"type": "json_schema", "name": "Out", "schema": {"type": "object"}, "strict": True}},
        prompt_cache_key="ignored",
        client_metadata={"ignored": True},
    )
    assert converted["reasoning_effort"] == "high"
    assert converted["max_completion_tokens"] == 300
    assert (converted["temperature"], converted["top_p"], converted["parallel_tool_calls"]) == (0.5, 0.9, False)
    assert converted["user"] == "u1"
    assert converted["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Out", "schema": {"type": "object"}, "strict": True},
    }
    assert "metadata" not in converted
    assert "prompt_cache_key" not in converted


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": None}, "input"),
        ({"input": []}, "input"),
        ({"input": ["text"]}, "input.0"),
        ({"input": [{"role": "user", "content": 3}]}, "input.0.content"),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "input.0.content.0.type"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
            "input.0.content.0.image_url",
        ),
        ({"input": [{"type": "function_call", "name": "a"}]}, "input.0.call_id"),
        ({"input": [{"type": "function_call_output", "call_id": "c", "output": 5}]}, "input.0.output"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input.0.type"),
        ({"input": "x", "instructions": 1}, "instructions"),
        ({"input": "x", "tools": [{"type": "web_search"}]}, "tools"),
        ({"input": "x", "tools": [{"type": "function"}]}, "tools.0.name"),
        ({"input": "x", "tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
        ({"input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
        ({"input": "x", "reasoning": "high"}, "reasoning"),
        ({"input": "x", "metadata": []}, "metadata"),
    ],
)
def test_bad_input_is_refused_naming_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        chat(**body)
    assert caught.value.param == param


def test_a_body_that_is_not_an_object_is_refused_by_the_dialect_itself() -> None:
    dialect = OpenAIResponses(Sealer("master-key", "test"), store=None)  # type: ignore[arg-type]
    bodies: list[Any] = [[], "hi", None]
    for body in bodies:
        with pytest.raises(InvalidRequest):
            dialect.parse(body)
