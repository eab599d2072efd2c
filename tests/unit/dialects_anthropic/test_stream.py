"""OpenAI chunk stream -> Anthropic event stream (docs/protocol.md 3.4, 3.7); output framing checked with SSEDecoder."""

from __future__ import annotations

import itertools
import json
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from app.dialects.anthropic import MessageStreamTranslator
from app.dialects.anthropic.response import tool_input
from app.sse import SSEDecoder


def sign(text: str) -> str:
    return f"sig:{text}"


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, index: int = 0) -> dict[str, Any]:
    choice = {"index": index, "delta": delta or {}, "logprobs": None, "finish_reason": finish}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [choice],
        "usage": None,
    }


def usage_chunk(prompt: int, completion: int, cached: int = 0) -> dict[str, Any]:
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [],
        "usage": usage,
    }


def tool(index: int, *, call_id: str | None = None, name: str | None = None, args: str | None = None) -> dict[str, Any]:
    fragment: dict[str, Any] = {"index": index, "function": {}}
    if call_id is not None:
        fragment.update(id=call_id, type="function")
    if name is not None:
        fragment["function"]["name"] = name
    if args is not None:
        fragment["function"]["arguments"] = args
    return chunk({"tool_calls": [fragment]})


def decode(raw: bytes) -> list[dict[str, Any]]:
    """Parse the produced bytes as a client would; every event's name must equal its payload's type."""
    decoder = SSEDecoder()
    events = decoder.feed(raw)
    assert decoder.flush() == [], "output must end on an event boundary"
    payloads = []
    for event in events:
        payload = orjson.loads(event.data)
        assert event.event == payload["type"]
        payloads.append(payload)
    return payloads


def run(chunks: list[dict[str, Any]], estimate: int = 42) -> tuple[list[dict[str, Any]], MessageStreamTranslator]:
    translator = MessageStreamTranslator("claude-sonnet-4-5", "msg_1", estimate, sign)
    raw = translator.start() + b"".join(translator.feed(c) for c in chunks) + translator.finish()
    events = decode(raw)
    check_invariants(events)
    return events, translator


def check_invariants(events: list[dict[str, Any]]) -> None:
    assert events[0]["type"] == "message_start"
    open_index: int | None = None
    next_index = 0
    for event in events[1:]:
        kind = event["type"]
        if kind == "content_block_start":
            assert open_index is None, "only one block open at a time"
            assert event["index"] == next_index, "indices contiguous from 0"
            open_index, next_index = next_index, next_index + 1
        elif kind == "content_block_delta":
            assert event["index"] == open_index
        elif kind == "content_block_stop":
            assert event["index"] == open_index
            open_index = None
        elif kind in ("message_delta", "message_stop"):
            assert open_index is None
    if events[-1]["type"] != "error":
        assert [e["type"] for e in events[-2:]] == ["message_delta", "message_stop"]


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def blocks(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rebuild the content blocks the way an Anthropic SDK accumulates them."""
    built: list[dict[str, Any]] = []
    for event in events:
        if event["type"] == "content_block_start":
            built.append({**event["content_block"], "partial_json": ""})
        elif event["type"] == "content_block_delta":
            block, delta = built[event["index"]], event["delta"]
            field = {"thinking_delta": "thinking", "text_delta": "text", "input_json_delta": "partial_json"}.get(
                delta["type"]
            )
            if field is None:
                block["signature"] = delta["signature"]
            else:
                block[field] += delta[field]
    for block in built:
        partial_json = block.pop("partial_json")
        if partial_json:
            block["input"] = json.loads(partial_json)
    return built


def tool_inputs(events: list[dict[str, Any]]) -> dict[int, str]:
    joined: dict[int, str] = {}
    for event in events:
        if event["type"] == "content_block_delta" and event["delta"]["type"] == "input_json_delta":
            joined[event["index"]] = joined.get(event["index"], "") + event["delta"]["partial_json"]
    return joined


def test_plain_text_stream() -> None:
    events, translator = run(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hel"}),
            chunk({"content": "lo"}),
            chunk(finish="stop"),
        ]
    )
    assert types(events) == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[1]["content_block"] == {"type": "text", "text": ""}
    assert [e["delta"] for e in events[2:4]] == [
        {"type": "text_delta", "text": "Hel"},
        {"type": "text_delta", "text": "lo"},
    ]
    assert events[5]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert translator.saw_finish


def test_message_start_carries_the_input_estimate() -> None:
    events, _ = run([chunk({"content": "x"}, finish="stop")], estimate=1234)
    message = events[0]["message"]
    assert message["id"] == "msg_1"
    assert message["model"] == "claude-sonnet-4-5"
    assert (message["content"], message["stop_reason"], message["stop_sequence"]) == ([], None, None)
    assert message["usage"] == {
        "input_tokens": 1234,
        "output_tokens": 1,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def test_thinking_block_is_signed_just_before_it_stops_then_text_follows() -> None:
    events, _ = run(
        [
            chunk({"role": "assistant", "content": "", "reasoning_content": "Let"}),
            chunk({"reasoning_content": " me think"}),
            chunk({"content": "Answer"}),
            chunk(finish="stop"),
        ]
    )
    assert events[1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "thinking", "thinking": "", "signature": ""},
    }
    stop_at = events.index({"type": "content_block_stop", "index": 0})
    assert events[stop_at - 1]["delta"] == {"type": "signature_delta", "signature": "sig:Let me think"}
    assert events[stop_at + 1]["content_block"] == {"type": "text", "text": ""}
    assert events[stop_at + 1]["index"] == 1
    assert blocks(events) == [
        {"type": "thinking", "thinking": "Let me think", "signature": "sig:Let me think"},
        {"type": "text", "text": "Answer"},
    ]


def test_reasoning_after_text_opens_a_new_signed_thinking_block() -> None:
    events, _ = run(
        [chunk({"content": "a"}), chunk({"reasoning_content": "b"}), chunk({"content": "c"}), chunk(finish="stop")]
    )
    assert blocks(events) == [
        {"type": "text", "text": "a"},
        {"type": "thinking", "thinking": "b", "signature": "sig:b"},
        {"type": "text", "text": "c"},
    ]


def test_parallel_tool_calls_with_split_arguments_arriving_before_the_name() -> None:
    translator = MessageStreamTranslator("claude", "msg_1", 10, sign)
    chunks = [
        chunk({"role": "assistant", "content": ""}),
        tool(0, args='{"file'),
        tool(0, call_id="call_a", name="Read", args='_path": '),
        tool(0, args='"/a"}'),
        tool(1, args='{"pat'),
        tool(1, call_id="call_b", name="Glob"),
        tool(1, args='tern": "*.py"}'),
        chunk(finish="tool_calls"),
        usage_chunk(100, 20),
    ]
    outputs = [translator.feed(c) for c in chunks]
    assert outputs[1] == b"", "arguments before the name are buffered"
    events = decode(translator.start() + b"".join(outputs) + translator.finish())
    check_invariants(events)
    starts = [e for e in events if e["type"] == "content_block_start"]
    assert [s["content_block"] for s in starts] == [
        {"type": "tool_use", "id": "call_a", "name": "Read", "input": {}},
        {"type": "tool_use", "id": "call_b", "name": "Glob", "input": {}},
    ]
    inputs = tool_inputs(events)
    assert json.loads(inputs[0]) == {"file_path": "/a"}
    assert json.loads(inputs[1]) == {"pattern": "*.py"}
    assert events[-2]["delta"]["stop_reason"] == "tool_use"


def test_text_then_tool_call_closes_the_text_block_first() -> None:
    events, _ = run(
        [
            chunk({"content": "Let me look."}),
            tool(0, call_id="call_1", name="Read", args=""),
            tool(0, args='{"file_path":"/x"}'),
            chunk(finish="tool_calls"),
        ]
    )
    assert [b["type"] for b in blocks(events)] == ["text", "tool_use"]
    assert json.loads(tool_inputs(events)[1]) == {"file_path": "/x"}


def test_tool_call_without_arguments_has_no_input_delta() -> None:
    events, _ = run([tool(0, call_id="c", name="Now", args=""), chunk(finish="tool_calls")])
    assert tool_inputs(events) == {}
    assert blocks(events) == [{"type": "tool_use", "id": "c", "name": "Now", "input": {}}]


def test_tool_call_with_a_name_but_no_id_gets_a_synthetic_id_at_finish() -> None:
    events, _ = run([tool(0, name="Read", args='{"a":'), tool(0, args="1}"), chunk(finish="tool_calls")])
    assert blocks(events)[0]["id"] == "toolu_1_0"
    assert json.loads(tool_inputs(events)[0]) == {"a": 1}


def test_stop_finish_with_tool_calls_reports_tool_use() -> None:
    events, _ = run([tool(0, call_id="c", name="f", args="{}"), chunk(finish="stop")])
    assert events[-2]["delta"]["stop_reason"] == "tool_use"


def test_usage_after_finish_reaches_message_delta() -> None:
    events, translator = run([chunk({"content": "hi"}), chunk(finish="length"), usage_chunk(1000, 57, cached=800)])
    assert events[-2] == {
        "type": "message_delta",
        "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
        "usage": {
            "input_tokens": 200,
            "output_tokens": 57,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 800,
        },
    }
    assert translator.usage is not None
    assert translator.usage["prompt_tokens"] == 1000


def test_without_upstream_usage_the_estimates_are_reported() -> None:
    events, translator = run([chunk({"content": "a" * 40}), chunk(finish="stop")], estimate=77)
    assert events[-2]["usage"] == {
        "input_tokens": 77,
        "output_tokens": 10,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    assert translator.usage is None


def test_stream_cut_without_finish_reason_ends_in_an_error_not_end_turn() -> None:
    translator = MessageStreamTranslator("claude", "msg_1", 10, sign)
    translator.feed(chunk({"content": "partial"}))
    events = decode(translator.finish())
    assert events == [{"type": "error", "error": {"type": "api_error", "message": events[0]["error"]["message"]}}]
    assert not translator.saw_finish
    assert b"end_turn" not in translator.finish()


def test_usage_without_finish_reason_is_still_a_cut_stream() -> None:
    translator = MessageStreamTranslator("claude", "msg_1", 10, sign)
    translator.feed(chunk({"content": "partial"}))
    translator.feed(usage_chunk(10, 2))
    assert types(decode(translator.finish())) == ["error"]


def test_empty_deltas_produce_nothing() -> None:
    translator = MessageStreamTranslator("claude", "msg_1", 10, sign)
    assert translator.feed(chunk({"role": "assistant", "content": "", "reasoning_content": ""})) == b""
    assert translator.feed(chunk({"content": None})) == b""
    assert translator.feed(usage_chunk(1, 1)) == b""


def test_other_choices_are_ignored() -> None:
    events, _ = run([chunk({"content": "mine"}), chunk({"content": "other"}, index=1), chunk(finish="stop")])
    assert blocks(events) == [{"type": "text", "text": "mine"}]


def test_interleaved_tool_arguments_end_in_an_error() -> None:
    translator = MessageStreamTranslator("claude", "msg_1", 10, sign)
    for c in [tool(0, call_id="a", name="f", args="{"), tool(1, call_id="b", name="g", args="{}"), tool(0, args="}")]:
        translator.feed(c)
    translator.feed(chunk(finish="tool_calls"))
    assert types(decode(translator.finish())) == ["error"]


def test_tool_call_that_never_got_a_name_ends_in_an_error() -> None:
    translator = MessageStreamTranslator("claude", "msg_1", 10, sign)
    translator.feed(tool(0, call_id="a", args='{"x":1}'))
    translator.feed(chunk(finish="tool_calls"))
    assert types(decode(translator.finish())) == ["error"]


def test_fail_and_ping_are_framed_events() -> None:
    translator = MessageStreamTranslator("claude", "msg_1", 10, sign)
    assert translator.ping() == b'event: ping\ndata: {"type": "ping"}\n\n'
    assert decode(translator.ping() + translator.fail("overloaded_error", "Upstream overloaded.")) == [
        {"type": "ping"},
        {"type": "error", "error": {"type": "overloaded_error", "message": "Upstream overloaded."}},
    ]


def test_output_chars_counts_forwarded_text_thinking_and_arguments() -> None:
    chunks = [chunk({"reasoning_content": "abc"}), chunk({"content": "de"}), tool(0, call_id="c", name="f", args="{}")]
    _, translator = run([*chunks, chunk(finish="tool_calls")])
    assert translator.output_chars == 7


_piece = st.text(st.characters(codec="utf-8"), min_size=1, max_size=8)
_segment = st.one_of(
    st.tuples(st.sampled_from(["thinking", "text"]), st.lists(_piece, min_size=1, max_size=4)),
    st.tuples(
        st.just("tool"),
        st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3),
        st.integers(min_value=1, max_value=6),  # number of argument fragments
        st.integers(min_value=0, max_value=6),  # fragments sent before the name
    ),
)


@settings(max_examples=200, deadline=None)
@given(segments=st.lists(_segment, max_size=6))
def test_random_streams_keep_block_invariants_and_content(segments: list[Any]) -> None:
    chunks: list[dict[str, Any]] = []
    expected: list[tuple[str, Any]] = []
    tool_count = 0
    for segment in segments:
        if segment[0] == "tool":
            _, arguments, parts, early = segment
            raw = json.dumps(arguments)
            cuts = [len(raw) * i // parts for i in range(parts + 1)]
            fragments = [raw[a:b] for a, b in itertools.pairwise(cuts)]
            early = min(early, len(fragments))
            for position, fragment in enumerate(fragments):
                if position == early:
                    chunks.append(tool(tool_count, call_id=f"c{tool_count}", name=f"t{tool_count}", args=fragment))
                else:
                    chunks.append(tool(tool_count, args=fragment))
            if early == len(fragments):
                chunks.append(tool(tool_count, call_id=f"c{tool_count}", name=f"t{tool_count}"))
            expected.append(("tool_use", arguments))
            tool_count += 1
        else:
            kind, pieces = segment
            field = "reasoning_content" if kind == "thinking" else "content"
            chunks.extend(chunk({field: piece}) for piece in pieces)
            if expected and expected[-1][0] == kind:
                expected[-1] = (kind, expected[-1][1] + "".join(pieces))
            else:
                expected.append((kind, "".join(pieces)))
    chunks.append(chunk(finish="tool_calls" if tool_count else "stop"))
    events, _ = run(chunks)
    rebuilt: list[tuple[str, Any]] = []
    for block in blocks(events):
        if block["type"] == "tool_use":
            rebuilt.append(("tool_use", block["input"]))
        else:
            rebuilt.append((block["type"], block[block["type"]]))
            if block["type"] == "thinking":
                assert block["signature"] == sign(block["thinking"])
    assert rebuilt == expected


def fragment(call_id: str | None = None, name: str | None = None, args: str | None = None, **index: int) -> Any:
    """One ``tool_calls`` fragment; its ``index`` only when given (some upstreams send none)."""
    part: dict[str, Any] = {"function": {}, **index}
    if call_id is not None:
        part["id"] = call_id
    if name is not None:
        part["function"]["name"] = name
    if args is not None:
        part["function"]["arguments"] = args
    return part


def calls(*fragments: Any) -> dict[str, Any]:
    return chunk({"tool_calls": list(fragments)})


def tool_uses(events: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """(id, input) of each tool_use block, every partial_json prefix read as the SDKs do: an object started."""
    for index, text in tool_inputs(events).items():
        assert text.startswith("{"), (index, text)  # the anthropic SDK parses after every delta
    return [(block["id"], block.get("input", {})) for block in blocks(events) if block["type"] == "tool_use"]


def test_parallel_calls_all_at_index_0_with_their_own_ids_stay_separate_calls() -> None:
    events, _ = run(
        [
            calls(fragment("c0", "Read", '{"path"', index=0)),
            calls(fragment(args=':"/a"}', index=0)),
            calls(fragment("c1", "Read", '{"path"', index=0)),
            calls(fragment(args=':"/b"}', index=0)),
            chunk(finish="tool_calls"),
        ]
    )
    assert tool_uses(events) == [("c0", {"path": "/a"}), ("c1", {"path": "/b"})]


def test_calls_without_an_index_are_told_apart_by_their_ids() -> None:
    first, second = fragment("c0", "Read", '{"path":"/a"}'), fragment("c1", "Read", '{"path":"/b"}')
    for chunks in ([calls(first), calls(second)], [calls(first, second)]):
        events, _ = run([*chunks, chunk(finish="tool_calls")])
        assert tool_uses(events) == [("c0", {"path": "/a"}), ("c1", {"path": "/b"})]


def test_calls_announced_together_then_given_their_arguments_in_turn_are_both_delivered() -> None:
    events, _ = run(
        [
            calls(fragment("c0", "Read", "", index=0), fragment("c1", "Read", "", index=1)),
            calls(fragment(args='{"path":"/a"}', index=0)),
            calls(fragment(args='{"path":"/b"}', index=1)),
            chunk(finish="tool_calls"),
        ]
    )
    assert tool_uses(events) == [("c0", {"path": "/a"}), ("c1", {"path": "/b"})]


def test_arguments_led_by_blanks_stream_from_their_brace_and_blank_ones_are_an_empty_input() -> None:
    events, _ = run(
        [
            calls(fragment("c0", "f", " ", index=0)),
            calls(fragment(args="\n", index=0)),
            calls(fragment(args='{"a":', index=0)),
            calls(fragment(args="1}", index=0)),
            calls(fragment("c1", "g", " \n", index=1)),
            chunk(finish="tool_calls"),
        ]
    )
    assert tool_uses(events) == [("c0", {"a": 1}), ("c1", {})]
    assert [len(e) for e in tool_inputs(events).values()] == [len('{"a":1}')]  # c1 sent no delta at all


def test_arguments_that_are_no_json_object_arrive_whole_wrapped_as_in_the_whole_answer() -> None:
    for arguments in (["not ", "json"], ["[1,", "2]"], ['"ab', 'c"'], ["5"], [" ", "ls -la"]):
        pieces = [calls(fragment("c0", "run", arguments[0], index=0))]
        pieces += [calls(fragment(args=more, index=0)) for more in arguments[1:]]
        events, _ = run([*pieces, chunk({"content": "after"}), chunk(finish="tool_calls")])
        whole = "".join(arguments)
        assert tool_uses(events) == [("c0", tool_input(whole))]
        assert tool_input(whole) == {"_raw": whole}
