"""chat.completion (whole and streamed) -> Responses objects and events; sealing."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from app.dialects.responses.events import COMPLETED, CREATED, IN_PROGRESS, INCOMPLETE, MESSAGE
from app.dialects.responses.response import (
    ECHOED,
    Context,
    chat_to_response,
    echo_members,
    fill_response,
    message_json,
    output_text_json,
    response_template,
    status_for,
    usage_json,
)
from app.dialects.responses.seal import Sealer
from app.dialects.responses.stream import ResponseStreamTranslator
from app.json import dumps_compact

SEALER = Sealer("master-key", "test purpose")
STARTED_EVENTS = CREATED + b'%d,"response":%b}\n\n' + IN_PROGRESS + b'%d,"response":%b}\n\n'


def context(**fields: Any) -> Context:
    base: dict[str, Any] = {"echo": {}, "names": {}, "encrypted": False, "store": False, "input_items": []}
    merged = base | fields
    return Context(**(merged | {"echo": echo_members(merged["echo"])}))


def events(raw: bytes) -> list[dict[str, Any]]:
    return [
        orjson.loads(block.split(b"\ndata: ", 1)[1]) for block in raw.split(b"\n\n") if block.startswith(b"event: ")
    ]


def test_usage_maps_cached_and_reasoning_details() -> None:
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 3},
        "completion_tokens_details": {"reasoning_tokens": 2},
    }
    assert orjson.loads(usage_json(usage)) == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 3},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": 15,
    }
    assert orjson.loads(usage_json(None))["total_tokens"] == 0


def test_a_whole_answer_orders_reasoning_message_then_calls_and_maps_namespaces_back() -> None:
    answer = {
        "choices": [
            {
                "finish_reason": "length",
                "message": {
                    "content": "text",
                    "reasoning_content": "why",
                    "tool_calls": [{"id": "c1", "function": {"name": "ns__run", "arguments": "{}"}}],
                },
            }
        ]
    }
    ctx = context(names={"ns__run": ("ns", "run")}, encrypted=True, echo={"instructions": "i"})
    response = orjson.loads(chat_to_response(answer, ctx, SEALER, "req_abc", "model-x"))
    assert [item["type"] for item in response["output"]] == ["reasoning", "message", "function_call"]
    assert SEALER.open(response["output"][0]["encrypted_content"]) == b"why"
    call = response["output"][2]
    assert (call["name"], call["namespace"], call["call_id"]) == ("run", "ns", "c1")
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert (response["id"], response["model"], response["instructions"]) == ("resp_abc", "model-x", "i")
    assert response["tool_choice"] == "auto"


@pytest.mark.parametrize("finish", ["stop", "length", "content_filter", None])
def test_a_text_answer_in_one_template_is_byte_for_byte_what_the_item_writers_write(finish: str | None) -> None:
    text = 'h\u00e9 "quoted" \ud800 </script>'
    usage = {
        "prompt_tokens": 7,
        "completion_tokens": 4,
        "prompt_tokens_details": {"cached_tokens": 2},
        "completion_tokens_details": {"reasoning_tokens": 1},
    }
    answer = {"choices": [{"finish_reason": finish, "message": {"content": text, "tool_calls": []}}], "usage": usage}
    ctx = context(echo={"instructions": "i", "metadata": {"a": 1}}, store=True)
    status, incomplete = status_for(finish)
    part = output_text_json(dumps_compact(text))
    template = response_template(ctx, request_id="req_abc", model="model-x")
    expected = fill_response(template, status, [message_json("msg_abc", part)], usage_json(usage), incomplete)
    assert chat_to_response(answer, ctx, SEALER, "req_abc", "model-x") == expected


def test_a_sealed_value_opens_only_under_the_same_key_purpose_and_associated_data() -> None:
    token = SEALER.seal(b"secret", b"ad")
    assert SEALER.open(token, b"ad") == b"secret"
    assert SEALER.open(token, b"other") is None
    assert Sealer("master-key", "other purpose").open(token, b"ad") is None
    assert Sealer("other-key", "test purpose").open(token, b"ad") is None
    assert SEALER.open(token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1], b"ad") is None
    assert SEALER.open("!!not base64!!") is None
    assert SEALER.open("") is None


def stream_of(*chunks: dict[str, Any], ctx: Context | None = None) -> list[dict[str, Any]]:
    translator = ResponseStreamTranslator(ctx or context(), SEALER, "req_1", "m")
    raw = translator.start() + b"".join(translator.feed(chunk) for chunk in chunks) + translator.finish()
    return events(raw)


def delta(**fields: Any) -> dict[str, Any]:
    """A chunk as the upstream streams it when asked for usage (every member present)."""
    return {"choices": [{"index": 0, "delta": fields, "logprobs": None, "finish_reason": None}], "usage": None}


FINISH = {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}


def test_tool_arguments_before_the_name_are_held_then_delivered_in_order() -> None:
    seen = stream_of(
        delta(tool_calls=[{"index": 0, "id": "c1", "function": {"arguments": '{"a"'}}]),
        delta(tool_calls=[{"index": 0, "function": {"name": "f", "arguments": ":1}"}}]),
        delta(tool_calls=[{"index": 1, "id": "c2", "function": {"name": "g", "arguments": "{}"}}]),
        FINISH,
    )
    kinds = [e["type"] for e in seen]
    assert kinds[2:] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    final = seen[-1]["response"]["output"]
    assert [(i["call_id"], i["name"], i["arguments"]) for i in final] == [("c1", "f", '{"a":1}'), ("c2", "g", "{}")]
    assert [e["output_index"] for e in seen if e["type"] == "response.output_item.done"] == [0, 1]


def final_calls(seen: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(call_id, arguments) of the completed response's calls; every call's deltas add up to its arguments."""
    assert seen[-1]["type"] == "response.completed", seen[-1]
    told: dict[str, str] = {}
    for event in seen:
        if event["type"] == "response.function_call_arguments.delta":
            told[event["item_id"]] = told.get(event["item_id"], "") + event["delta"]
    output = seen[-1]["response"]["output"]
    assert {item["id"]: item["arguments"] for item in output} == told
    return [(item["call_id"], item["arguments"]) for item in output]


def test_parallel_calls_all_at_index_0_with_their_own_ids_stay_separate_calls() -> None:
    seen = stream_of(
        delta(tool_calls=[{"index": 0, "id": "c0", "function": {"name": "Read", "arguments": '{"path"'}}]),
        delta(tool_calls=[{"index": 0, "function": {"arguments": ':"/a"}'}}]),
        delta(tool_calls=[{"index": 0, "id": "c1", "function": {"name": "Read", "arguments": '{"path"'}}]),
        delta(tool_calls=[{"index": 0, "function": {"arguments": ':"/b"}'}}]),
        FINISH,
    )
    assert final_calls(seen) == [("c0", '{"path":"/a"}'), ("c1", '{"path":"/b"}')]


def test_calls_without_an_index_are_told_apart_by_their_ids() -> None:
    first = {"id": "c0", "function": {"name": "Read", "arguments": '{"path":"/a"}'}}
    second = {"id": "c1", "function": {"name": "Read", "arguments": '{"path":"/b"}'}}
    for chunks in ([delta(tool_calls=[first]), delta(tool_calls=[second])], [delta(tool_calls=[first, second])]):
        assert final_calls(stream_of(*chunks, FINISH)) == [("c0", '{"path":"/a"}'), ("c1", '{"path":"/b"}')]


def test_calls_announced_together_then_given_their_arguments_in_turn_are_both_delivered() -> None:
    announced = [
        {"index": 0, "id": "c0", "function": {"name": "Read", "arguments": ""}},
        {"index": 1, "id": "c1", "function": {"name": "Read", "arguments": ""}},
    ]
    seen = stream_of(
        delta(tool_calls=announced),
        delta(tool_calls=[{"index": 0, "function": {"arguments": '{"path":"/a"}'}}]),
        delta(tool_calls=[{"index": 1, "function": {"arguments": '{"path":"/b"}'}}]),
        FINISH,
    )
    assert final_calls(seen) == [("c0", '{"path":"/a"}'), ("c1", '{"path":"/b"}')]


def test_a_call_without_arguments_gets_an_empty_object_streamed_or_whole() -> None:
    seen = stream_of(delta(tool_calls=[{"index": 0, "id": "c0", "function": {"name": "now", "arguments": ""}}]), FINISH)
    assert final_calls(seen) == [("c0", "{}")]
    answer = {"choices": [{"message": {"tool_calls": [{"id": "c0", "function": {"name": "now"}}]}}]}
    whole = orjson.loads(chat_to_response(answer, context(), SEALER, "req_1", "m"))
    assert [(item["call_id"], item["arguments"]) for item in whole["output"]] == [("c0", "{}")]


def test_interleaved_parallel_arguments_end_the_stream_failed() -> None:
    seen = stream_of(
        delta(tool_calls=[{"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{"}}]),
        delta(tool_calls=[{"index": 1, "id": "c2", "function": {"name": "g", "arguments": "{"}}]),
        delta(tool_calls=[{"index": 0, "function": {"arguments": "}"}}]),
        FINISH,
    )
    assert seen[-1]["type"] == "response.failed"
    assert "interleaved" in seen[-1]["response"]["error"]["message"]


def test_a_stream_without_a_finish_reason_fails_instead_of_completing() -> None:
    seen = stream_of(delta(content="partial"))
    assert seen[-1]["type"] == "response.failed"
    assert seen[-1]["response"]["output"][0]["content"][0]["text"] == "partial"


def test_a_tool_call_without_a_name_fails() -> None:
    seen = stream_of(delta(tool_calls=[{"index": 0, "id": "c1", "function": {"arguments": "{}"}}]), FINISH)
    assert seen[-1]["type"] == "response.failed"


def test_a_content_filter_finish_is_an_incomplete_response() -> None:
    seen = stream_of(delta(content="x"), {"choices": [{"index": 0, "delta": {}, "finish_reason": "content_filter"}]})
    assert seen[-1]["type"] == "response.incomplete"
    assert seen[-1]["response"]["incomplete_details"] == {"reason": "content_filter"}


def test_text_deltas_are_compact_json_in_the_documented_key_order_even_with_lone_surrogates() -> None:
    texts = ['Hé "q" \\ \n', "a\ud800b"]  # the second is not valid UTF-8: escaped, never an exception
    translator = ResponseStreamTranslator(context(), SEALER, "req_1", "m")
    translator.start()
    raw = b"".join(translator.feed(delta(reasoning_content=t)) + translator.feed(delta(content=t)) for t in texts)
    raw += translator.flush()  # the relay's flush at the end of the write
    blocks = [block for block in raw.split(b"\n\n") if b".delta\n" in block]
    assert len(blocks) == 4
    for block in blocks:
        head, data = block.split(b"\ndata: ")
        event = json.loads(data)
        kind = head.removeprefix(b"event: ").decode()
        assert event["type"] == kind
        assert data == json.dumps(event, separators=(",", ":"), ensure_ascii="\ud800" in event["delta"]).encode()
        extra = ["summary_index"] if "reasoning" in kind else ["content_index"]
        tail = [] if "reasoning" in kind else ["logprobs"]
        assert list(event) == ["type", "sequence_number", "item_id", "output_index", *extra, "delta", *tail]


def test_every_streamed_event_is_compact_json_numbered_in_order_including_the_shared_response_events() -> None:
    translator = ResponseStreamTranslator(context(echo={"instructions": "é"}), SEALER, "req_1", "m")
    pieces = [delta(reasoning_content="think "), delta(reasoning_content="more")]
    pieces += [delta(content="a"), delta(content="b\ud800"), delta(content='"c"')]
    pieces += [{"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]
    raw = translator.start() + b"".join(translator.feed(piece) for piece in pieces) + translator.finish()
    blocks = [block for block in raw.split(b"\n\n") if block]
    seen = []
    for block in blocks:
        head, data = block.split(b"\ndata: ")
        event = json.loads(data)  # the stdlib reads the escaped lone surrogate back
        assert head == b"event: " + event["type"].encode()
        ascii_data = "".join(c if ord(c) < 128 else f"\\u{ord(c):04x}" for c in data.decode())
        assert ascii_data == json.dumps(event, separators=(",", ":"))  # compact, keys in the written order
        seen.append(event)
    assert [event["sequence_number"] for event in seen] == list(range(len(blocks)))
    assert seen[0]["response"] == seen[1]["response"]  # created and in_progress carry the same object
    assert seen[0]["response"]["instructions"] == "é"
    message = seen[-1]["response"]["output"][1]
    assert message["content"][0]["text"] == 'ab\ud800"c"'


def test_a_text_piece_that_also_finishes_calls_a_tool_or_reasons_is_not_cut_short() -> None:
    finishing = {"choices": [{"index": 0, "delta": {"content": "b"}, "finish_reason": "stop"}]}
    seen = stream_of(delta(content="a"), finishing)
    assert seen[-1]["type"] == "response.completed"
    assert seen[-1]["response"]["output"][0]["content"][0]["text"] == "ab"

    call = {"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{}"}}
    seen = stream_of(delta(content="a"), delta(content="b", tool_calls=[call]), FINISH)
    output = seen[-1]["response"]["output"]
    assert [item["type"] for item in output] == ["message", "function_call"]
    assert output[0]["content"][0]["text"] == "ab"

    seen = stream_of(delta(content="a"), delta(content="b", reasoning_content="r"), FINISH)
    output = seen[-1]["response"]["output"]
    assert [item["type"] for item in output] == ["message", "reasoning", "message"]
    assert (output[1]["summary"][0]["text"], output[2]["content"][0]["text"]) == ("r", "b")


def test_nothing_is_delivered_after_the_upstream_broke_the_stream_even_mid_text() -> None:
    seen = stream_of(
        delta(tool_calls=[{"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{"}}]),
        delta(content="x"),
        delta(tool_calls=[{"index": 0, "function": {"arguments": "}"}}]),  # the closed call again: broken
        delta(content="y"),
        FINISH,
    )
    assert [e["delta"] for e in seen if e["type"] == "response.output_text.delta"] == ["x"]
    assert seen[-1]["type"] == "response.failed"


def test_echoed_fields_keep_the_documented_order_with_defaults_for_those_left_out_or_null() -> None:
    response = orjson.loads(
        chat_to_response(
            {"choices": [{"message": {"content": "x"}, "finish_reason": "stop"}]},
            context(echo={"tools": [{"type": "function", "name": "f"}], "top_p": None, "instructions": "i"}),
            SEALER,
            "req_1",
            "m",
        )
    )
    echoed = list(response)[list(response).index("store") + 1 :]
    assert echoed == list(ECHOED)
    assert (response["instructions"], response["tools"], response["top_p"]) == (
        "i",
        [{"type": "function", "name": "f"}],
        None,
    )
    assert (response["tool_choice"], response["truncation"], response["text"]) == (
        "auto",
        "disabled",
        {"format": {"type": "text"}},
    )


def test_the_text_pieces_of_one_write_become_one_delta_in_order_with_the_other_events() -> None:
    translator = ResponseStreamTranslator(context(), SEALER, "req_1", "m")
    raw = translator.start() + translator.feed(delta(content="a"))  # opens the item at once, holds "a"
    assert b"response.output_item.added" in raw
    assert b".delta" not in raw
    assert translator.feed(delta(content="b")) == b""
    assert translator.feed(delta(content="c")) == b""  # held for the write
    raw += translator.flush()
    raw += translator.feed(delta(content="d")) + translator.feed(delta(reasoning_content="r"))  # "d" first
    raw += translator.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}) + translator.finish()
    seen = events(raw)
    assert [e["delta"] for e in seen if e["type"] == "response.output_text.delta"] == ["abc", "d"]
    kinds = [e["type"] for e in seen]
    assert kinds.index("response.output_text.done") > max(
        i for i, k in enumerate(kinds) if k == "response.output_text.delta"
    )
    assert [e["sequence_number"] for e in seen] == list(range(len(seen)))
    assert seen[-1]["response"]["output"][0]["content"][0]["text"] == "abcd"
    assert translator.flush() == b""


@pytest.mark.parametrize("finish", ["stop", "length", "content_filter"])
@pytest.mark.parametrize("writes", [["a"], ["a", "b\u00e9"], ['"a" </x>', "b", "\ud800"]])
@pytest.mark.parametrize("flushed", [True, False])
def test_a_streamed_text_answer_starts_and_ends_byte_for_byte_as_the_item_writers_write_it(
    finish: str, writes: list[str], flushed: bool
) -> None:
    ctx = context(echo={"instructions": "i%d", "metadata": {"a": "%b"}}, store=True)
    usage = {"prompt_tokens": 7, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": 2}}
    translator = ResponseStreamTranslator(ctx, SEALER, "req_abc", "model-%x")
    start = translator.start()
    opened = b"".join(translator.feed(delta(content=piece)) + translator.flush() for piece in writes[:-1])
    opened += translator.feed(delta(content=writes[-1])) + (translator.flush() if flushed else b"")
    end = translator.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}], "usage": usage})
    end += translator.finish()

    template = response_template(ctx, request_id="req_abc", model="model-%x")
    in_progress = fill_response(template, "in_progress")
    assert start == STARTED_EVENTS % (0, in_progress, 1, in_progress)
    text_json = dumps_compact("".join(writes))
    part = output_text_json(text_json)
    item = message_json("msg_abc", part)
    status, incomplete = status_for(finish)
    response = fill_response(template, status, [item], usage_json(usage), incomplete)
    seq = opened.count(b"\n\n") + 2 + (0 if flushed else 1)  # the last piece's delta goes out with the end
    common = MESSAGE.common % (b"msg_abc", 0)
    closed = MESSAGE.closed % (seq, common, text_json, seq + 1, common, part, seq + 2, 0, item)
    head = COMPLETED if status == "completed" else INCOMPLETE
    assert end.endswith(closed + head + b'%d,"response":%b}\n\n' % (seq + 3, response))
    assert ctx.final == response
    blocks = (start + opened + end).split(b"\n\n")[:-1]
    assert [json.loads(b.split(b"\ndata: ")[1])["sequence_number"] for b in blocks] == list(range(seq + 4))


def test_chunks_without_the_usual_members_take_the_general_path_to_the_same_events() -> None:
    translator = ResponseStreamTranslator(context(), SEALER, "req_1", "m")
    raw = translator.start()
    for piece in ("a", "b", "c"):
        raw += translator.feed({"choices": [{"delta": {"content": piece}}]})  # no index, finish_reason, usage
    raw += translator.feed({"choices": [{"delta": {}, "finish_reason": "stop"}]}) + translator.finish()
    seen = events(raw)
    assert [e["delta"] for e in seen if e["type"] == "response.output_text.delta"] == ["abc"]  # one write
    assert seen[-1]["response"]["output"][0]["content"][0]["text"] == "abc"
    assert [e["sequence_number"] for e in seen] == list(range(len(seen)))


def test_a_finish_reason_of_another_type_completes_the_response_instead_of_failing_the_request() -> None:
    for odd in (["length"], {"reason": "length"}, 3, None):
        answer = {"choices": [{"message": {"content": "x"}, "finish_reason": odd}]}
        response = orjson.loads(chat_to_response(answer, context(), SEALER, "req_1", "m"))
        assert (response["status"], response["incomplete_details"]) == ("completed", None)


def test_a_tool_call_without_a_name_is_left_out_and_one_without_an_id_gets_one() -> None:
    calls = [
        {"id": "", "function": {"name": "run", "arguments": {"cmd": "ls"}}},  # empty id, arguments as an object
        {"id": "c2", "function": {"arguments": "{}"}},  # no name: nothing a client could run
        {"id": "c3", "function": {"name": "", "arguments": "{}"}},
    ]
    answer = {"choices": [{"finish_reason": "tool_calls", "message": {"content": None, "tool_calls": calls}}]}
    response = orjson.loads(chat_to_response(answer, context(), SEALER, "req_abc", "model-x"))
    assert [item["type"] for item in response["output"]] == ["function_call"]
    (call,) = response["output"]
    assert (call["call_id"], call["name"], orjson.loads(call["arguments"])) == ("call_abc_0", "run", {"cmd": "ls"})
