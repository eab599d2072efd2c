"""Script validation, defaults and the deterministic usage formula."""

from typing import Any

import pytest

from app.fake_upstream.script import Script, ToolCall, split_words


def test_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match=r"unknown Script field.*contnet"):
        Script.from_dict({"contnet": "typo"})


def test_from_dict_rejects_unknown_tool_call_keys() -> None:
    with pytest.raises(ValueError, match=r"unknown ToolCall field.*args"):
        Script.from_dict({"tool_calls": [{"id": "c", "name": "f", "args": "{}"}]})


def test_from_dict_requires_tool_call_id_and_name() -> None:
    with pytest.raises(ValueError, match="missing id"):
        Script.from_dict({"tool_calls": [{"name": "f"}]})


@pytest.mark.parametrize(
    "data",
    [
        {"status": "500"},
        {"status": 99},
        {"comment_every": True},
        {"reset_after_events": -1},
        {"delay_before_headers": -0.1},
        {"line_ending": "\n\n"},
        {"headers": {"content-length": "5"}},
        {"headers": {"x-a": "b\r\nx-injected: 1"}},
        {"usage": "none"},
        {"byte_by_byte": 1},
        {"stream_error": "boom"},
    ],
)
def test_invalid_field_values_are_rejected(data: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(data))):
        Script.from_dict(data)


def test_from_dict_rejects_non_objects() -> None:
    with pytest.raises(ValueError, match="JSON object"):
        Script.from_dict(["content"])


def test_chunks_define_the_text_when_it_is_absent() -> None:
    script = Script.from_dict({"content_chunks": ["a", "b"], "reasoning_chunks": ["r", "s"]})
    assert (script.content, script.reasoning) == ("ab", "rs")
    call = ToolCall(id="c", name="f", arguments_chunks=['{"a"', ":1}"])
    assert call.arguments == '{"a":1}'
    assert call.fragments() == ['{"a"', ":1}"]


def test_chunks_that_disagree_with_the_text_are_rejected() -> None:
    with pytest.raises(ValueError, match="content_chunks do not add up"):
        Script(content="abc", content_chunks=["a", "b"])


def test_finish_reason_defaults_to_tool_calls_only_when_calling_tools() -> None:
    assert Script().resolved_finish_reason() == "stop"
    assert Script(tool_calls=[ToolCall(id="c", name="f")]).resolved_finish_reason() == "tool_calls"
    assert Script(finish_reason="length", tool_calls=[ToolCall(id="c", name="f")]).resolved_finish_reason() == "length"


def test_default_usage_follows_the_documented_formula() -> None:
    script = Script(reasoning="r" * 9, tool_calls=[ToolCall(id="c", name="f", arguments="a" * 7)])
    usage = script.usage_for(prompt_chars=41, content="c" * 8)
    assert usage == {
        "prompt_tokens": 10,
        "completion_tokens": 6,
        "total_tokens": 16,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 2},
    }


def test_default_usage_never_reports_zero_tokens() -> None:
    usage = Script().usage_for(prompt_chars=0, content="")
    assert usage is not None
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (1, 1, 2)


def test_partial_usage_keeps_given_values_and_fills_the_rest() -> None:
    script = Script(usage={"prompt_tokens": 0, "prompt_tokens_details": {"cached_tokens": 3}})
    usage = script.usage_for(prompt_chars=400, content="c" * 40)
    assert usage == {
        "prompt_tokens": 0,
        "completion_tokens": 10,
        "total_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 3},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def test_usage_given_total_is_not_recomputed() -> None:
    usage = Script(usage={"total_tokens": 999}).usage_for(prompt_chars=40, content="c" * 40)
    assert usage is not None
    assert usage["total_tokens"] == 999


def test_usage_omit_sends_nothing() -> None:
    assert Script(usage="omit").usage_for(prompt_chars=40, content="x") is None


def test_word_split_round_trips_and_yields_word_sized_pieces() -> None:
    text = "  héllo 世界 🙂\nnext line "
    pieces = split_words(text)
    assert "".join(pieces) == text
    assert pieces[1:3] == ["héllo ", "世界 "]
