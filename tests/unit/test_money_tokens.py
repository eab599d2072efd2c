from typing import Any

import pytest

from app.money.tokens import (
    MEDIA_PART_TOKENS,
    MESSAGE_OVERHEAD_TOKENS,
    TokenUsage,
    answer_output_tokens,
    estimate_prompt_tokens,
    output_tokens,
    text_tokens,
)


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("", 0),
        ("a", 1),
        ("abcd", 1),
        ("abcde", 2),
        ("x" * 400, 100),
        ("你好", 2),  # one token per CJK character
        ("你好世界", 4),
        ("héllo", 2),  # 4 ASCII -> 1, plus one for the accented letter
        ("ab你好cd", 3),
        ("👋", 1),
    ],
)
def test_text_tokens(text, tokens) -> None:
    assert text_tokens(text) == tokens


def test_media_parts_cost_a_fixed_amount_however_large() -> None:
    small = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}
    huge = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 1_000_000}}
    for part in (small, huge):
        messages = [{"role": "user", "content": [part]}]
        assert estimate_prompt_tokens(messages) == MESSAGE_OVERHEAD_TOKENS + MEDIA_PART_TOKENS
    others: list[dict[str, Any]] = [{"type": kind, kind: {}} for kind in ("input_audio", "file", "video_url")]
    assert (
        estimate_prompt_tokens([{"role": "user", "content": others}]) == MESSAGE_OVERHEAD_TOKENS + 3 * MEDIA_PART_TOKENS
    )


def test_prompt_estimate_adds_text_parts_reasoning_tool_calls_and_tools() -> None:
    calls = [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "abcd"},
        {"role": "user", "content": [{"type": "text", "text": "abcdefgh"}]},
        {"role": "assistant", "content": None, "reasoning_content": "你好", "tool_calls": calls},
    ]
    plain = estimate_prompt_tokens(messages)
    base = 3 * MESSAGE_OVERHEAD_TOKENS + 1 + 2 + 2
    assert plain > base  # the tool calls count too
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert estimate_prompt_tokens(messages, tools) > plain


def test_unknown_part_types_are_counted_by_their_json() -> None:
    part = {"type": "mystery", "payload": "x" * 400}
    assert estimate_prompt_tokens([{"role": "user", "content": [part]}]) > 100


def test_usage_is_parsed_with_details() -> None:
    usage = {
        "prompt_tokens": 19,
        "completion_tokens": 9,
        "total_tokens": 28,
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 3},
    }
    assert TokenUsage.from_openai(usage) == TokenUsage(19, 9, reasoning_tokens=3, cached_tokens=4)


def test_explicit_zeros_are_respected() -> None:
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    assert TokenUsage.from_openai(usage) == TokenUsage(0, 0, 0, 0)


def test_cached_tokens_are_capped_at_the_prompt() -> None:
    usage = {"prompt_tokens": 10, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 50}}
    parsed = TokenUsage.from_openai(usage)
    assert parsed is not None
    assert parsed.cached_tokens == 10


@pytest.mark.parametrize(
    "usage",
    [
        None,
        "usage",
        [],
        {},
        {"prompt_tokens": 10},
        {"completion_tokens": 10},
        {"prompt_tokens": "10", "completion_tokens": 1},
        {"prompt_tokens": 10.0, "completion_tokens": 1},
        {"prompt_tokens": -1, "completion_tokens": 1},
        {"prompt_tokens": True, "completion_tokens": 1},
        {"prompt_tokens": 1, "completion_tokens": None},
    ],
)
def test_unusable_usage_is_none(usage) -> None:
    assert TokenUsage.from_openai(usage) is None


@pytest.mark.parametrize(
    "details",
    [
        {"prompt_tokens_details": None, "completion_tokens_details": None},
        {"prompt_tokens_details": {"cached_tokens": "4"}, "completion_tokens_details": {"reasoning_tokens": -3}},
        {"prompt_tokens_details": [], "completion_tokens_details": "x"},
    ],
)
def test_garbage_details_count_as_zero(details) -> None:
    assert TokenUsage.from_openai({"prompt_tokens": 5, "completion_tokens": 6, **details}) == TokenUsage(5, 6)


def test_output_counts_content_reasoning_refusal_and_every_tool_call() -> None:
    message = {
        "content": "abcd" * 10,  # 10
        "reasoning_content": "efgh" * 5,  # 5
        "refusal": "no!!",  # 1
        "tool_calls": [
            {"function": {"name": "read", "arguments": "x" * 40_000}},  # 1 + 10,000
            {"function": {"name": "writ", "arguments": "{}"}},  # 1 + 1
            "garbage",
        ],
    }
    assert output_tokens(message) == 10 + 5 + 1 + 1 + 10_000 + 1 + 1


def test_output_of_a_stream_delta_is_counted_the_same_way() -> None:
    delta = {"tool_calls": [{"index": 0, "function": {"arguments": "abcdabcd"}}]}
    assert output_tokens(delta) == 2
    assert output_tokens(None) == 0
    assert output_tokens({"content": None, "tool_calls": None}) == 0
    assert output_tokens({"content": "abcd", "tool_calls": True}) == 1  # a lie, not a TypeError mid-stream


def test_a_whole_answer_counts_every_choice() -> None:
    choices = [{"message": {"content": "abcd"}}, {"message": {"tool_calls": [{"function": {"arguments": "abcd"}}]}}, 7]
    assert answer_output_tokens(choices) == 2


def test_json_too_deep_to_serialise_is_still_counted() -> None:
    part: dict[str, object] = {"type": "x"}
    for _ in range(300):
        part = {"type": "x", "nested": part}
    assert estimate_prompt_tokens([{"role": "user", "content": [part]}]) > 300
