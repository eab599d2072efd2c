"""The official openai SDK's ``responses`` against a running gateway: create, stream, parse, tool and
reasoning round trips, ``previous_response_id``; every answer billed exactly like chat."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from pydantic import BaseModel

from app.fake_upstream import FakeUpstreamThread
from tests.support.gateway import GatewayProcess

MODEL = "doubao-seed-2.0-pro"


_opened: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def close_clients() -> Iterator[None]:
    """Each test's SDK clients are closed when it ends: a client left to the garbage collector (a parsed
    response keeps it in a reference cycle) would leak its socket."""
    yield
    while _opened:
        _opened.pop().close()


def client(gateway: GatewayProcess, key: str) -> openai.OpenAI:
    sdk = openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=key, max_retries=0, timeout=20)
    _opened.append(sdk)
    return sdk


def upstream_messages(fake: FakeUpstreamThread) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = fake.requests[-1]["body"]["messages"]
    return messages


def test_create_answers_and_bills_exactly(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    key_id, key = gateway.create_key("1")
    fake.enqueue({"content": "Hi!", "usage": {"prompt_tokens": 1000, "completion_tokens": 800}})
    response = client(gateway, key).responses.create(model=MODEL, input="hello", store=False)
    assert response.output_text == "Hi!"
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (1000, 800)
    # 1000 * 0.47/M + 800 * 2.37/M = 0.002366
    assert gateway.key(key_id)["balance_usd"] == "0.997634"
    [row] = gateway.usage(key_id)
    assert (row["cost_usd"], row["endpoint"], row["stream"]) == ("0.002366", "responses", False)


def test_stream_delivers_deltas_and_the_final_response(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    key_id, key = gateway.create_key("1")
    usage = {"prompt_tokens": 10, "completion_tokens": 20, "prompt_tokens_details": {"cached_tokens": 4}}
    fake.enqueue({"content_chunks": ["Hel", "lo"], "reasoning": "hmm", "usage": usage})
    deltas: list[str] = []
    with client(gateway, key).responses.stream(model=MODEL, input="hello", store=False) as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert deltas
    assert "".join(deltas) == "Hello"  # one delta event per write: pieces that arrived together are joined
    assert final.output_text == "Hello"
    assert final.usage is not None
    assert final.usage.input_tokens_details.cached_tokens == 4
    [row] = gateway.usage(key_id)
    assert (row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"], row["stream"]) == (10, 20, 4, True)
    # 10 * 0.47/M ... cached at 0.09: 6 * 0.47 + 4 * 0.09 + 20 * 2.37 = 2.82 + 0.36 + 47.4 = 50.58 micro-USD
    assert row["cost_usd"] == "0.00005058"
    assert gateway.key(key_id)["balance_usd"] == "0.99994942"


def test_a_function_call_round_trips(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    _, key = gateway.create_key("1")
    sdk = client(gateway, key)
    tools: list[Any] = [
        {"type": "function", "name": "get_weather", "parameters": {"type": "object"}, "strict": False},
    ]
    fake.enqueue({"content": "", "tool_calls": [{"id": "call_1", "name": "get_weather", "arguments": '{"c":"P"}'}]})
    first = sdk.responses.create(model=MODEL, input="weather in Paris?", tools=tools, store=False)
    [call] = first.output
    assert call.type == "function_call"
    assert (call.call_id, call.name, call.arguments) == ("call_1", "get_weather", '{"c":"P"}')
    fake.enqueue({"content": "Sunny."})
    second = sdk.responses.create(
        model=MODEL,
        tools=tools,
        store=False,
        input=[
            {"role": "user", "content": "weather in Paris?"},
            call.model_dump(exclude_none=True),  # type: ignore[list-item]
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny, 21C"},
        ],
    )
    assert second.output_text == "Sunny."
    messages = upstream_messages(fake)
    assert messages[1]["tool_calls"][0]["id"] == "call_1"
    assert messages[2] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21C"}


def test_reasoning_round_trips_sealed_and_chains_by_previous_response_id(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    _, key = gateway.create_key("1")
    sdk = client(gateway, key)
    fake.enqueue({"reasoning": "private chain", "content": "42"})
    first = sdk.responses.create(model=MODEL, input="answer?", include=["reasoning.encrypted_content"], store=True)
    reasoning = first.output[0]
    assert reasoning.type == "reasoning"
    assert reasoning.encrypted_content
    assert "private chain" not in reasoning.encrypted_content
    fake.enqueue({"content": "43"})
    sdk.responses.create(
        model=MODEL,
        store=False,
        input=[
            {"role": "user", "content": "answer?"},
            {"type": "reasoning", "id": reasoning.id, "summary": [], "encrypted_content": reasoning.encrypted_content},
            {"role": "assistant", "content": "42"},
            {"role": "user", "content": "plus one?"},
        ],
    )
    assert upstream_messages(fake)[1]["reasoning_content"] == "private chain"
    fake.enqueue({"content": "44"})
    chained = sdk.responses.create(model=MODEL, input="plus two?", previous_response_id=first.id)
    assert chained.previous_response_id == first.id
    assert [m["role"] for m in upstream_messages(fake)] == ["user", "assistant", "user"]
    assert upstream_messages(fake)[1]["reasoning_content"] == "private chain"
    assert sdk.responses.retrieve(first.id).output_text == "42"
    sdk.responses.delete(first.id)


class Capital(BaseModel):
    city: str


def test_parse_gets_a_typed_object_through_json_schema(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    _, key = gateway.create_key("1")
    fake.enqueue({"content": '{"city": "Rome"}'})
    parsed = client(gateway, key).responses.parse(model=MODEL, input="Capital of Italy?", text_format=Capital)
    assert parsed.output_parsed == Capital(city="Rome")
    response_format = fake.requests[-1]["body"]["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["name"] == "Capital"
