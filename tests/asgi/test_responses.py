"""``POST /v1/responses`` through the whole pipeline in process: translation, stream events, billing, store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from tests.asgi.conftest import MakeHarness
from tests.support.inprocess import Harness

MODEL = "doubao-seed-2.0-pro"


def events(response: httpx.Response) -> list[dict[str, Any]]:
    out = []
    for block in response.text.split("\n\n"):
        lines = block.strip().splitlines()
        if len(lines) == 2 and lines[0].startswith("event: "):
            data = orjson.loads(lines[1].removeprefix("data: "))
            assert data["type"] == lines[0].removeprefix("event: ")
            out.append(data)
    return out


async def post(harness: Harness, key: str, body: dict[str, Any]) -> httpx.Response:
    async with harness.client(key) as client:
        return await client.post("/v1/responses", json={"model": MODEL, **body})


async def test_a_text_answer_is_a_response_object_billed_like_chat(harness: Harness) -> None:
    key_id, key = await harness.create_key("10")
    harness.upstream.enqueue({"content": "Hi there.", "usage": {"prompt_tokens": 40, "completion_tokens": 7}})
    response = await post(harness, key, {"input": "hello", "instructions": "Be brief.", "store": False})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "response"
    assert body["status"] == "completed"
    assert body["output"][0]["content"][0] == {
        "type": "output_text",
        "text": "Hi there.",
        "annotations": [],
        "logprobs": [],
    }
    assert body["usage"]["input_tokens"] == 40
    assert body["usage"]["output_tokens"] == 7
    sent = harness.upstream.requests[0]
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]
    [row] = await harness.usage(key_id)
    assert (row["endpoint"], row["prompt_tokens"], row["completion_tokens"]) == ("responses", 40, 7)
    assert await harness.ledger_balanced()


async def test_the_stream_emits_the_documented_event_sequence(harness: Harness) -> None:
    key_id, key = await harness.create_key("10")
    harness.upstream.enqueue(
        {
            "reasoning_chunks": ["Think", "ing."],
            "content_chunks": ["Hel", "lo."],
            "usage": {
                "prompt_tokens": 12,
                "completion_tokens": 9,
                "completion_tokens_details": {"reasoning_tokens": 4},
            },
        }
    )
    response = await post(harness, key, {"input": "hi", "stream": True, "store": False})
    assert response.status_code == 200
    seen = events(response)
    assert [e["sequence_number"] for e in seen] == list(range(len(seen)))
    kinds = [e["type"] for e in seen]  # one delta event per write: how many depends on how the pieces arrived
    assert [k for i, k in enumerate(kinds) if not (k.endswith(".delta") and kinds[i - 1] == k)] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    deltas = {k: "".join(e["delta"] for e in seen if e["type"] == k) for k in kinds if k.endswith(".delta")}
    assert deltas == {"response.reasoning_summary_text.delta": "Thinking.", "response.output_text.delta": "Hello."}
    final = seen[-1]["response"]
    assert [item["type"] for item in final["output"]] == ["reasoning", "message"]
    assert final["usage"]["output_tokens_details"]["reasoning_tokens"] == 4
    [row] = await harness.usage(key_id)
    assert (row["prompt_tokens"], row["completion_tokens"], row["stream"]) == (12, 9, True)
    assert await harness.ledger_balanced()


async def test_a_streamed_tool_call_becomes_a_function_call_item(harness: Harness) -> None:
    _, key = await harness.create_key("10")
    harness.upstream.enqueue(
        {"content": "", "tool_calls": [{"id": "call_7", "name": "get_weather", "arguments": '{"city": "Paris"}'}]}
    )
    tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}, {"type": "web_search"}]
    response = await post(harness, key, {"input": "weather?", "stream": True, "tools": tools, "store": False})
    assert response.headers["x-seedgate-dropped-tools"] == "web_search"
    seen = events(response)
    kinds = [e["type"] for e in seen]
    assert "response.function_call_arguments.delta" in kinds
    done = next(e for e in seen if e["type"] == "response.function_call_arguments.done")
    assert done["arguments"] == '{"city": "Paris"}'
    [item] = seen[-1]["response"]["output"]
    assert (item["type"], item["call_id"], item["name"]) == ("function_call", "call_7", "get_weather")
    assert harness.upstream.requests[0]["tools"] == [
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    ]


async def test_hostile_tool_types_reach_the_dropped_tools_header_and_errors_only_as_safe_labels(
    harness: Harness,
) -> None:
    _, key = await harness.create_key("10")
    harness.upstream.enqueue({"content": "ok"})
    tools = [
        {"type": "function", "name": "f"},
        {"type": "web\r\nx-evil: 1"},
        {"type": "caf\u00e9\u20ac_search"},
        {"type": "namespace", "name": "n", "tools": [{"type": "x\ny"}]},
    ]
    response = await post(harness, key, {"input": "hi", "tools": tools, "store": False})
    assert response.status_code == 200
    assert response.headers["x-seedgate-dropped-tools"] == "webx-evil1,caf_search,xy"
    forced = {"input": "hi", "tools": tools, "tool_choice": {"type": "a\r\nb\u20ac"}}
    refused = await post(harness, key, forced)
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == "tool_choice: forces a ab tool, which the upstream cannot run"
    assert await harness.ledger_balanced()


async def test_a_stream_cut_by_the_upstream_ends_in_response_failed(harness: Harness) -> None:
    _, key = await harness.create_key("10")
    harness.upstream.enqueue({"content": "one two three four five", "reset_after_events": 3})
    response = await post(harness, key, {"input": "hi", "stream": True})
    seen = events(response)
    assert seen[-1]["type"] == "response.failed"
    assert seen[-1]["response"]["status"] == "failed"
    assert seen[-1]["response"]["error"]["message"]
    assert await harness.ledger_balanced()


async def test_encrypted_reasoning_round_trips_and_forgeries_fall_back_to_the_summary(harness: Harness) -> None:
    _, key = await harness.create_key("10")
    harness.upstream.enqueue({"reasoning": "secret chain", "content": "ok"})
    first = await post(harness, key, {"input": "q", "include": ["reasoning.encrypted_content"], "store": False})
    reasoning = first.json()["output"][0]
    assert reasoning["type"] == "reasoning"
    assert "secret chain" not in reasoning["encrypted_content"]
    forged = {**reasoning, "id": "rs_x", "encrypted_content": reasoning["encrypted_content"][:-4] + "AAAA"}
    forged["summary"] = [{"type": "summary_text", "text": "the summary"}]
    history = [{"role": "user", "content": "q"}, reasoning, {"type": "message", "role": "assistant", "content": "ok"}]
    await post(harness, key, {"input": [*history, {"role": "user", "content": "again"}], "store": False})
    await post(harness, key, {"input": [{"role": "user", "content": "q"}, forged, history[2]], "store": False})
    assert harness.upstream.requests[1]["messages"][1]["reasoning_content"] == "secret chain"
    assert harness.upstream.requests[2]["messages"][1]["reasoning_content"] == "the summary"


async def test_stored_responses_chain_and_belong_to_their_key(make_harness: MakeHarness) -> None:
    async with make_harness() as harness:
        _, key = await harness.create_key("10")
        _, other = await harness.create_key("10")
        harness.upstream.enqueue({"content": "Paris."})
        first = (await post(harness, key, {"input": "Capital of France?"})).json()
        second = await post(harness, key, {"input": "And Italy?", "previous_response_id": first["id"]})
        assert second.status_code == 200, second.text
        assert [m["content"] for m in harness.upstream.requests[1]["messages"]] == [
            "Capital of France?",
            "Paris.",
            "And Italy?",
        ]
        async with harness.client(other) as client:
            assert (await client.get(f"/v1/responses/{first['id']}")).status_code == 404
            stolen = await client.post(
                "/v1/responses", json={"model": MODEL, "input": "x", "previous_response_id": first["id"]}
            )
            assert stolen.status_code == 400
            assert stolen.json()["error"]["param"] == "previous_response_id"
        async with harness.client(key) as client:
            fetched = await client.get(f"/v1/responses/{first['id']}")
            assert fetched.json() == first
            assert (await client.delete(f"/v1/responses/{first['id']}")).json()["deleted"] is True
            assert (await client.get(f"/v1/responses/{first['id']}")).status_code == 404
        async with harness.services.db.read() as conn:
            rows = (await conn.exec_driver_sql("SELECT sealed FROM stored_responses")).all()
        assert rows
        assert all("Paris" not in row[0] for row in rows)


async def test_store_false_keeps_nothing_and_retention_purges(make_harness: MakeHarness) -> None:
    async with make_harness() as harness:
        _, key = await harness.create_key("10")
        kept = (await post(harness, key, {"input": "a"})).json()
        await post(harness, key, {"input": "b", "store": False})
        async with harness.services.db.read() as conn:
            [(count,)] = (await conn.exec_driver_sql("SELECT COUNT(*) FROM stored_responses")).all()
        assert count == 1
        store = harness.services.stored_responses
        assert await store.purge() == 0  # younger than responses.retention_days (30)
        assert await store.purge(datetime.now(UTC) + timedelta(days=31)) == 1
        async with harness.client(key) as client:
            assert (await client.get(f"/v1/responses/{kept['id']}")).status_code == 404


async def test_bad_input_is_a_400_in_the_openai_envelope(harness: Harness) -> None:
    _, key = await harness.create_key("10")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"input": 5}, "input"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input.0.role"),
        ({"input": "x", "tools": [{"type": "web_search"}]}, "tools"),
        ({"input": "x", "tool_choice": {"type": "web_search"}, "tools": [{"type": "web_search"}]}, "tools"),
        ({"input": "x", "text": {"format": {"type": "json_schema"}}}, "text.format.name"),
        ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"input": "x", "store": "yes"}, "store"),
        ({"input": "x", "include": "reasoning.encrypted_content"}, "include"),
        ({"input": "x", "previous_response_id": 5}, "previous_response_id"),
        ({"input": "x", "previous_response_id": "resp_unknown"}, "previous_response_id"),
    ]
    for body, param in cases:
        response = await post(harness, key, body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]["type"] == "invalid_request_error"
        assert response.json()["error"]["param"] == param, body


async def test_a_store_that_fails_after_settling_does_not_fail_the_answer(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    key_id, key = await harness.create_key("10")

    async def broken_save(*args: Any) -> None:
        raise RuntimeError("database gone")

    monkeypatch.setattr(harness.services.stored_responses, "save", broken_save)
    response = await post(harness, key, {"input": "hi"})
    assert response.status_code == 200
    assert response.json()["status"] == "completed"
    assert len(await harness.usage(key_id)) == 1
    assert "could not finish" in caplog.text


async def test_an_id_this_gateway_never_issues_is_not_found_without_reaching_the_database(harness: Harness) -> None:
    _, key = await harness.create_key("10")
    async with harness.client(key) as client:
        for odd in ("resp_%00", "resp_a%0Ab", "resp_" + "a" * 65, "resp_%C3%A9"):
            assert (await client.get(f"/v1/responses/{odd}")).status_code == 404
            assert (await client.delete(f"/v1/responses/{odd}")).status_code == 404
    chained = await post(harness, key, {"input": "hi", "previous_response_id": "resp_\u0000"})
    assert chained.status_code == 400
    assert chained.json()["error"]["param"] == "previous_response_id"
    assert harness.upstream.requests == []
