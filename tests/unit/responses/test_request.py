"""Responses request -> the chat request for the upstream: items, roles, tools, options, and 400s naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from app.chat_request import TOOL_NAME, ChatRequest
from app.dialects.responses.dialect import OpenAIResponses
from app.dialects.responses.request import parse_responses
from app.dialects.responses.seal import Sealer
from app.errors import InvalidRequest


def never(token: str) -> str | None:
    return None


def parse(**body: Any) -> ChatRequest:
    return parse_responses({"model": "m", **body}, never)


def chat(**body: Any) -> dict[str, Any]:
    return parse(**body).body


def test_instructions_lead_and_a_string_input_is_one_user_message() -> None:
    assert chat(instructions="sys", input="hi")["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "hi"},
    ]


def test_message_items_keep_roles_developer_becomes_system_and_parts_become_chat_parts() -> None:
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
        {"role": "system", "content": "rules"},
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
    assert parse_responses(body, opener).body["messages"][0]["reasoning_content"] == "full thoughts"


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
    request = parse_responses(body, never)
    converted = request.body
    assert [t["function"]["name"] for t in converted["tools"]] == ["run", "multi_agent_v1__spawn"]
    assert converted["tools"][0]["function"] == {
        "name": "run",
        "description": "d",
        "parameters": {"type": "object"},
        "strict": False,
    }
    assert request.context.names == {"multi_agent_v1__spawn": ("multi_agent_v1", "spawn")}
    assert request.response_headers == {"x-seedgate-dropped-tools": "web_search"}
    assert converted["tool_choice"] == {"type": "function", "function": {"name": "run"}}


def test_options_map_to_their_chat_names() -> None:
    request = parse(
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
        stream=True,
    )
    converted = request.body
    assert converted["reasoning_effort"] == "high"
    assert (request.max_output_tokens, request.stream, request.n) == (300, True, 1)
    assert (converted["temperature"], converted["top_p"], converted["parallel_tool_calls"]) == (0.5, 0.9, False)
    assert converted["user"] == "u1"
    assert converted["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Out", "schema": {"type": "object"}, "strict": True},
    }
    assert not {"metadata", "prompt_cache_key", "max_output_tokens", "stream", "reasoning"} & converted.keys()


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": None}, "input"),
        ({"input": []}, "input"),
        ({"input": ["text"]}, "input.0"),
        ({"input": [{"role": "user", "content": 3}]}, "input.0.content"),
        ({"input": [{"role": ["user"], "content": "hi"}]}, "input.0.role"),  # unhashable: was a TypeError, a 500
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
        ({"input": "x", "tools": [{"type": "function", "name": "no spaces"}]}, "tools.0.name"),
        ({"input": "x", "tools": [{"type": "function", "name": "f", "parameters": "{}"}]}, "tools.0.parameters"),
        ({"input": "x", "reasoning": {"effort": "extreme"}}, "reasoning.effort"),
        ({"input": "x", "reasoning": {"effort": ["high"]}}, "reasoning.effort"),
        ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"input": "x", "max_output_tokens": True}, "max_output_tokens"),
        ({"input": "x", "temperature": 3}, "temperature"),
        ({"input": "x", "user": 5}, "user"),
        ({"input": "x", "stream": "yes"}, "stream"),
        ({"input": "x", "store": 1}, "store"),
        ({"input": "x", "include": "reasoning.encrypted_content"}, "include"),
        ({"input": "x", "include": [1]}, "include"),
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


def test_null_fields_count_as_absent_and_store_and_include_reach_the_context() -> None:
    request = parse(input="x", instructions=None, tools=None, temperature=None, store=None, stream=None)
    assert request.body == {"messages": [{"role": "user", "content": "x"}]}
    assert (request.stream, request.context.store, request.context.encrypted) == (False, True, False)
    assert request.context.input_items == [{"type": "message", "role": "user", "content": "x"}]
    request = parse(input=[{"role": "user", "content": "x"}], store=False, include=["reasoning.encrypted_content"])
    assert (request.context.store, request.context.encrypted, request.context.input_items) == (False, True, [])


def test_reasoning_effort_is_mapped_into_the_upstreams_range() -> None:
    assert chat(input="x", reasoning={"effort": "none"})["reasoning_effort"] == "minimal"
    assert chat(input="x", reasoning={"effort": "xhigh"})["reasoning_effort"] == "high"
    assert "reasoning_effort" not in chat(input="x", reasoning={"summary": "auto"})


def test_namespace_tools_whose_flattened_names_would_collide_keep_names_of_their_own() -> None:
    long = "list_repository_collaborators_for_"
    tools = [
        {
            "type": "namespace",
            "name": "mcp__enterprise_github_server",
            "tools": [
                {"type": "function", "name": long + "organization"},
                {"type": "function", "name": long + "user_account"},
            ],
        },
        {"type": "namespace", "name": "my.srv", "tools": [{"type": "function", "name": "run"}]},
        {"type": "namespace", "name": "my_srv", "tools": [{"type": "function", "name": "run"}]},
    ]
    request = parse(input="x", tools=tools)
    names = [tool["function"]["name"] for tool in request.body["tools"]]
    assert len(set(names)) == 4
    assert all(len(name) <= 64 and TOOL_NAME.match(name) for name in names)
    assert names[3] == "my_srv__run"  # a name that needed no change keeps it
    assert [request.context.names[name] for name in names] == [
        ("mcp__enterprise_github_server", long + "organization"),
        ("mcp__enterprise_github_server", long + "user_account"),
        ("my.srv", "run"),
        ("my_srv", "run"),
    ]


def test_a_tool_named_twice_is_refused_naming_the_second() -> None:
    twice = [{"type": "function", "name": "run"}, {"type": "function", "name": "run"}]
    clash = [
        {"type": "function", "name": "ns__run"},
        {"type": "namespace", "name": "ns", "tools": [{"type": "function", "name": "run"}]},
    ]
    for tools, param in ((twice, "tools.1.name"), (clash, "tools.1.tools.0.name")):
        with pytest.raises(InvalidRequest) as caught:
            parse(input="x", tools=tools)
        assert caught.value.param == param


def test_allowed_tools_sends_only_the_listed_tools_with_its_mode() -> None:
    tools = [
        {"type": "function", "name": "a"},
        {"type": "function", "name": "b"},
        {"type": "namespace", "name": "ns", "tools": [{"type": "function", "name": "c"}]},
    ]
    listed = [{"type": "function", "name": "a"}, {"type": "function", "name": "c", "namespace": "ns"}]
    request = parse(input="x", tools=tools, tool_choice={"type": "allowed_tools", "mode": "required", "tools": listed})
    assert [tool["function"]["name"] for tool in request.body["tools"]] == ["a", "ns__c"]
    assert request.body["tool_choice"] == "required"
    default = parse(input="x", tools=tools, tool_choice={"type": "allowed_tools", "tools": listed[:1]})
    assert (default.body["tool_choice"], len(default.body["tools"])) == ("auto", 1)
    for choice, param in (
        ({"type": "allowed_tools", "tools": [{"type": "function", "name": "zz"}]}, "tool_choice.tools"),
        ({"type": "allowed_tools", "tools": "a"}, "tool_choice.tools"),
        ({"type": "allowed_tools", "mode": "none", "tools": listed}, "tool_choice.mode"),
    ):
        with pytest.raises(InvalidRequest) as caught:
            parse(input="x", tools=tools, tool_choice=choice)
        assert caught.value.param == param


def test_state_kept_at_openai_and_a_text_that_is_no_object_are_refused_not_ignored() -> None:
    for field, value in (("conversation", "conv_1"), ("prompt", {"id": "pmpt_1"}), ("text", "plain")):
        with pytest.raises(InvalidRequest) as caught:
            parse(input="x", **{field: value})
        assert caught.value.param == field
    assert parse(input="x", conversation=None, prompt=None).body["messages"] == [{"role": "user", "content": "x"}]
