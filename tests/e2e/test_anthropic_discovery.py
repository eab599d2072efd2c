"""What Claude Code needs around the Messages calls: probes, model discovery, and pings on a silent stream."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import orjson

from app.fake_upstream import FakeUpstreamThread
from tests.e2e.conftest import StartGateway
from tests.support.gateway import GatewayProcess

MODEL = "doubao-seed-2.0-pro"
HELLO: list[Any] = [{"role": "user", "content": "hello"}]


def test_head_root_answers_without_auth(gateway: GatewayProcess) -> None:
    with httpx.Client(base_url=gateway.base_url, timeout=10) as http:
        assert http.head("/").status_code == 200
        assert http.head("/api/hello").status_code == 200


def test_models_with_anthropic_version_answer_in_the_anthropic_shape(gateway: GatewayProcess) -> None:
    _, key = gateway.create_key("1")
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    with httpx.Client(base_url=gateway.base_url, timeout=10) as http:
        response = http.get("/v1/models", params={"limit": 1000}, headers=headers)  # Claude Code's discovery call
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"data", "has_more", "first_id", "last_id"}
    assert body["has_more"] is False
    ids = [card["id"] for card in body["data"]]
    assert (body["first_id"], body["last_id"]) == (ids[0], ids[-1])
    for card in body["data"]:
        assert set(card) == {"type", "id", "display_name", "created_at"}
        assert card["type"] == "model"
        assert card["display_name"]
        assert card["created_at"].endswith("Z")
    assert {"doubao-seed-2.0-pro", "doubao-seed-2.0-mini", "claude-sonnet-4-6"} <= set(ids)
    assert "pro-latest" not in ids  # only claude-* aliases are listed for Claude Code


def test_sdk_model_discovery_lists_the_claude_alias(gateway: GatewayProcess) -> None:
    _, key = gateway.create_key("1")
    with anthropic.Anthropic(base_url=gateway.base_url, api_key=key, max_retries=0, timeout=20) as client:
        ids = [model.id for model in client.models.list()]
    assert "claude-sonnet-4-6" in ids


def test_models_errors_use_the_anthropic_envelope_with_anthropic_version(gateway: GatewayProcess) -> None:
    with httpx.Client(base_url=gateway.base_url, timeout=10) as http:
        response = http.get("/v1/models", headers={"x-api-key": "sk-bad", "anthropic-version": "2023-06-01"})
    assert response.status_code == 401
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "authentication_error"
    assert body["request_id"].startswith("req_")


def test_models_without_anthropic_version_stay_openai_shaped(gateway: GatewayProcess) -> None:
    _, key = gateway.create_key("1")
    with httpx.Client(base_url=gateway.base_url, timeout=10) as http:
        response = http.get("/v1/models", headers={"authorization": f"Bearer {key}"})
    assert response.status_code == 200
    assert response.json()["object"] == "list"


def test_pings_flow_while_the_upstream_is_silent(start_gateway: StartGateway, fake: FakeUpstreamThread) -> None:
    # A short heartbeat keeps the test fast; the default is 15 s (server.heartbeat_seconds).
    gateway = start_gateway({"server": {"heartbeat_seconds": 0.15}})
    _, key = gateway.create_key("1")
    fake.enqueue({"content_chunks": ["slow ", "answer"], "event_delay": 0.5})
    body = {"model": MODEL, "max_tokens": 100, "messages": HELLO, "stream": True}
    with httpx.Client(base_url=gateway.base_url, timeout=20) as http:
        response = http.post("/v1/messages", json=body, headers={"x-api-key": key})
    assert response.status_code == 200
    events = []
    for block in response.text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], orjson.loads(fields["data"])))
    names = [name for name, _ in events]
    assert names.count("ping") >= 2
    assert ("ping", {"type": "ping"}) in events
    assert names[0] == "message_start"
    assert names[-2:] == ["message_delta", "message_stop"]

    fake.enqueue({"content_chunks": ["slow ", "answer"], "event_delay": 0.3})
    with anthropic.Anthropic(base_url=gateway.base_url, api_key=key, max_retries=0, timeout=20) as client:
        with client.messages.stream(model=MODEL, max_tokens=100, messages=HELLO) as stream:
            message = stream.get_final_message()
    assert message.content[0].type == "text"
    assert message.content[0].text == "slow answer"
