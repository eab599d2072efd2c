"""An upstream that lies: chunks and answers of any shape never break a translated answer.

Hypothesis feeds each dialect's translator upstream chunks (and whole answers) whose members have
the right shape, the wrong type, or are missing: text that is a number, ``choices`` that is a string,
a tool call fragment that is a list, usage figures that are negative, huge or floats, ``finish_reason``
of any type. Whatever arrives, the client gets a well-formed stream of its own API -- every event's
data is JSON of its event's type, Responses events numbered from 0 without a gap, the stream ending in
exactly one terminal event -- and what it was told piece by piece adds up to what it is told at the
end. Nothing raises: an exception here would be a 500, or a stream cut without its closing event.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from hypothesis import example, given, settings
from hypothesis import strategies as st

from app.catalog import Catalog
from app.dialects import StreamWriter
from app.dialects.anthropic import MessageStreamTranslator
from app.dialects.anthropic.dialect import AnthropicMessages, MessagesStream, Signer
from app.dialects.anthropic.response import chat_to_message
from app.dialects.openai_chat import ChatStream
from app.dialects.responses.dialect import OpenAIResponses, ResponsesStream
from app.dialects.responses.response import Context, chat_to_response, echo_members
from app.dialects.responses.seal import Sealer
from app.dialects.responses.stream import ResponseStreamTranslator
from app.money import rules
from app.money.rules import Outcome
from app.money.tokens import TokenUsage
from app.relay import Relay, UpstreamEvents
from app.settings import Settings
from app.stored_responses import ResponseStore
from app.upstream import classify_error

SEALER = Sealer("master-key", "test purpose")
EXAMPLES = 300

anything = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what orjson parses as an int (the relay's parser)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


def mostly(good: st.SearchStrategy[Any], lie: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` three times in four, else ``lie``: streams that get somewhere, with lies along the way."""
    return st.one_of(good, good, good, lie)


# no lone surrogates in texts: the relay parses with orjson, which refuses them
texts = mostly(st.text(min_size=1, max_size=6), st.sampled_from(["", '"', "\n\n", "data: x"]) | anything)
counts = mostly(st.integers(0, 2**40), st.integers(-3, 2**64 - 1) | anything)
finish_reasons = mostly(st.sampled_from(["stop", "length", "tool_calls", "content_filter"]), anything)
function = mostly(st.fixed_dictionaries({}, optional={"name": texts, "arguments": texts}), anything)
fragment = mostly(
    st.fixed_dictionaries(
        {"index": mostly(st.integers(0, 2), anything)}, optional={"id": texts, "type": texts, "function": function}
    ),
    anything,
)
delta = st.one_of(
    st.builds(lambda text: {"content": text}, texts),
    st.builds(lambda text: {"content": text}, texts),
    st.builds(lambda text: {"reasoning_content": text}, texts),
    st.builds(lambda text: {"role": "assistant", "content": text}, texts),
    st.builds(lambda call: {"tool_calls": [call]}, fragment),
    st.fixed_dictionaries(  # several at once, in any order
        {},
        optional={
            "role": texts,
            "content": texts,
            "reasoning_content": texts,
            "tool_calls": mostly(st.lists(fragment, min_size=1, max_size=2), anything),
        },
    ),
    anything,
)
choice = mostly(
    st.fixed_dictionaries(
        {"delta": delta},
        optional={"index": mostly(st.just(0), st.sampled_from([1, None]) | anything), "finish_reason": st.none()},
    ),
    st.fixed_dictionaries({}, optional={"index": anything, "delta": anything, "finish_reason": finish_reasons}),
)
usage = mostly(
    st.fixed_dictionaries(
        {"prompt_tokens": counts, "completion_tokens": counts},
        optional={
            "total_tokens": counts,
            "prompt_tokens_details": mostly(st.fixed_dictionaries({"cached_tokens": counts}), anything),
            "completion_tokens_details": mostly(st.fixed_dictionaries({"reasoning_tokens": counts}), anything),
        },
    ),
    anything,
)
chunks = st.one_of(
    st.builds(lambda c: {"choices": [c], "usage": None}, choice),
    st.builds(lambda c: {"choices": [c], "usage": None}, choice),
    st.builds(lambda c: {"choices": [c], "usage": None}, choice),
    st.builds(lambda f: {"choices": [{"index": 0, "delta": {}, "finish_reason": f}]}, finish_reasons),
    st.builds(lambda u: {"choices": [], "usage": u}, usage),
    st.fixed_dictionaries({}, optional={"choices": mostly(st.lists(choice, max_size=2), anything), "usage": usage}),
    st.dictionaries(st.text(max_size=6), anything, max_size=3),
)
# one write of the relay: chunks, then the flush at its end
writes = st.lists(st.lists(chunks, max_size=5), max_size=8)


def said(**delta: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": None}], "usage": None}


STOP = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None}
# text of one kind held back when a write moves on to the other kind, or to the end
SWITCHING = [[said(content="a"), said(reasoning_content="r"), said(content="b")], [said(content="c"), STOP]]
UNFLUSHED_END = [[said(reasoning_content="r"), said(content="a"), STOP]]
message = st.fixed_dictionaries(
    {},
    optional={
        "content": texts,
        "reasoning_content": texts,
        "tool_calls": st.lists(st.fixed_dictionaries({}, optional={"id": texts, "function": function}) | anything)
        | anything,
    },
)
answers = st.fixed_dictionaries(
    {},
    optional={
        "choices": st.lists(
            st.fixed_dictionaries({}, optional={"message": message | anything, "finish_reason": finish_reasons})
            | anything,
            max_size=2,
        )
        | anything,
        "usage": usage | anything,
    },
) | st.dictionaries(st.text(max_size=6), anything, max_size=3)


def context(encrypted: bool) -> Context:
    return Context(
        echo=echo_members({}), names={"ns__run": ("ns", "run")}, encrypted=encrypted, store=False, input_items=[]
    )


def sent_text(writes: list[list[dict[str, Any]]], field: str) -> str:
    """What the upstream said in ``field`` of its first choice's deltas, where it said it as text."""
    said = []
    for chunk in (chunk for write in writes for chunk in write):
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if isinstance(choice, dict) and choice.get("index") in (0, None) and isinstance(choice.get("delta"), dict):
                text = choice["delta"].get(field)
                said.append(text if isinstance(text, str) else "")
    return "".join(said)


def sse_events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """``(event name, data)`` of every event; anything in the bytes that is not one fails the test."""
    found = []
    for block in raw.split(b"\n\n")[:-1]:
        if block == b": keepalive":
            continue
        name, data = block.split(b"\n")  # exactly two lines: one event, one data line
        assert name.startswith(b"event: "), block
        assert data.startswith(b"data: "), block
        payload = orjson.loads(data.removeprefix(b"data: "))
        assert payload["type"] == name.removeprefix(b"event: ").decode(), block
        found.append((payload["type"], payload))
    assert raw.endswith(b"\n\n")
    return found


@settings(max_examples=EXAMPLES, deadline=None)
@given(writes=writes, ended=st.booleans(), encrypted=st.booleans())
@example(writes=SWITCHING, ended=True, encrypted=False)
@example(writes=UNFLUSHED_END, ended=True, encrypted=True)
def test_a_lying_upstream_still_gets_the_client_a_well_formed_responses_stream(
    writes: list[list[dict[str, Any]]], ended: bool, encrypted: bool
) -> None:
    translator = ResponseStreamTranslator(context(encrypted), SEALER, "req_abc", "model-x")
    raw = translator.start()
    for number, write in enumerate(writes, 1):
        raw += b"".join(translator.feed(chunk) for chunk in write)
        if number < len(writes):
            raw += translator.flush()  # the relay's, at the end of each write
    # the last write: the relay meets the end among its events, before the flush at the end of the write
    raw += translator.finish() if ended else translator.fail("server_error", "The upstream broke off.")
    raw += translator.flush()

    events = sse_events(raw)
    assert [payload["sequence_number"] for _, payload in events] == list(range(len(events)))
    names = [name for name, _ in events]
    terminal = {"response.completed", "response.incomplete", "response.failed"}
    assert names[:2] == ["response.created", "response.in_progress"]
    assert names[-1] in terminal
    assert not terminal & set(names[:-1])
    assert ended or names[-1] == "response.failed"
    told: dict[str, str] = defaultdict(str)  # item id -> the text or arguments its deltas carried
    done: dict[str, str] = {}
    for name, payload in events:
        if name.endswith(".delta"):
            told[payload["item_id"]] += payload["delta"]
        elif name in ("response.output_text.done", "response.reasoning_summary_text.done"):
            done[payload["item_id"]] = payload["text"]
        elif name == "response.function_call_arguments.done":
            done[payload["item_id"]] = payload["arguments"]
    assert {item: text for item, text in told.items() if text} == {item: text for item, text in done.items() if text}
    final = events[-1][1]["response"]
    if names[-1] != "response.failed":  # a whole answer: every piece of text the upstream sent reached the client
        for field, prefix in (("content", "msg_"), ("reasoning_content", "rs_")):
            assert "".join(text for item, text in told.items() if item.startswith(prefix)) == sent_text(writes, field)
    ids = [item["id"] for item in final["output"]]
    assert len(ids) == len(set(ids))
    added = [payload["item"]["id"] for name, payload in events if name == "response.output_item.added"]
    assert ids == added  # every item announced is in the final response, in the same order
    usage = final["usage"]
    if usage is not None:
        assert all(isinstance(usage[k], int) and usage[k] >= 0 for k in ("input_tokens", "output_tokens"))


@settings(max_examples=EXAMPLES, deadline=None)
@given(answer=answers, encrypted=st.booleans())
def test_a_lying_upstream_answer_still_becomes_a_well_formed_response(answer: dict[str, Any], encrypted: bool) -> None:
    # the stdlib parses it: a total of two 64-bit figures can be wider than orjson reads as an int
    response = json.loads(chat_to_response(answer, context(encrypted), SEALER, "req_abc", "model-x"))
    assert response["object"] == "response"
    assert response["status"] in ("completed", "incomplete")
    assert response["output"], "a response always has an item (an empty message at least)"
    for item in response["output"]:
        assert item["type"] in ("reasoning", "message", "function_call"), item
        if item["type"] == "function_call":
            assert isinstance(item["arguments"], str)
            assert isinstance(item["name"], str)
    usage = response["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] >= 0


@settings(max_examples=EXAMPLES, deadline=None)
@given(writes=writes, ended=st.booleans())
@example(writes=SWITCHING, ended=True)
@example(writes=UNFLUSHED_END, ended=True)
def test_a_lying_upstream_still_gets_the_client_a_well_formed_messages_stream(
    writes: list[list[dict[str, Any]]], ended: bool
) -> None:
    translator = MessageStreamTranslator("model-x", "msg_abc", 12, lambda text: "sig")
    raw = translator.start()
    for write in writes:
        raw += b"".join(translator.feed(chunk) for chunk in write)
    raw += translator.finish() if ended else translator.fail("api_error", "The upstream broke off.")

    events = sse_events(raw)
    names = [name for name, _ in events]
    assert names[0] == "message_start"
    assert names[-1] in ("message_stop", "error")
    assert "message_stop" not in names[:-1]
    assert "error" not in names[:-1]
    assert ended or names[-1] == "error"
    open_blocks: set[int] = set()
    told: dict[str, str] = defaultdict(str)
    for name, payload in events:  # blocks open, take deltas and stop in order, one at a time
        if name == "content_block_start":
            assert not open_blocks
            open_blocks.add(payload["index"])
        elif name == "content_block_delta":
            assert open_blocks == {payload["index"]}
            delta = payload["delta"]
            if delta["type"] in ("text_delta", "thinking_delta"):
                told[delta["type"]] += delta[delta["type"].removesuffix("_delta")]
        elif name == "content_block_stop":
            assert open_blocks == {payload["index"]}
            open_blocks.clear()
    if names[-1] == "message_stop":
        assert not open_blocks
        assert told["text_delta"] == sent_text(writes, "content")  # nothing the upstream said was lost
        assert told["thinking_delta"] == sent_text(writes, "reasoning_content")
        usage = events[-2][1]["usage"]
        assert all(isinstance(value, int) and value >= 0 for value in usage.values())


@settings(max_examples=EXAMPLES, deadline=None)
@given(answer=answers)
def test_a_lying_upstream_answer_still_becomes_a_well_formed_message(answer: dict[str, Any]) -> None:
    message = chat_to_message(answer, model="model-x", message_id="msg_abc", sign=lambda text: "sig")
    orjson.dumps(message)  # what the client gets is JSON
    assert message["type"] == "message"
    assert message["role"] == "assistant"
    for block in message["content"]:
        assert block["type"] in ("thinking", "text", "tool_use"), block
        if block["type"] == "tool_use":
            assert isinstance(block["input"], dict)
            assert isinstance(block["name"], str)
    assert all(isinstance(value, int) and value >= 0 for value in message["usage"].values())


MODEL = Catalog.from_settings(
    Settings(
        upstreams=[{"name": "ark", "base_url": "http://127.0.0.1:9/v1"}],
        models=[
            {
                "id": "m",
                "upstream": "ark",
                "context_window": 1000,
                "max_output_tokens": 100,
                "price": {"input": "1.49", "output": "6.99", "cached_input": "0.30"},
            }
        ],
    )
).models[0]
QUOTE = rules.quote(MODEL, prompt_tokens=50, requested_output=64, n=1, margin=0.1)


class LyingResponse:
    """An upstream SSE body: one write per list of chunks (a ``data:`` event each), then ``[DONE]`` if ``ended``."""

    def __init__(self, writes: list[list[dict[str, Any]]], ended: bool) -> None:
        self.status = 200
        self.headers: dict[str, str] = {}
        self.writes, self.ended = writes, ended

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        for write in self.writes:
            yield b"".join(b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in write)
            await asyncio.sleep(0)
        if self.ended:
            yield b"data: [DONE]\n\n"

    async def aclose(self) -> None:
        pass


WRITERS: dict[str, Callable[[], StreamWriter]] = {
    "chat": lambda: ChatStream(include_usage=True),
    "responses": lambda: ResponsesStream(context(False), SEALER, "req_abc", "m"),
    "messages": lambda: MessagesStream("m", "msg_abc", 50, lambda text: "sig"),
}


async def relayed(writer: StreamWriter, writes: list[list[dict[str, Any]]], ended: bool) -> tuple[bytes, Outcome]:
    outcome = Outcome(sent=True)
    events = UpstreamEvents(LyingResponse(writes, ended), deadline=asyncio.get_running_loop().time() + 10)
    relay = Relay(events, writer, outcome, heartbeat_interval=5)
    try:
        if await relay.prime() is not None:
            return b"", outcome  # refused before the first byte: an HTTP error, not a stream
        return b"".join([part async for part in relay]), outcome
    finally:
        await relay.aclose()


@settings(max_examples=200, deadline=None)
@given(writes=writes, ended=st.booleans(), dialect=st.sampled_from(list(WRITERS)))
def test_whatever_the_upstream_says_the_relay_ends_the_stream_and_the_charge_stays_within_the_caps(
    writes: list[list[dict[str, Any]]], ended: bool, dialect: str
) -> None:
    raw, outcome = asyncio.run(relayed(WRITERS[dialect](), writes, ended))
    assert outcome.output_tokens >= 0
    if outcome.complete:
        assert outcome.status == "ok"
    else:
        assert outcome.status in ("ok", "upstream_error", "incomplete"), outcome.status
    if raw and dialect != "chat":
        sse_events(raw)  # every event well-formed, to the last
    charge = rules.settlement(outcome, QUOTE, MODEL)
    if charge is not None:  # a lie about usage is charged no more than the prompt could be and the cap allowed
        assert 0 <= charge.usage.prompt_tokens <= MODEL.context_window
        assert 0 <= charge.usage.completion_tokens <= QUOTE.max_output_tokens * QUOTE.n
        assert 0 <= charge.usage.cached_tokens <= charge.usage.prompt_tokens
        assert 0 <= charge.cost <= rules.cost(TokenUsage(MODEL.context_window, QUOTE.max_output_tokens), MODEL.prices)


def next_turn(output: list[dict[str, Any]]) -> dict[str, Any]:
    """The body of a client's next turn: its question, the last answer's items as they came, and a result
    for every call in them (what Codex sends with ``store: false``)."""
    results = [
        {"type": "function_call_output", "call_id": item["call_id"], "output": "ok"}
        for item in output
        if item["type"] == "function_call"
    ]
    return {"model": "m", "input": [{"role": "user", "content": "go on"}, *output, *results]}


@settings(max_examples=EXAMPLES, deadline=None)
@given(answer=answers, encrypted=st.booleans())
def test_every_answer_the_gateway_gave_can_be_sent_back_as_input(answer: dict[str, Any], encrypted: bool) -> None:
    dialect = OpenAIResponses(SEALER, ResponseStore.__new__(ResponseStore))  # the store is not read here
    response = json.loads(chat_to_response(answer, context(encrypted), SEALER, "req_abc", "model-x"))
    dialect.parse(next_turn(response["output"]))  # no InvalidRequest: the gateway reads what it wrote


@settings(max_examples=EXAMPLES, deadline=None)
@given(writes=writes, encrypted=st.booleans())
def test_every_streamed_answer_can_be_sent_back_as_input(writes: list[list[dict[str, Any]]], encrypted: bool) -> None:
    dialect = OpenAIResponses(SEALER, ResponseStore.__new__(ResponseStore))
    translator = ResponseStreamTranslator(context(encrypted), SEALER, "req_abc", "model-x")
    raw = translator.start() + b"".join(translator.feed(chunk) for write in writes for chunk in write)
    raw += translator.finish() + translator.flush()
    final = sse_events(raw)[-1][1]["response"]
    if final["status"] != "failed":
        dialect.parse(next_turn(final["output"]))


def next_messages_turn(content: list[dict[str, Any]]) -> dict[str, Any]:
    """Claude Code's next turn: the answer's blocks as they came, then a result for every tool use."""
    results = [
        {"type": "tool_result", "tool_use_id": block["id"], "content": "ok"}
        for block in content
        if block["type"] == "tool_use"
    ]
    return {
        "model": "m",
        "max_tokens": 100,
        "messages": [
            {"role": "user", "content": "go on"},
            {"role": "assistant", "content": content},
            {"role": "user", "content": results or "and then?"},
        ],
    }


def streamed_blocks(events: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]] | None:
    """The content blocks a client assembles from a Messages stream (as the anthropic SDK does); None when
    a tool's streamed input is not a JSON object (the upstream's arguments were not one: the relay
    streams them as they come, so the client's own parse fails there, as it would with the upstream)."""
    blocks: list[dict[str, Any]] = []
    for name, payload in events:
        if name == "content_block_start":
            blocks.append(dict(payload["content_block"]) | {"_json": ""})
        elif name == "content_block_delta":
            block, delta = blocks[payload["index"]], payload["delta"]
            field = {"text_delta": "text", "thinking_delta": "thinking", "signature_delta": "signature"}.get(
                delta["type"]
            )
            if field is None:
                block["_json"] += delta["partial_json"]
            else:
                block[field] = block.get(field, "") + delta[field]
    for block in blocks:
        raw = block.pop("_json")
        if block["type"] == "tool_use":
            try:
                block["input"] = json.loads(raw or "{}")
            except ValueError:
                return None
            if not isinstance(block["input"], dict):
                return None
    return blocks


@settings(max_examples=EXAMPLES, deadline=None)
@given(answer=answers)
def test_every_message_the_gateway_gave_can_be_sent_back_in_the_next_turn(answer: dict[str, Any]) -> None:
    message = chat_to_message(answer, model="m", message_id="msg_abc", sign=lambda text: "sig")
    if message["content"]:  # an empty assistant turn is the client's to leave out
        AnthropicMessages(Signer("master-key")).parse(next_messages_turn(message["content"]))


@settings(max_examples=EXAMPLES, deadline=None)
@given(writes=writes)
def test_every_streamed_message_can_be_sent_back_in_the_next_turn(writes: list[list[dict[str, Any]]]) -> None:
    translator = MessageStreamTranslator("m", "msg_abc", 12, lambda text: "sig")
    raw = translator.start() + b"".join(translator.feed(chunk) for write in writes for chunk in write)
    events = sse_events(raw + translator.finish())
    content = streamed_blocks(events)
    if events[-1][0] == "message_stop" and content:  # and a client could assemble it
        AnthropicMessages(Signer("master-key")).parse(next_messages_turn(content))


SECRET = "sk-upstream-0123456789abcdefXYZ"
said_with_secret = st.builds(
    lambda before, after: before + SECRET + after, st.text(max_size=12), st.text(max_size=12)
) | st.text(max_size=20)
error_bodies = st.one_of(
    st.fixed_dictionaries(
        {
            "error": st.fixed_dictionaries(
                {}, optional={"message": said_with_secret, "code": said_with_secret | anything}
            )
        },
        optional={"param": said_with_secret},
    ).map(lambda body: orjson.dumps(body)),
    st.fixed_dictionaries(
        {"error": st.fixed_dictionaries({}, optional={"param": said_with_secret | anything, "type": anything})}
    ).map(lambda body: orjson.dumps(body)),
    st.binary(max_size=200),
    said_with_secret.map(str.encode),
)


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    status=st.sampled_from([400, 401, 403, 404, 408, 409, 413, 422, 429, 451, 500, 502, 503, 504, 529]),
    raw=error_bodies,
    retry_after=st.none() | st.sampled_from(["5", "0", "-3", "inf", "nan", "1e9", "soon", ""]) | st.text(max_size=8),
)
def test_whatever_an_upstream_error_says_the_client_gets_a_gateway_error_without_the_secret(
    status: int, raw: bytes, retry_after: str | None
) -> None:
    failure = classify_error("ark", status, raw, retry_after, secrets=(SECRET,))
    error = failure.error
    assert 400 <= error.status < 600
    assert error.message
    shown = json.dumps([error.openai_body(), error.headers, error.param])
    assert SECRET not in shown
    assert SECRET[:16] not in shown  # nor a recognisable part of it
    if failure.retry_after is not None:
        assert 1 <= failure.retry_after <= 60
