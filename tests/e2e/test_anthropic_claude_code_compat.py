"""What Claude Code and the anthropic SDK rely on beyond the Messages shape (issue 12), with the official SDKs.

``request-id`` for the SDK's ``request_id``; ``x-should-retry`` so a refusal is not retried for
minutes; a ``/v1/v1/...`` base URL mistake explained in the client's own envelope; server tools refused
or dropped out loud (``app.dialects.anthropic.server_tools``).
"""

from __future__ import annotations

import time
from typing import Any

import anthropic
import openai
import pytest

from app.fake_upstream import FakeUpstreamThread
from tests.support.gateway import GatewayProcess

pytestmark = pytest.mark.e2e

MODEL = "doubao-seed-2.0-pro"
HELLO: list[Any] = [{"role": "user", "content": "hello"}]
READ = {"name": "Read", "description": "Read a file", "input_schema": {"type": "object", "properties": {}}}
WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 8}


def claude(gateway: GatewayProcess, key: str, *, base_url: str | None = None, retries: int = 0) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=base_url or gateway.base_url, api_key=key, max_retries=retries, timeout=20)


def test_the_anthropic_sdk_gets_the_request_id(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    _, key = gateway.create_key()
    raw = claude(gateway, key).messages.with_raw_response.create(model=MODEL, max_tokens=100, messages=HELLO)
    message = raw.parse()
    assert raw.headers["request-id"] == raw.headers["x-request-id"]
    assert raw.headers["request-id"].startswith("req_")
    assert message._request_id == raw.headers["request-id"]


def test_a_wrong_key_is_not_retried_by_the_anthropic_sdk(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    client = claude(gateway, "sk-wrong-key-0000000000000000", retries=5)
    started = time.monotonic()
    with pytest.raises(anthropic.AuthenticationError) as caught:
        client.messages.create(model=MODEL, max_tokens=100, messages=HELLO)
    # five retries with the SDK's back-off would take several seconds; x-should-retry: false stops them
    assert time.monotonic() - started < 2
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert caught.value.request_id == caught.value.response.headers["request-id"]


def test_an_overloaded_upstream_says_a_retry_may_help(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    _, key = gateway.create_key()
    fake.enqueue(*[{"status": 503} for _ in range(5)])
    with pytest.raises(anthropic.APIStatusError) as caught:
        claude(gateway, key).messages.create(model=MODEL, max_tokens=100, messages=HELLO)
    assert caught.value.status_code in (500, 529)
    assert caught.value.response.headers["x-should-retry"] == "true"


def test_a_base_url_ending_in_v1_is_explained_to_anthropic_clients(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    _, key = gateway.create_key()
    client = claude(gateway, key, base_url=gateway.base_url + "/v1")
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model=MODEL, max_tokens=100, messages=HELLO)
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["error"]["type"] == "not_found_error"
    assert "ANTHROPIC_BASE_URL to the gateway root without /v1" in body["error"]["message"]
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert fake.requests == []


def test_a_doubled_v1_is_explained_to_openai_clients(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    _, key = gateway.create_key()
    client = openai.OpenAI(base_url=gateway.base_url + "/v1/v1", api_key=key, max_retries=0, timeout=20)
    with client, pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model=MODEL, messages=HELLO)
    assert caught.value.code == "base_url_doubled_v1"
    assert "http://HOST:PORT/v1 (with /v1 once)" in caught.value.message
    assert caught.value.response.headers["x-should-retry"] == "false"


def test_a_server_tool_next_to_function_tools_is_dropped_out_loud(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    _, key = gateway.create_key()
    raw = claude(gateway, key).messages.with_raw_response.create(
        model=MODEL,
        max_tokens=100,
        system="Be brief.",
        messages=HELLO,
        tools=[READ, WEB_SEARCH],  # type: ignore[list-item]
    )
    assert raw.headers["x-seedgate-dropped-tools"] == "web_search"
    [sent] = fake.requests
    assert [tool["function"]["name"] for tool in sent["body"]["tools"]] == ["Read"]
    system = sent["body"]["messages"][0]["content"]
    assert system.startswith("Be brief.\n\nNote: the tools web_search are not available")


def test_a_request_only_a_server_tool_could_serve_is_refused_naming_it(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    _, key = gateway.create_key()
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude(gateway, key).messages.create(
            model=MODEL,
            max_tokens=100,
            messages=[{"role": "user", "content": "Perform a web search for the query: seedgate"}],
            tools=[WEB_SEARCH],  # type: ignore[list-item]
        )
    assert "'web_search' is not available through this gateway" in caught.value.message
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert fake.requests == []
