from typing import Any

import pytest

from app.chat_request import MAX_N, parse_chat_request
from app.errors import InvalidRequest

USER = {"role": "user", "content": "hi"}


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "doubao-seed-2.0-pro", "messages": [USER], **fields}


def refused(payload: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        parse_chat_request(payload)
    assert info.value.status == 400
    return info.value


def test_minimal_request() -> None:
    request = parse_chat_request(body())
    assert request.model == "doubao-seed-2.0-pro"
    assert request.body == {"messages": [USER]}
    assert request.stream is False
    assert request.include_usage is False
    assert request.n == 1
    assert request.max_output_tokens is None


def test_known_fields_are_forwarded_unchanged() -> None:
    fields = {
        "temperature": 0.7,
        "top_p": 1,
        "frequency_penalty": -2,
        "presence_penalty": 2.0,
        "stop": ["a", "b", "c", "d"],
        "logprobs": True,
        "top_logprobs": 20,
        "logit_bias": {"42": -100, "7": 100},
        "seed": -(2**63),
        "user": "u-1",
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
        "thinking": {"type": "enabled"},
    }
    request = parse_chat_request(body(**fields))
    assert request.body == {"messages": [USER], **fields}


@pytest.mark.parametrize(
    "field",
    ["api_base", "base_url", "api_key", "headers", "extra_headers", "custom_llm_provider", "metadata", "store"],
)
def test_unknown_fields_never_reach_the_upstream(field) -> None:
    request = parse_chat_request(body(**{field: "http://evil.example"}))
    assert field not in request.body


def test_routing_fields_are_not_in_the_forwarded_body() -> None:
    request = parse_chat_request(
        body(stream=True, stream_options={"include_usage": True}, max_tokens=5, max_completion_tokens=9, n=2)
    )
    assert set(request.body) == {"messages"}
    assert (request.stream, request.include_usage, request.n) == (True, True, 2)


@pytest.mark.parametrize(
    ("max_tokens", "max_completion_tokens", "expected"),
    [(100, None, 100), (None, 200, 200), (300, 50, 50), (50, 300, 300), (None, None, None)],
)
def test_max_completion_tokens_wins_over_max_tokens(max_tokens, max_completion_tokens, expected) -> None:
    request = parse_chat_request(body(max_tokens=max_tokens, max_completion_tokens=max_completion_tokens))
    assert request.max_output_tokens == expected


def test_developer_role_becomes_system_without_touching_the_input() -> None:
    developer = {"role": "developer", "content": "be brief"}
    request = parse_chat_request(body(messages=[developer, USER]))
    assert request.body["messages"] == [{"role": "system", "content": "be brief"}, USER]
    assert developer["role"] == "developer"


def test_reasoning_content_of_assistant_messages_is_kept() -> None:
    assistant = {
        "role": "assistant",
        "content": None,
        "reasoning_content": "I should call the tool.",
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    }
    tool = {"role": "tool", "tool_call_id": "call_1", "content": "42"}
    request = parse_chat_request(body(messages=[USER, assistant, tool]))
    assert request.body["messages"][1]["reasoning_content"] == "I should call the tool."
    assert request.body["messages"] == [USER, assistant, tool]


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("none", "minimal"),
        ("minimal", "minimal"),
        ("low", "low"),
        ("medium", "medium"),
        ("high", "high"),
        ("xhigh", "high"),
        ("max", "high"),
    ],
)
def test_reasoning_effort_is_mapped_to_the_upstream_range(given, sent) -> None:
    assert parse_chat_request(body(reasoning_effort=given)).body["reasoning_effort"] == sent


def test_thinking_keeps_only_its_type() -> None:
    request = parse_chat_request(body(thinking={"type": "disabled", "budget_tokens": 10**9}))
    assert request.body["thinking"] == {"type": "disabled"}


def test_content_parts_of_any_type_pass_through() -> None:
    parts = [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "video_url", "video_url": {"url": "https://v.example/a.mp4", "fps": 1}},
    ]
    request = parse_chat_request(body(messages=[{"role": "user", "content": parts}]))
    assert request.body["messages"][0]["content"] == parts


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ([], None),
        ("text", None),
        (None, None),
        ({"messages": [USER]}, "model"),
        (body(model=""), "model"),
        (body(model="   "), "model"),
        (body(model=7), "model"),
        (body(messages=None), "messages"),
        (body(messages=[]), "messages"),
        (body(messages="hi"), "messages"),
        (body(messages=["hi"]), "messages[0]"),
        (body(messages=[USER, {"content": "x"}]), "messages[1].role"),
        (body(messages=[{"role": ["user"], "content": "x"}]), "messages[0].role"),  # unhashable: was a 500
        (body(messages=[{"role": "robot", "content": "x"}]), "messages[0].role"),
        (body(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
        (body(messages=[{"role": "user"}]), "messages[0].content"),
        (body(messages=[{"role": "system", "content": None}]), "messages[0].content"),
        (body(messages=[{"role": "user", "content": ["text"]}]), "messages[0].content[0]"),
        (body(messages=[{"role": "user", "content": [{"text": "no type"}]}]), "messages[0].content[0]"),
        (body(messages=[USER, {"role": "tool", "content": "42"}]), "messages[1].tool_call_id"),
        (body(temperature=2.01), "temperature"),
        (body(temperature=-0.1), "temperature"),
        (body(temperature="hot"), "temperature"),
        (body(temperature=True), "temperature"),
        (body(temperature=float("nan")), "temperature"),
        (body(top_p=1.5), "top_p"),
        (body(frequency_penalty=-2.5), "frequency_penalty"),
        (body(presence_penalty=3), "presence_penalty"),
        (body(stop=["a", "b", "c", "d", "e"]), "stop"),
        (body(stop=[1]), "stop"),
        (body(stop=7), "stop"),
        (body(logprobs="yes"), "logprobs"),
        (body(logprobs=True, top_logprobs=21), "top_logprobs"),
        (body(top_logprobs=5), "top_logprobs"),
        (body(logprobs=False, top_logprobs=5), "top_logprobs"),
        (body(logit_bias=[1, 2]), "logit_bias"),
        (body(logit_bias={"1": 101}), "logit_bias"),
        (body(seed=2**63), "seed"),
        (body(seed=1.5), "seed"),
        (body(user=123), "user"),
        (body(user=True), "user"),
        (body(tools={"type": "function"}), "tools"),
        (body(tools=[{"type": "retrieval", "function": {"name": "f"}}]), "tools[0]"),
        (body(tools=["f"]), "tools[0]"),
        (body(tools=[{"type": "function"}]), "tools[0]"),
        (body(tools=[{"type": "function", "function": {"name": "bad name"}}]), "tools[0].function.name"),
        (body(tools=[{"type": "function", "function": {"name": "f" * 65}}]), "tools[0].function.name"),
        (
            body(tools=[{"type": "function", "function": {"name": "f", "parameters": "{}"}}]),
            "tools[0].function.parameters",
        ),
        (body(tool_choice="always"), "tool_choice"),
        (body(tool_choice={"type": "function", "function": {}}), "tool_choice"),
        (body(tool_choice=["auto"]), "tool_choice"),
        (body(parallel_tool_calls="true"), "parallel_tool_calls"),
        (body(response_format={"type": "yaml"}), "response_format"),
        (body(response_format="json_object"), "response_format"),
        (body(response_format={"type": "json_schema", "json_schema": {}}), "response_format.json_schema"),
        (body(reasoning_effort="extreme"), "reasoning_effort"),
        (body(reasoning_effort=["high"]), "reasoning_effort"),
        (body(thinking={"type": "on"}), "thinking"),
        (body(thinking="enabled"), "thinking"),
        (body(stream="true"), "stream"),
        (body(stream_options={"include_usage": True}), "stream_options"),
        (body(stream=False, stream_options={"include_usage": True}), "stream_options"),
        (body(stream=True, stream_options=["include_usage"]), "stream_options"),
        (body(stream=True, stream_options={"include_usage": "yes"}), "stream_options.include_usage"),
        (body(n=0), "n"),
        (body(n=MAX_N + 1), "n"),
        (body(n="2"), "n"),
        (body(max_tokens=0), "max_tokens"),
        (body(max_tokens=-1), "max_tokens"),
        (body(max_tokens=2**31), "max_tokens"),
        (body(max_tokens=10.5), "max_tokens"),
        (body(max_completion_tokens=0), "max_completion_tokens"),
        (body(max_completion_tokens=True), "max_completion_tokens"),
    ],
)
def test_invalid_requests_name_the_offending_field(payload, param) -> None:
    assert refused(payload).param == param


def test_every_valid_tool_choice_string_is_accepted() -> None:
    for choice in ("none", "auto", "required"):
        assert parse_chat_request(body(tool_choice=choice)).body["tool_choice"] == choice


def test_n_up_to_the_maximum_is_accepted() -> None:
    assert parse_chat_request(body(n=MAX_N)).n == MAX_N


def test_null_fields_are_treated_as_absent() -> None:
    request = parse_chat_request(body(temperature=None, stop=None, stream=None, n=None, max_tokens=None))
    assert request.body == {"messages": [USER]}
    assert (request.stream, request.n, request.max_output_tokens) == (False, 1, None)


def test_error_messages_never_echo_the_offending_value() -> None:
    secret = "sk-ThisLooksLikeAKey0123456789"
    for payload in (body(user=[secret]), body(stop={"x": secret}), body(temperature=secret)):
        error = refused(payload)
        assert secret not in error.message


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"functions": [{"name": "f", "parameters": {}}]}, "functions"),
        ({"function_call": {"name": "f"}}, "function_call"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"modalities": "audio"}, "modalities"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"web_search_options": {}}, "web_search_options"),
    ],
)
def test_asking_for_what_the_upstream_cannot_do_is_a_400_not_a_different_answer(fields, param) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_chat_request(body(**fields))
    assert caught.value.param == param


def test_text_only_modalities_and_null_legacy_fields_pass() -> None:
    request = parse_chat_request(body(modalities=["text"], functions=None, function_call=None, audio=None))
    assert request.body == {"messages": [{"role": "user", "content": "hi"}]}


def test_allowed_tools_sends_only_the_listed_tools_with_its_mode_as_tool_choice() -> None:
    tools = [{"type": "function", "function": {"name": name}} for name in ("a", "b", "c")]
    listed = [{"type": "function", "function": {"name": "a"}}, {"type": "function", "function": {"name": "c"}}]
    choice = {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": listed}}
    request = parse_chat_request(body(tools=tools, tool_choice=choice))
    assert [tool["function"]["name"] for tool in request.body["tools"]] == ["a", "c"]
    assert request.body["tool_choice"] == "required"
    for bad in (
        {"type": "allowed_tools", "allowed_tools": {"mode": "none", "tools": listed}},
        {"type": "allowed_tools", "allowed_tools": {"tools": "a"}},
        {"type": "allowed_tools", "allowed_tools": {"tools": [{"type": "function", "function": {"name": "z"}}]}},
    ):
        with pytest.raises(InvalidRequest) as caught:
            parse_chat_request(body(tools=tools, tool_choice=bad))
        assert caught.value.param == "tool_choice.allowed_tools"
