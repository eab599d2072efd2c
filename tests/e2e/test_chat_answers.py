"""Answers through the official SDK: streamed and not, every model name form, and the model list."""

from __future__ import annotations

import openai
import pytest
from openai.types.chat import ChatCompletionToolParam

from app.fake_upstream import FakeUpstreamThread
from tests.support.gateway import (
    HELLO,
    UPSTREAM_KEY,
    GatewayProcess,
    api_client,
    error_of,
    openai_client,
)

PRO_UPSTREAM = "doubao-seed-2-0-pro-260215"


def test_non_stream_answer_reaches_the_sdk(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    _, key = gateway.create_key("1")
    fake.enqueue({"content": "Bonjour", "reasoning": "thinking hard", "model": PRO_UPSTREAM})
    with openai_client(gateway, key) as client:
        answer = client.chat.completions.create(model="doubao-seed-2.0-pro", messages=HELLO)
    assert answer.choices[0].message.content == "Bonjour"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.model == PRO_UPSTREAM  # the upstream's versioned id passes through
    assert answer.usage is not None
    assert answer.usage.completion_tokens > 0
    assert (answer.choices[0].message.model_extra or {}).get("reasoning_content") == "thinking hard"


def test_stream_answer_reaches_the_sdk_chunk_by_chunk(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    _, key = gateway.create_key("1")
    fake.enqueue({"content_chunks": ["One ", "two ", "three"]})
    with openai_client(gateway, key) as client:
        stream = client.chat.completions.create(model="doubao-seed-2.0-pro", messages=HELLO, stream=True)
        chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert pieces == ["One ", "two ", "three"]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert len({c.id for c in chunks}) == 1


@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls_reach_the_sdk(gateway: GatewayProcess, fake: FakeUpstreamThread, stream: bool) -> None:
    _, key = gateway.create_key("1")
    call = {"id": "call_1", "name": "get_weather", "arguments_chunks": ['{"city": ', '"Paris"}']}
    fake.enqueue({"content": "", "tool_calls": [call]})
    tools: list[ChatCompletionToolParam] = [
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    ]
    with openai_client(gateway, key) as client:
        if stream:
            chunks = list(client.chat.completions.create(model="pro-latest", messages=HELLO, tools=tools, stream=True))
            fragments = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or ()]
            assert fragments[0].id == "call_1"
            assert fragments[0].function is not None
            assert fragments[0].function.name == "get_weather"
            arguments = "".join(f.function.arguments or "" for f in fragments if f.function)
            finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        else:
            answer = client.chat.completions.create(model="pro-latest", messages=HELLO, tools=tools)
            [tool_call] = answer.choices[0].message.tool_calls or []
            assert tool_call.type == "function"
            assert tool_call.function.name == "get_weather"
            arguments = tool_call.function.arguments
            finish = [answer.choices[0].finish_reason]
    assert arguments == '{"city": "Paris"}'
    assert finish == ["tool_calls"]
    assert fake.requests[0]["body"]["tools"] == tools


@pytest.mark.parametrize(
    "name",
    ["doubao-seed-2.0-pro", "doubao-seed-2-0-pro", "DOUBAO-SEED-2.0-PRO", "doubao-seed-2.0-pro-260215", "pro-latest"],
)
def test_every_model_name_form_resolves_to_the_configured_upstream_model(
    gateway: GatewayProcess, fake: FakeUpstreamThread, name: str
) -> None:
    key_id, key = gateway.create_key("1")
    with openai_client(gateway, key) as client:
        answer = client.chat.completions.create(model=name, messages=HELLO)
    assert answer.choices[0].message.content
    [sent] = fake.requests
    assert sent["body"]["model"] == PRO_UPSTREAM
    [row] = gateway.usage(key_id)
    assert row["model"] == "doubao-seed-2.0-pro"


def test_upstream_gets_the_allow_listed_body_and_its_own_key(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    _, key = gateway.create_key("1")
    body = {
        "model": "doubao-seed-2.0-mini",
        "messages": [{"role": "developer", "content": "be brief"}, *HELLO],
        "temperature": 0.5,
        "api_base": "http://attacker.invalid",
        "extra_headers": {"x-evil": "1"},
        "reasoning_effort": "xhigh",
    }
    with api_client(gateway, key) as http:
        response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    [sent] = fake.requests
    assert sent["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert key not in str(sent)
    assert sent["body"]["model"] == "doubao-seed-2-0-mini-260215"
    assert "api_base" not in sent["body"]
    assert "extra_headers" not in sent["body"]
    assert sent["body"]["temperature"] == 0.5
    assert sent["body"]["reasoning_effort"] == "high"
    assert sent["body"]["messages"][0]["role"] == "system"


def test_missing_max_tokens_sends_and_reserves_the_model_cap(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    _, key = gateway.create_key("1")
    with api_client(gateway, key) as http:
        default = http.post("/v1/chat/completions", json={"model": "pro-latest", "messages": HELLO})
        capped = http.post("/v1/chat/completions", json={"model": "pro-latest", "messages": HELLO, "max_tokens": 10**6})
        small = http.post("/v1/chat/completions", json={"model": "pro-latest", "messages": HELLO, "max_tokens": 7})
    assert (default.status_code, capped.status_code, small.status_code) == (200, 200, 200)
    assert [r["body"]["max_completion_tokens"] for r in fake.requests] == [1000, 1000, 7]


def test_x_api_key_header_authenticates_like_bearer(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    _, key = gateway.create_key("1")
    with api_client(gateway) as http:
        response = http.post(
            "/v1/chat/completions", json={"model": "pro-latest", "messages": HELLO}, headers={"x-api-key": key}
        )
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"].startswith("req_")


def test_models_list_shows_public_ids_with_pricing_context_and_features(gateway: GatewayProcess) -> None:
    _, key = gateway.create_key("0")
    with openai_client(gateway, key) as client:
        ids = [model.id for model in client.models.list()]
    assert "doubao-seed-2.0-pro" in ids
    assert "doubao-seed-2.0-mini" in ids
    assert "pro-latest" not in ids  # plain aliases are names, not models
    with api_client(gateway, key) as http:
        listing = http.get("/v1/models").json()
    assert listing["object"] == "list"
    pro = next(card for card in listing["data"] if card["id"] == "doubao-seed-2.0-pro")
    assert pro["object"] == "model"
    assert isinstance(pro["created"], int)
    assert pro["context_window"] == 262144
    assert pro["features"] == ["thinking", "vision"]
    assert pro["pricing"]["input"] == "0.47"
    assert pro["pricing"]["output"] == "2.37"
    assert pro["pricing"]["cached_input"] == "0.09"
    mini = next(card for card in listing["data"] if card["id"] == "doubao-seed-2.0-mini")
    assert mini["pricing"]["cached_input"] == "0.14"  # no cached price configured: the input price


@pytest.mark.parametrize("name", ["pro-latest", "DOUBAO-SEED-2-0-PRO-260215", "doubao-seed-2.0-pro"])
def test_model_lookup_resolves_aliases_to_the_public_id(gateway: GatewayProcess, name: str) -> None:
    _, key = gateway.create_key("0")
    with openai_client(gateway, key) as client:
        model = client.models.retrieve(name)
    assert model.id == "doubao-seed-2.0-pro"


def test_unknown_model_lookup_is_404_model_not_found(gateway: GatewayProcess) -> None:
    _, key = gateway.create_key("0")
    with api_client(gateway, key) as http:
        error = error_of(http.get("/v1/models/gpt-nope"), 404)
    assert error["code"] == "model_not_found"
    assert error["param"] == "model"
    with openai_client(gateway, key) as client, pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-nope")


def test_model_list_needs_a_key(gateway: GatewayProcess) -> None:
    with api_client(gateway) as http:
        error_of(http.get("/v1/models"), 401)
        error_of(http.get("/v1/models/pro-latest"), 401)


def test_root_probe_answers_without_auth(gateway: GatewayProcess) -> None:
    with api_client(gateway) as http:
        assert http.head("/").status_code == 200
        assert http.get("/healthz").status_code == 200
