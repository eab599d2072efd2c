"""docs/protocol.md 3.7, Anthropic -> OpenAI direction: the messages array (user, assistant, tool results)."""

from __future__ import annotations

from typing import Any

import pytest

from app.dialects.anthropic import messages_to_chat
from app.dialects.anthropic.errors import AnthropicRequestError
from app.dialects.anthropic.messages import OMITTED_DOCUMENT


def body(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "hi"}],
    }
    base.update(fields)
    return base


def chat_messages(**fields: Any) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = messages_to_chat(body(**fields))["messages"]
    return messages


# --- user content --------------------------------------------------------------------------------------


def test_plain_string_user_content_stays_a_string() -> None:
    assert chat_messages(messages=[{"role": "user", "content": "plain"}]) == [{"role": "user", "content": "plain"}]


def test_single_text_block_becomes_a_plain_string() -> None:
    messages = chat_messages(messages=[{"role": "user", "content": [{"type": "text", "text": "only"}]}])
    assert messages == [{"role": "user", "content": "only"}]


def test_text_and_images_become_content_parts() -> None:
    content = [
        {"type": "text", "text": "look"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]
    messages = chat_messages(messages=[{"role": "user", "content": content}])
    assert messages == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
            ],
        }
    ]


def test_text_documents_become_text_parts_and_pdf_documents_are_named_as_left_out() -> None:
    content = [
        {"type": "document", "title": "Notes", "source": {"type": "text", "media_type": "text/plain", "data": "abc"}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}},
        {"type": "text", "text": "summarise"},
    ]
    messages = chat_messages(messages=[{"role": "user", "content": content}])
    assert messages == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Notes\n\nabc"},
                {"type": "text", "text": OMITTED_DOCUMENT},  # so the model does not invent its content
                {"type": "text", "text": "summarise"},
            ],
        }
    ]


def test_a_user_message_of_only_an_unreadable_document_says_so() -> None:
    content = [{"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}]
    assert chat_messages(messages=[{"role": "user", "content": content}]) == [
        {"role": "user", "content": OMITTED_DOCUMENT}
    ]


def test_unknown_block_types_are_dropped() -> None:
    content = [{"type": "some_future_block", "x": 1}, {"type": "text", "text": "t"}]
    assert chat_messages(messages=[{"role": "user", "content": content}]) == [{"role": "user", "content": "t"}]


# --- assistant content -----------------------------------------------------------------------------------


def test_assistant_blocks_become_one_assistant_message() -> None:
    content = [
        {"type": "thinking", "thinking": "Let me ", "signature": "sig"},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "thinking", "thinking": "read it.", "signature": "sig"},
        {"type": "text", "text": "I will read "},
        {"type": "text", "text": "the file."},
        {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"file_path": "/a", "limit": 10}},
        {"type": "tool_use", "id": "toolu_2", "name": "Glob", "input": {}},
    ]
    messages = chat_messages(messages=[{"role": "user", "content": "go"}, {"role": "assistant", "content": content}])
    assert messages[1] == {
        "role": "assistant",
        "content": "I will read the file.",
        "tool_calls": [
            {
                "id": "toolu_1",
                "type": "function",
                "function": {"name": "Read", "arguments": '{"file_path":"/a","limit":10}'},
            },
            {"id": "toolu_2", "type": "function", "function": {"name": "Glob", "arguments": "{}"}},
        ],
        "reasoning_content": "Let me read it.",
    }


def test_assistant_with_only_tool_calls_has_null_content() -> None:
    content = [{"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]
    message = chat_messages(messages=[{"role": "user", "content": "go"}, {"role": "assistant", "content": content}])[1]
    assert message["content"] is None
    assert message["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"a":1}'}


def test_assistant_with_only_redacted_thinking_has_empty_content() -> None:
    content = [{"type": "redacted_thinking", "data": "opaque"}]
    message = chat_messages(messages=[{"role": "user", "content": "go"}, {"role": "assistant", "content": content}])[1]
    assert message == {"role": "assistant", "content": ""}


def test_tool_input_with_huge_integers_still_serialises() -> None:
    content = [{"type": "tool_use", "id": "t1", "name": "f", "input": {"n": 2**70}}]
    message = chat_messages(messages=[{"role": "user", "content": "go"}, {"role": "assistant", "content": content}])[1]
    assert message["tool_calls"][0]["function"]["arguments"] == '{"n":1180591620717411303424}'


# --- tool results ----------------------------------------------------------------------------------------


def test_tool_results_come_first_in_order_then_the_remaining_user_content() -> None:
    content = [
        {"type": "text", "text": "here you go"},
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": "second"},
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "first"}]},
    ]
    messages = chat_messages(messages=[{"role": "user", "content": content}])
    assert messages == [
        {"role": "tool", "tool_call_id": "toolu_2", "content": "second"},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "first"},
        {"role": "user", "content": "here you go"},
    ]


def test_only_tool_results_produce_no_user_message() -> None:
    content = [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]
    assert chat_messages(messages=[{"role": "user", "content": content}]) == [
        {"role": "tool", "tool_call_id": "t1", "content": "ok"}
    ]


def test_images_of_a_tool_result_reach_the_model_in_the_user_message_after_it() -> None:
    png = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    result = {
        "type": "tool_result",
        "tool_use_id": "t1",
        "content": [{"type": "text", "text": "line 1"}, png, {"type": "text", "text": "line 2"}],
    }
    tool, user = chat_messages(messages=[{"role": "user", "content": [result, {"type": "text", "text": "and?"}]}])
    assert tool == {
        "role": "tool",
        "tool_call_id": "t1",
        "content": "line 1\n[image 1: attached to the next user message]\nline 2",
    }
    assert user == {
        "role": "user",
        "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "text", "text": "and?"},
        ],
    }
    only = chat_messages(messages=[{"role": "user", "content": [result]}])  # Claude Code's Read of a screenshot
    assert only[1] == {
        "role": "user",
        "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}],
    }


def test_consecutive_messages_of_one_role_are_one_turn_so_tool_calls_stay_with_their_results() -> None:
    messages = [
        {"role": "user", "content": "read both"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Read", "input": {"p": "a"}}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t2", "name": "Read", "input": {"p": "b"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "A"}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t2", "content": "B"}]},
    ]
    converted = chat_messages(messages=messages)
    assert [m["role"] for m in converted] == ["user", "assistant", "tool", "tool"]
    assert [call["id"] for call in converted[1]["tool_calls"]] == ["t1", "t2"]
    with pytest.raises(AnthropicRequestError) as caught:
        chat_messages(messages=[{"role": "user", "content": "x"}, {"role": "user", "content": [{"type": "text"}]}])
    assert caught.value.param == "messages.1.content.0.text"  # a merged turn's errors name their own message


def test_tool_result_error_is_prefixed() -> None:
    result = {"type": "tool_result", "tool_use_id": "t1", "content": "file not found", "is_error": True}
    assert chat_messages(messages=[{"role": "user", "content": [result]}])[0]["content"] == "Error: file not found"


def test_tool_result_without_content_is_an_empty_string() -> None:
    result = {"type": "tool_result", "tool_use_id": "t1"}
    assert chat_messages(messages=[{"role": "user", "content": [result]}])[0]["content"] == ""
