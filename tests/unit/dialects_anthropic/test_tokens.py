from __future__ import annotations

from typing import Any

import pytest

from app.dialects.anthropic.tokens import IMAGE_TOKENS, estimate_input_tokens, estimate_text_tokens


def base() -> dict[str, Any]:
    return {"model": "claude", "messages": [{"role": "user", "content": "hi"}]}


def test_ascii_text_counts_about_four_characters_per_token() -> None:
    assert estimate_text_tokens("a" * 400) == 100
    assert estimate_text_tokens("abcde") == 2


def test_cjk_text_counts_one_token_per_character() -> None:
    assert estimate_text_tokens("你好世界") == 4
    assert estimate_text_tokens("ab你好") == 3


def test_empty_text_is_zero_tokens() -> None:
    assert estimate_text_tokens("") == 0


def test_minimal_body_needs_no_max_tokens_and_is_positive() -> None:
    assert estimate_input_tokens(base()) > 0


@pytest.mark.parametrize(
    "grow",
    [
        lambda b: b.update(system="You are a careful assistant. " * 20),
        lambda b: b.update(system=[{"type": "text", "text": "Be brief. " * 30}]),
        lambda b: b["messages"].append({"role": "assistant", "content": [{"type": "text", "text": "x" * 400}]}),
        lambda b: b["messages"].append({"role": "assistant", "content": [{"type": "thinking", "thinking": "y" * 400}]}),
        lambda b: b["messages"].append(
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t", "name": "Read", "input": {"p": "z" * 400}}],
            }
        ),
        lambda b: b["messages"].append(
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "w" * 400}]}
        ),
        lambda b: b["messages"].append(
            {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]}
        ),
        lambda b: b.update(tools=[{"name": "Read", "description": "Read a file", "input_schema": {"type": "object"}}]),
    ],
)
def test_estimate_grows_with_every_kind_of_content(grow: Any) -> None:
    body = base()
    before = estimate_input_tokens(body)
    grow(body)
    assert estimate_input_tokens(body) > before


def test_each_image_costs_a_fixed_amount() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "A" * 10_000}}
    body = base()
    before = estimate_input_tokens(body)
    body["messages"][0]["content"] = [{"type": "text", "text": "hi"}, image, image]
    assert estimate_input_tokens(body) - before == 2 * IMAGE_TOKENS


def test_malformed_shapes_are_estimated_without_raising() -> None:
    body: dict[str, Any] = {"messages": [5, {"content": 7}, {"content": [3, {"type": "tool_result", "content": None}]}]}
    body["tools"] = ["x", {"input_schema": {"n": 2**70}}]
    body["system"] = {"not": "valid"}
    assert estimate_input_tokens(body) > 0
