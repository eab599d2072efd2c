"""Every branch of the request flow (app/pipeline.py) ends with the right answer and the books right.

Each test drives one path -- refused before the money, refused by the upstream, broken answers,
policy hits, failover -- through the real pipeline in process, and checks what the client saw and
what was charged (usually: nothing, and the ledger balanced with nothing held).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from app import pipeline
from app.dialects import upstream_tool_name
from app.money.records import Refusal
from app.money.rules import Quote
from app.relay import Relay
from app.tables import holds
from app.upstream import UpstreamReadError, UpstreamReadTimeout, UpstreamResponse
from tests.support.inprocess import Harness, ScriptedResponse

MODEL = "doubao-seed-2.0-pro"


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **fields}


async def nothing_charged(harness: Harness, key_id: str) -> None:
    assert await harness.ledger_balanced()
    assert await harness.usage(key_id) == []
    assert (await harness.key(key_id))["balance_usd"] == "10.00"


async def cancelled_once(harness: Harness, key: str, body: dict[str, Any], reached: asyncio.Event) -> None:
    """A chat request whose task is cancelled (the client gone, or a shutdown past its grace) once
    ``reached`` is set."""

    async def send() -> None:
        async with harness.client(key) as client:
            await client.post("/v1/chat/completions", json=body)

    task = asyncio.create_task(send())
    await asyncio.wait_for(reached.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def policy_events(harness: Harness, key_id: str) -> list[dict[str, Any]]:
    async with harness.admin() as admin:
        rows: list[dict[str, Any]] = (await admin.get("/admin/policy-events", params={"key_id": key_id})).json()["data"]
    return rows


def answer_once(harness: Harness, response: ScriptedResponse) -> None:
    """The next upstream call gets ``response`` (a body the scripts cannot express)."""
    transport = harness.upstream
    original = transport.post

    async def post(body: bytes, *, read_timeout: float) -> UpstreamResponse:
        transport.post = original  # type: ignore[method-assign]
        return response

    transport.post = post  # type: ignore[method-assign]


# -- refused before any money moves -----------------------------------------------------------------


async def test_a_draining_gateway_refuses_new_requests_with_503(harness: Harness) -> None:
    key_id, key = await harness.create_key()
    harness.services.lifecycle.draining = True
    try:
        async with harness.client(key) as client:
            response = await client.post("/v1/chat/completions", json=chat())
    finally:
        harness.services.lifecycle.draining = False
    assert response.status_code == 503
    assert "shutting down" in response.json()["error"]["message"]
    assert harness.upstream.requests == []
    await nothing_charged(harness, key_id)


async def test_a_body_that_is_not_json_is_a_400_and_costs_nothing(harness: Harness) -> None:
    key_id, key = await harness.create_key()
    async with harness.client(key) as client:
        response = await client.post(
            "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
        )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]["message"]
    await nothing_charged(harness, key_id)


def test_each_ledger_refusal_becomes_its_own_client_error() -> None:
    quote = Quote(
        prompt_tokens=10,
        max_output_tokens=1000,
        n=1,
        prompt_cost=10,
        output_price=100,
        hold=100_010,
    )
    assert pipeline.refused(Refusal("key", available=0, room=0), quote, 1024).status == 401
    assert pipeline.refused(Refusal("quota", available=0, room=0), quote, 1024).status == 429
    balance = pipeline.refused(Refusal("balance", available=5, room=5), quote, 1024)
    assert balance.status == 402
    assert "needs at least $" in balance.message


# -- what is sent upstream -------------------------------------------------------------------------------


async def test_n_choices_are_asked_of_the_upstream_and_held_for(harness: Harness) -> None:
    key_id, key = await harness.create_key()
    async with harness.client(key) as client:
        response = await client.post("/v1/chat/completions", json=chat(n=2, max_tokens=10))
    assert response.status_code == 200
    assert harness.upstream.requests[-1]["n"] == 2
    assert harness.upstream.requests[-1]["max_completion_tokens"] == 10
    [row] = await harness.usage(key_id)
    assert row["status"] == "ok"
    assert await harness.ledger_balanced()


async def test_a_retried_request_says_how_many_attempts_it_took(harness: Harness) -> None:
    key_id, key = await harness.create_key()
    harness.upstream.unreachable = 1
    async with harness.client(key) as client:
        response = await client.post("/v1/chat/completions", json=chat())
    assert response.status_code == 200
    assert response.headers["x-seedgate-attempts"] == "2"
    [row] = await harness.usage(key_id)
    assert row["status"] == "ok"


# -- the upstream refuses or breaks ---------------------------------------------------------------------


async def test_an_upstream_policy_refusal_is_free_and_recorded_for_the_operator(harness: Harness) -> None:
    key_id, key = await harness.create_key()
    harness.upstream.enqueue(
        {
            "status": 400,
            "error_body": {"error": {"message": "risk", "type": "invalid_request_error", "code": "SensitiveContent"}},
        }
    )
    async with harness.client(key) as client:
        response = await client.post("/v1/chat/completions", json=chat())
    assert response.status_code == 451
    assert response.json()["error"]["code"] == "content_policy_violation"
    await nothing_charged(harness, key_id)
    [event] = await policy_events(harness, key_id)
    assert event["code"] == "SensitiveContent"


async def test_a_content_filtered_answer_is_billed_and_recorded(harness: Harness) -> None:
    key_id, key = await harness.create_key()
    harness.upstream.enqueue({"content": "partial", "finish_reason": "content_filter"})
    async with harness.client(key) as client:
        response = await client.post("/v1/chat/completions", json=chat())
    assert response.status_code == 200
    assert response.json()["choices"][0]["finish_reason"] == "content_filter"
    [row] = await harness.usage(key_id)
    assert row["status"] == "ok"
    [event] = await policy_events(harness, key_id)
    assert event["code"] == "content_filter"
    assert await harness.ledger_balanced()


async def test_a_lost_policy_audit_row_does_not_fail_the_answer(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("audit table gone")

    monkeypatch.setattr(pipeline, "record_policy_event", broken)
    key_id, key = await harness.create_key()
    harness.upstream.enqueue({"content": "partial", "finish_reason": "content_filter"})
    with caplog.at_level(logging.ERROR, logger="seedgate.request"):
        async with harness.client(key) as client:
            response = await client.post("/v1/chat/completions", json=chat())
    assert response.status_code == 200
    assert "could not record policy event" in caplog.text
    [row] = await harness.usage(key_id)
    assert row["status"] == "ok"


async def test_an_unreadable_200_is_a_502_and_costs_nothing(harness: Harness) -> None:
    key_id, key = await harness.create_key()
    answer_once(harness, ScriptedResponse(200, {}, [b"<html>proxy error</html>"]))
    async with harness.client(key) as client:
        response = await client.post("/v1/chat/completions", json=chat())
    assert response.status_code == 502
    assert "unreadable" in response.json()["error"]["message"]
    await nothing_charged(harness, key_id)


async def test_an_error_object_sent_with_status_200_is_classified_and_free(harness: Harness) -> None:
    key_id, key = await harness.create_key()
    body = b'{"error": {"message": "internal", "type": "server_error", "code": "InternalServiceError"}}'
    answer_once(harness, ScriptedResponse(200, {}, [body]))
    async with harness.client(key) as client:
        response = await client.post("/v1/chat/completions", json=chat())
    assert response.status_code >= 500
    assert response.json()["error"]["type"]
    await nothing_charged(harness, key_id)


async def test_an_oversized_answer_is_refused_as_broken(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "MAX_ANSWER_BYTES", 1000)
    key_id, key = await harness.create_key()
    harness.upstream.enqueue({"body_padding_bytes": 5000})
    async with harness.client(key) as client:
        response = await client.post("/v1/chat/completions", json=chat())
    assert response.status_code == 502
    assert "larger than the gateway accepts" in response.json()["error"]["message"]
    [row] = await harness.usage(key_id)  # the upstream answered in full: it bills the operator
    assert (row["status"], row["estimated"]) == ("upstream_error", True)
    assert await harness.ledger_balanced()


async def test_a_connection_broken_while_reading_the_answer_charges_the_prompt_estimate(harness: Harness) -> None:
    key_id, key = await harness.create_key()

    class Broken(ScriptedResponse):
        async def aiter_bytes(self) -> AsyncIterator[bytes]:
            yield b'{"id": "x", '
            raise UpstreamReadError("ConnectionResetError")

    answer_once(harness, Broken(200, {}, []))
    async with harness.client(key) as client:
        response = await client.post("/v1/chat/completions", json=chat())
    assert response.status_code == 502
    assert "broke while reading" in response.json()["error"]["message"]
    [row] = await harness.usage(key_id)
    assert (row["status"], row["partial"], row["estimated"]) == ("upstream_error", True, True)
    assert row["completion_tokens"] == 0
    assert await harness.ledger_balanced()


async def test_a_stream_whose_upstream_fails_before_the_first_event_is_an_http_error_and_free(
    harness: Harness,
) -> None:
    key_id, key = await harness.create_key()
    harness.upstream.enqueue({"content": "", "reset_after_events": 0})
    async with harness.client(key) as client:
        response = await client.post("/v1/chat/completions", json=chat(stream=True))
    assert response.status_code == 502
    assert response.json()["error"]["message"]
    await nothing_charged(harness, key_id)


async def test_a_client_that_goes_away_while_the_stream_is_primed_releases_everything(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_id, key = await harness.create_key()
    primed = asyncio.Event()

    async def never(self: Any) -> None:
        primed.set()
        await asyncio.sleep(30)

    monkeypatch.setattr(Relay, "prime", never)

    await cancelled_once(harness, key, chat(stream=True), primed)
    assert harness.upstream.responses[-1].closed
    assert await harness.ledger_balanced()
    assert harness.services.lifecycle.inflight == 0
    [row] = await harness.usage(key_id)  # the upstream had accepted it: the prompt estimate is charged
    assert (row["status"], row["partial"], row["estimated"]) == ("client_disconnected", True, True)
    assert row["completion_tokens"] == 0


async def test_a_request_cancelled_while_the_upstreams_refusal_is_recorded_still_releases_everything(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_id, key = await harness.create_key()
    recording = asyncio.Event()

    async def slow_record(*args: Any, **kwargs: Any) -> None:
        recording.set()
        await asyncio.sleep(30)

    monkeypatch.setattr(pipeline, "record_upstream_error", slow_record)
    harness.upstream.enqueue({"status": 400, "error_body": {"error": {"message": "no", "type": "BadRequest"}}})

    await cancelled_once(harness, key, chat(), recording)
    assert harness.services.lifecycle.inflight == 0
    assert len(harness.services.leases) == 0
    await nothing_charged(harness, key_id)


async def test_settling_twice_changes_nothing(harness: Harness) -> None:
    key_id, key = await harness.create_key()
    async with harness.client(key) as client:
        response = await client.post("/v1/chat/completions", json=chat())
    assert response.status_code == 200
    before = await harness.key(key_id)
    admission = pipeline.Admission(
        inbound=None,  # type: ignore[arg-type]  # never read: the admission has ended
        key=None,  # type: ignore[arg-type]
        model=None,  # type: ignore[arg-type]
        endpoint="/v1/chat/completions",
        stream=False,
        quote=None,  # type: ignore[arg-type]
        ended=True,
    )
    await pipeline.settle(harness.services, admission)
    assert await harness.key(key_id) == before
    assert len(await harness.usage(key_id)) == 1


async def test_a_non_stream_body_that_stops_arriving_is_a_504_charging_the_prompt_estimate(harness: Harness) -> None:
    key_id, key = await harness.create_key()

    class Stalled(ScriptedResponse):
        async def aiter_bytes(self) -> AsyncIterator[bytes]:
            yield b'{"id": "x", '
            raise UpstreamReadTimeout

    answer_once(harness, Stalled(200, {}, []))
    async with harness.client(key) as client:
        response = await client.post("/v1/chat/completions", json=chat())
    assert response.status_code == 504
    [row] = await harness.usage(key_id)
    assert (row["status"], row["partial"], row["estimated"]) == ("upstream_timeout", True, True)
    assert row["prompt_tokens"] > 0
    assert await harness.ledger_balanced()


async def test_a_lost_upstream_error_row_does_not_change_the_clients_error(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("table gone")

    monkeypatch.setattr(pipeline, "record_upstream_error", broken)
    key_id, key = await harness.create_key()
    harness.upstream.enqueue({"status": 400})
    with caplog.at_level(logging.ERROR, logger="seedgate.request"):
        async with harness.client(key) as client:
            response = await client.post("/v1/chat/completions", json=chat())
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "could not record upstream error" in caplog.text
    await nothing_charged(harness, key_id)


async def test_a_hold_released_behind_the_requests_back_is_not_charged_again(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    reserve = pipeline.reserve
    released: list[bool] = []

    async def reserve_then_lose_the_hold(services: Any, admission: pipeline.Admission) -> None:
        await reserve(services, admission)
        assert admission.hold is not None
        released.append(await services.ledger.release(admission.hold))  # e.g. an operator's repair

    monkeypatch.setattr(pipeline, "reserve", reserve_then_lose_the_hold)
    key_id, key = await harness.create_key()
    async with harness.client(key) as client:
        response = await client.post("/v1/chat/completions", json=chat())
    assert response.status_code == 200
    assert released == [True]
    await nothing_charged(harness, key_id)


def texts(document: Any) -> list[str]:
    """The strings under ``content``, ``text`` and ``delta`` keys of a JSON document, in order."""
    found: list[str] = []
    if isinstance(document, dict):
        for name, value in document.items():
            if name in ("content", "text", "delta") and isinstance(value, str):
                found.append(value)
            else:
                found += texts(value)
    elif isinstance(document, list):
        for value in document:
            found += texts(value)
    return found


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages", "/v1/responses"])
async def test_half_an_emoji_from_a_python_upstream_reaches_the_client(
    harness: Harness, path: str, stream: bool
) -> None:
    key_id, key = await harness.create_key()
    pieces = ["smile \ud83d", "\ude00 done"]  # a UTF-16 pair cut between chunks: each escaped alone
    harness.upstream.enqueue({"content_chunks": pieces} if stream else {"content": "smile \ud83d"})  # or left alone
    body = {"model": MODEL, "stream": stream, "max_tokens": 50}
    body |= {"input": "hi"} if path == "/v1/responses" else {"messages": [{"role": "user", "content": "hi"}]}
    async with harness.client(key) as client:
        response = await client.post(path, json=body)
    assert response.status_code == 200, response.text
    if stream:
        lines = [line[len("data: ") :] for line in response.text.splitlines() if line.startswith("data: {")]
        documents = [json.loads(line) for line in lines]  # the stdlib reads escaped halves, as the SDKs do
    else:
        documents = [json.loads(response.text)]
    said = "".join(text for document in documents for text in texts(document))
    if stream:
        assert "smile \U0001f600 done" in said.encode("utf-16", "surrogatepass").decode("utf-16")
    else:
        assert "smile \ud83d" in said
    [row] = await harness.usage(key_id)
    assert row["status"] == "ok"
    assert await harness.ledger_balanced()


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/responses"])
async def test_a_translated_answer_without_upstream_usage_shows_the_estimate_it_is_billed(
    harness: Harness, path: str
) -> None:
    key_id, key = await harness.create_key()
    harness.upstream.enqueue({"content": "four words of answer", "usage": "omit"})
    body = {"model": MODEL, "max_tokens": 50}
    body |= {"input": "hi"} if path == "/v1/responses" else {"messages": [{"role": "user", "content": "hi"}]}
    async with harness.client(key) as client:
        response = await client.post(path, json=body)
    assert response.status_code == 200, response.text
    usage = response.json()["usage"]
    [row] = await harness.usage(key_id)
    assert row["estimated"] is True
    assert row["prompt_tokens"] > 0
    assert row["completion_tokens"] > 0
    assert (usage["input_tokens"], usage["output_tokens"]) == (row["prompt_tokens"], row["completion_tokens"])


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/responses"])
async def test_a_stream_the_dialect_must_end_failed_is_recorded_as_the_upstreams_error_not_a_whole_answer(
    harness: Harness, path: str
) -> None:
    key_id, key = await harness.create_key()
    harness.upstream.enqueue({"content_chunks": ["some ", "text"], "finish_reason": ""})  # usage, but no finish
    body = {"model": MODEL, "stream": True, "max_tokens": 50}
    body |= {"input": "hi"} if path == "/v1/responses" else {"messages": [{"role": "user", "content": "hi"}]}
    async with harness.client(key) as client:
        response = await client.post(path, json=body)
    assert response.status_code == 200
    assert ("response.failed" if path == "/v1/responses" else "event: error") in response.text
    [row] = await harness.usage(key_id)
    assert (row["status"], row["partial"]) == ("upstream_error", True)
    assert row["completion_tokens"] > 0  # the upstream's usage arrived: the operator was billed for it
    assert await harness.ledger_balanced()


async def test_a_request_cancelled_while_its_reservation_is_written_still_gives_the_hold_back(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_id, key = await harness.create_key()
    ledger = harness.services.ledger
    real_reserve = ledger.reserve
    writing = asyncio.Event()
    writes: list[asyncio.Task[Any]] = []

    async def slow_reserve(hold: Any) -> Any:  # the write goes on (a locked database), the request waits
        writes.append(asyncio.create_task(real_reserve(hold)))
        writing.set()
        await asyncio.sleep(30)

    monkeypatch.setattr(ledger, "reserve", slow_reserve)

    await cancelled_once(harness, key, chat(), writing)
    assert await writes[0] is None  # the reservation was made after all
    await ledger.flush()
    async with harness.services.db.read() as conn:
        statuses = (await conn.execute(select(holds.c.status).where(holds.c.key_id == key_id))).scalars().all()
    assert statuses == ["released"]  # given back, never left to lapse into a recovery charge
    assert harness.services.lifecycle.inflight == 0
    assert harness.upstream.requests == []
    await nothing_charged(harness, key_id)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_tool_name_longer_than_chat_allows_goes_upstream_aliased_and_comes_back_as_the_clients(
    harness: Harness, stream: bool
) -> None:
    _, key = await harness.create_key()
    long_name = "mcp__enterprise_github_server__list_repository_collaborators_for_organization_x"  # 79 characters
    alias = upstream_tool_name(long_name)
    harness.upstream.enqueue({"tool_calls": [{"id": "call_1", "name": alias, "arguments": '{"org": "a"}'}]})
    history = [
        {"role": "user", "content": "list them"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t0", "name": long_name, "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t0", "content": "none yet"}]},
    ]
    body = {
        "model": MODEL,
        "max_tokens": 50,
        "stream": stream,
        "messages": history,
        "tools": [{"name": long_name, "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": long_name},
    }
    async with harness.client(key) as client:
        response = await client.post("/v1/messages", json=body)
    assert response.status_code == 200, response.text
    sent = harness.upstream.requests[-1]
    assert [tool["function"]["name"] for tool in sent["tools"]] == [alias]
    assert len(alias) <= 64
    assert sent["tool_choice"] == {"type": "function", "function": {"name": alias}}
    assert sent["messages"][1]["tool_calls"][0]["function"]["name"] == alias  # the history agrees with the tools
    assert long_name in response.text
    assert alias not in response.text  # the client sees only its own name
