"""The fake upstream over real loopback HTTP: non-stream answers, selection, errors, control, framing."""

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.fake_upstream import DEFAULT_CONTENT, FakeUpstream, Script

CHAT = "/chat/completions"


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture
async def client(fake: FakeUpstream) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake.url, timeout=5.0) as http:
        yield http


def chat_body(text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": "doubao-seed-2-0-pro", "messages": [{"role": "user", "content": text}], **extra}


def control(fake: FakeUpstream, route: str) -> str:
    return f"http://127.0.0.1:{fake.port}/_control/{route}"


async def answer_of(client: httpx.AsyncClient, text: str = "hi") -> str:
    response = await client.post(CHAT, json=chat_body(text))
    content: str = response.json()["choices"][0]["message"]["content"]
    return content


async def test_non_stream_answer_has_the_openai_shape(client: httpx.AsyncClient) -> None:
    messages = [
        {"role": "system", "content": "s" * 20},
        {"role": "user", "content": [{"type": "text", "text": "u" * 21}]},
    ]
    response = await client.post(CHAT, json={"model": "m-1", "messages": messages})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert isinstance(body["created"], int)
    assert body["model"] == "m-1"
    assert body["choices"] == [
        {
            "index": 0,
            "finish_reason": "stop",
            "logprobs": None,
            "message": {"role": "assistant", "content": DEFAULT_CONTENT},
            "moderation_hit_type": None,
        }
    ]
    assert body["usage"] == {
        "prompt_tokens": 41 // 4,
        "completion_tokens": len(DEFAULT_CONTENT) // 4,
        "total_tokens": 41 // 4 + len(DEFAULT_CONTENT) // 4,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


async def test_non_stream_answer_carries_reasoning_tool_calls_and_scripted_model(
    fake: FakeUpstream, client: httpx.AsyncClient
) -> None:
    fake.enqueue(
        {
            "content": "",
            "reasoning": "thinking",
            "model": "doubao-seed-2-0-pro-260215",
            "tool_calls": [{"id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'}],
        }
    )
    body = (await client.post(CHAT, json=chat_body())).json()
    assert body["model"] == "doubao-seed-2-0-pro-260215"
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": "",
        "reasoning_content": "thinking",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
        ],
    }
    assert body["usage"]["completion_tokens_details"] == {"reasoning_tokens": 2}


async def test_usage_omit_sends_no_usage(fake: FakeUpstream, client: httpx.AsyncClient) -> None:
    fake.enqueue({"usage": "omit"})
    assert "usage" not in (await client.post(CHAT, json=chat_body())).json()


@pytest.mark.parametrize("path", ["/api/v3/chat/completions", "/proxy/openai/v1/chat/completions"])
async def test_any_path_ending_in_chat_completions_is_served(fake: FakeUpstream, path: str) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{fake.port}") as http:
        response = await http.post(path, json=chat_body())
    assert response.json()["object"] == "chat.completion"


async def test_models_lists_openai_shaped_models(client: httpx.AsyncClient) -> None:
    body = (await client.get("/models")).json()
    assert body["object"] == "list"
    assert body["data"]
    assert all(set(model) == {"id", "object", "created", "owned_by"} for model in body["data"])


async def test_unknown_route_is_a_404_error_envelope(client: httpx.AsyncClient) -> None:
    response = await client.get("/nothing")
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


async def test_invalid_json_body_is_a_400(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, content=b"{nope", headers={"content-type": "application/json"})
    assert response.status_code == 400


async def test_queue_is_first_in_first_out_then_default(fake: FakeUpstream, client: httpx.AsyncClient) -> None:
    fake.enqueue({"content": "first"}, Script(content="second"))
    assert [await answer_of(client) for _ in range(3)] == ["first", "second", DEFAULT_CONTENT]


async def test_a_models_own_queue_answers_it_before_the_shared_queue(
    fake: FakeUpstream, client: httpx.AsyncClient
) -> None:
    fake.enqueue({"content": "shared"})
    fake.enqueue_for_model("sub-model", {"content": "sub 1"}, {"content": "sub 2"})
    queued = await client.post(control(fake, "scripts"), json={"model": "main-model", "scripts": [{"content": "main"}]})
    assert queued.json() == {"queued": 1}

    async def ask(model: str) -> str:
        response = await client.post(CHAT, json={**chat_body(), "model": model})
        content: str = response.json()["choices"][0]["message"]["content"]
        return content

    asked = [await ask(m) for m in ("sub-model", "main-model", "main-model", "sub-model", "sub-model", "main-model")]
    assert asked == ["sub 1", "main", "shared", "sub 2", DEFAULT_CONTENT, DEFAULT_CONTENT]


async def test_named_marker_wins_over_queue_and_is_not_consumed(fake: FakeUpstream, client: httpx.AsyncClient) -> None:
    fake.set_named("greet", {"content": "named"})
    fake.set_named("other", {"content": "other"})
    fake.enqueue({"content": "queued"})
    assert await answer_of(client, "please #script:greet") == "named"
    assert await answer_of(client, "again #script:greet") == "named"
    assert await answer_of(client, "#script:greet then #script:other") == "other"
    assert await answer_of(client, "plain") == "queued"


async def test_marker_in_text_parts_selects_named_script(fake: FakeUpstream, client: httpx.AsyncClient) -> None:
    fake.set_named("parts", {"content": "from parts"})
    content = [{"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "go #script:parts"}]
    body = {"model": "m", "messages": [{"role": "user", "content": content}]}
    assert (await client.post(CHAT, json=body)).json()["choices"][0]["message"]["content"] == "from parts"


async def test_missing_named_script_is_a_500_naming_it(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=chat_body("#script:ghost"))
    assert response.status_code == 500
    assert "'ghost'" in response.json()["error"]["message"]


@pytest.mark.parametrize("stream", [False, True])
async def test_error_status_returns_error_body_and_headers(
    fake: FakeUpstream, client: httpx.AsyncClient, stream: bool
) -> None:
    error = {"error": {"message": "slow down", "type": "rate_limit", "param": None, "code": "RateLimitExceeded"}}
    fake.enqueue({"status": 429, "error_body": error, "headers": {"retry-after": "7"}})
    response = await client.post(CHAT, json=chat_body(stream=stream))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.headers["content-type"] == "application/json"
    assert response.json() == error


async def test_default_error_body_is_an_openai_envelope(fake: FakeUpstream, client: httpx.AsyncClient) -> None:
    fake.enqueue({"status": 503})
    response = await client.post(CHAT, json=chat_body())
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "fake_error"


async def test_delay_before_headers_holds_the_response(fake: FakeUpstream, client: httpx.AsyncClient) -> None:
    fake.enqueue({"delay_before_headers": 0.3})
    started = time.monotonic()
    await client.post(CHAT, json=chat_body())
    assert time.monotonic() - started >= 0.3


async def test_hang_never_answers_until_the_client_gives_up(fake: FakeUpstream, client: httpx.AsyncClient) -> None:
    fake.enqueue({"hang": True})
    with pytest.raises(httpx.ReadTimeout):
        await client.post(CHAT, json=chat_body(), timeout=0.3)
    assert await answer_of(client) == DEFAULT_CONTENT


async def test_body_padding_makes_a_large_body(fake: FakeUpstream, client: httpx.AsyncClient) -> None:
    fake.enqueue({"body_padding_bytes": 300_000})
    response = await client.post(CHAT, json=chat_body())
    assert len(response.content) >= 300_000
    assert response.json()["usage"]["completion_tokens"] >= 300_000 // 4 - 200


async def test_echo_mode_repeats_the_last_user_text() -> None:
    async with FakeUpstream(echo=True) as upstream, httpx.AsyncClient(base_url=upstream.url) as http:
        body = {"model": "m", "messages": [{"role": "user", "content": "old"}, {"role": "user", "content": "x" * 300}]}
        content = (await http.post(CHAT, json=body)).json()["choices"][0]["message"]["content"]
    assert content == "Seedgate demo: you said: " + "x" * 200


async def test_requests_are_recorded_in_order_without_control_calls(
    fake: FakeUpstream, client: httpx.AsyncClient
) -> None:
    await client.post(CHAT, json=chat_body("one"), headers={"Authorization": "Bearer up", "X-Trace": "t"})
    await client.get("/models?limit=5")
    await client.get(control(fake, "requests"))
    records = fake.requests
    assert [(r["method"], r["path"]) for r in records] == [("POST", "/v1/chat/completions"), ("GET", "/v1/models")]
    assert records[0]["headers"]["authorization"] == "Bearer up"
    assert records[0]["headers"]["x-trace"] == "t"
    assert records[0]["body"] == chat_body("one")
    assert records[1]["body"] is None
    assert records[1]["query"] == "limit=5"


async def test_control_endpoints_drive_the_server_over_http(fake: FakeUpstream, client: httpx.AsyncClient) -> None:
    queued = await client.post(control(fake, "scripts"), json={"scripts": [{"content": "a"}, {"content": "b"}]})
    assert queued.json() == {"queued": 2}
    assert (await client.put(control(fake, "named/n1"), json={"content": "named"})).status_code == 200
    assert await answer_of(client, "#script:n1") == "named"
    assert await answer_of(client) == "a"
    recorded = (await client.get(control(fake, "requests"))).json()["requests"]
    assert [r["body"]["messages"][0]["content"] for r in recorded] == ["#script:n1", "hi"]
    assert (await client.post(control(fake, "reset"))).json() == {"ok": True}
    assert fake.requests == []
    assert await answer_of(client) == DEFAULT_CONTENT
    assert (await client.post(CHAT, json=chat_body("#script:n1"))).status_code == 500


async def test_control_rejects_bad_scripts_with_a_400(fake: FakeUpstream, client: httpx.AsyncClient) -> None:
    response = await client.post(control(fake, "scripts"), json={"scripts": [{"bogus": 1}]})
    assert response.status_code == 400
    assert "bogus" in response.json()["error"]["message"]
    assert (await client.post(control(fake, "scripts"), json={"content": "x"})).status_code == 400
    bad_model = {"model": 7, "scripts": [{"content": "x"}]}
    assert (await client.post(control(fake, "scripts"), json=bad_model)).status_code == 400
