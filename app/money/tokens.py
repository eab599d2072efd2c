"""Token counts: the upstream's reported usage, and the gateway's own estimates.

Estimates are used only where the upstream has not (yet) said: to size a hold, and to bill an answer
whose usage never arrived. A text costs ``ceil(ascii_chars / 4) + non_ascii_chars`` tokens -- one
token per CJK character, four ASCII characters per token -- which errs high for the Seed tokenizer
on both scripts. An image, audio or file part counts ``MEDIA_PART_TOKENS`` however large its base64
is; every message adds ``MESSAGE_OVERHEAD_TOKENS``.

``output_tokens`` is THE count of generated output when usage is missing, for a whole answer's
``message`` and for a stream's ``delta`` alike: content, reasoning, tool-call names and arguments,
and refusals.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

MEDIA_PART_TOKENS = 1_600
MESSAGE_OVERHEAD_TOKENS = 4
_MEDIA_PARTS = frozenset({"image_url", "input_audio", "file", "video_url"})
_OUTPUT_TEXT_FIELDS = ("content", "reasoning_content", "refusal")


def text_tokens(text: str) -> int:
    non_ascii = len(text) - len(text.encode("ascii", "ignore"))
    ascii_chars = len(text) - non_ascii
    return (ascii_chars + 3) // 4 + non_ascii


def _json_tokens(value: Any) -> int:
    try:
        return text_tokens(orjson.dumps(value).decode())
    except orjson.JSONEncodeError:  # nested deeper than orjson writes: count its text form
        return text_tokens(str(value))


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return text_tokens(content)
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                total += text_tokens(part["text"])
            elif isinstance(part, dict) and part.get("type") in _MEDIA_PARTS:
                total += MEDIA_PART_TOKENS
            else:
                total += _json_tokens(part)
        return total
    return 0


def estimate_prompt_tokens(messages: list[dict[str, Any]], tools: list[Any] | None = None) -> int:
    total = 0
    for message in messages:
        total += MESSAGE_OVERHEAD_TOKENS + _content_tokens(message.get("content"))
        reasoning = message.get("reasoning_content")
        if isinstance(reasoning, str):
            total += text_tokens(reasoning)
        tool_calls = message.get("tool_calls")
        if tool_calls:
            total += _json_tokens(tool_calls)
    if tools:
        total += _json_tokens(tools)
    return total


def output_tokens(message: Any) -> int:
    """Generated tokens carried by one answer ``message`` or one stream ``delta``."""
    if not isinstance(message, dict):
        return 0
    total = 0
    for field in _OUTPUT_TEXT_FIELDS:
        text = message.get(field)
        if isinstance(text, str) and text:
            total += text_tokens(text)
    calls = message.get("tool_calls")
    for call in calls if type(calls) is list else ():  # an upstream's "tool_calls": true carries no call
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict):
            for field in ("name", "arguments"):
                if isinstance(fn.get(field), str):
                    total += text_tokens(fn[field])
    return total


def answer_output_tokens(choices: Iterable[Any]) -> int:
    """``output_tokens`` over every choice of a whole (non-stream) answer."""
    return sum(output_tokens(choice.get("message")) for choice in choices if isinstance(choice, dict))


@dataclass(frozen=True, slots=True)
class TokenUsage:
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int = 0
    cached_tokens: int = 0

    @classmethod
    def from_openai(cls, usage: Any) -> TokenUsage | None:
        """Parse an OpenAI ``usage`` object; None when absent or unusable (explicit zeros are kept)."""
        if not isinstance(usage, dict):
            return None
        prompt = _count(usage.get("prompt_tokens"))
        completion = _count(usage.get("completion_tokens"))
        if prompt is None or completion is None:
            return None
        prompt_details = usage.get("prompt_tokens_details")
        completion_details = usage.get("completion_tokens_details")
        cached = _count(prompt_details.get("cached_tokens")) if isinstance(prompt_details, dict) else None
        reasoning = _count(completion_details.get("reasoning_tokens")) if isinstance(completion_details, dict) else None
        return cls(prompt, completion, reasoning or 0, min(cached or 0, prompt))


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value
