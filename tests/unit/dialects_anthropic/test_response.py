"""docs/protocol.md 3.7, OpenAI -> Anthropic direction (non-streaming), row by row."""

from __future__ import annotations

from typing import Any

import pytest

from app.dialects.anthropic import chat_to_message, stop_reason_for, usage_to_anthropic


def sign(text: str) -> str:
    return f"sig:{len(text)}"


def completion(message: dict[str, Any], finish_reason: str | None = "stop", usage: Any = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "doubao-seed-2-0-pro-260215",
        "choices": [{"index": 0, "finish_reason": finish_reason, "message": {"role": "assistant", **message}}],
        "usage": usage,
    }


def translate(chat: dict[str, Any]) -> dict[str, Any]:
    return chat_to_message(chat, model="claude-sonnet-4-5", message_id="msg_abc", sign=sign)


def test_blocks_come_in_thinking_text_tool_use_order() -> None:
    message = translate(
        completion(
            {
                "content": "Reading it.",
                "reasoning_content": "I should read the file.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "Read", "arguments": '{"file_path":"/a"}'},
                    }
                ],
            },
            finish_reason="tool_calls",
        )
    )
    assert message["content"] == [
        {"type": "thinking", "thinking": "I should read the file.", "signature": "sig:23"},
        {"type": "text", "text": "Reading it."},
        {"type": "tool_use", "id": "call_1", "name": "Read", "input": {"file_path": "/a"}},
    ]
    assert message["stop_reason"] == "tool_use"


def test_message_envelope_fields() -> None:
    message = translate(completion({"content": "hi"}))
    assert {k: v for k, v in message.items() if k != "content"} == {
        "id": "msg_abc",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }
    assert message["content"] == [{"type": "text", "text": "hi"}]


def test_empty_content_and_reasoning_produce_no_blocks() -> None:
    assert translate(completion({"content": "", "reasoning_content": None}))["content"] == []


def test_no_choices_produce_an_empty_end_turn_message() -> None:
    message = translate({"choices": [], "usage": None})
    assert (message["content"], message["stop_reason"]) == ([], "end_turn")


@pytest.mark.parametrize(
    ("finish_reason", "stop_reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("function_call", "tool_use"),
        ("content_filter", "refusal"),
        ("something_new", "end_turn"),
        (None, "end_turn"),
    ],
)
def test_finish_reason_maps_to_stop_reason(finish_reason: str | None, stop_reason: str) -> None:
    assert stop_reason_for(finish_reason) == stop_reason
    assert translate(completion({"content": "x"}, finish_reason=finish_reason))["stop_reason"] == stop_reason


def test_tool_calls_with_a_stop_finish_still_stop_for_tool_use() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    assert (
        translate(completion({"content": None, "tool_calls": [call]}, finish_reason="stop"))["stop_reason"]
        == "tool_use"
    )


def test_length_with_tool_calls_stays_max_tokens() -> None:
    assert stop_reason_for("length", has_tool_use=True) == "max_tokens"


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ('{"a": [1, 2]}', {"a": [1, 2]}),
        ("", {}),
        ("  ", {}),
        ('{"a": 1', {"_raw": '{"a": 1'}),
        ("[1, 2]", {"_raw": "[1, 2]"}),
        ('"text"', {"_raw": '"text"'}),
    ],
)
def test_tool_arguments_parse_to_an_object_or_are_kept_raw(arguments: str, expected: dict[str, Any]) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}
    block = translate(completion({"tool_calls": [call]}, finish_reason="tool_calls"))["content"][0]
    assert block["input"] == expected


def test_tool_call_without_id_gets_a_stable_synthetic_id() -> None:
    calls = [{"type": "function", "function": {"name": "f", "arguments": "{}"}}] * 2
    blocks = translate(completion({"tool_calls": calls}, finish_reason="tool_calls"))["content"]
    assert [b["id"] for b in blocks] == ["toolu_abc_0", "toolu_abc_1"]


def test_usage_maps_cached_tokens_out_of_input_tokens() -> None:
    usage = {
        "prompt_tokens": 1000,
        "completion_tokens": 57,
        "total_tokens": 1057,
        "prompt_tokens_details": {"cached_tokens": 800},
        "completion_tokens_details": {"reasoning_tokens": 20},
    }
    expected = {
        "input_tokens": 200,
        "output_tokens": 57,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 800,
    }
    assert usage_to_anthropic(usage) == expected
    assert translate(completion({"content": "x"}, usage=usage))["usage"] == expected


def test_usage_without_details_or_at_all_is_zero_filled() -> None:
    assert usage_to_anthropic({"prompt_tokens": 19, "completion_tokens": 9}) == {
        "input_tokens": 19,
        "output_tokens": 9,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    assert usage_to_anthropic(None)["input_tokens"] == 0


def test_usage_with_nonsense_values_never_goes_negative() -> None:
    usage = {"prompt_tokens": 5, "completion_tokens": -3, "prompt_tokens_details": {"cached_tokens": 9}}
    assert usage_to_anthropic(usage) == {
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 5,
    }


def test_a_finish_reason_of_another_type_ends_the_turn_instead_of_failing_the_request() -> None:
    for odd in (["length"], {"reason": "length"}, 3):
        chat = completion({"role": "assistant", "content": "x"}, finish_reason=odd)  # type: ignore[arg-type]
        assert translate(chat)["stop_reason"] == "end_turn"
