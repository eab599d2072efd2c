"""Token estimates and costs.

Estimates are used only where the upstream has not (yet) said: to size a reservation, and to bill a
stream that broke before its usage arrived. A text costs ``ceil(ascii_chars / 4) + non_ascii_chars``
tokens -- one token per CJK character, four ASCII characters per token -- which errs high for the
Seed tokenizer on both scripts. An image, audio or file part counts ``MEDIA_PART_TOKENS`` however
large its base64 is; every message adds ``MESSAGE_OVERHEAD_TOKENS``.

Cost of a completed request, in units (``app.money``):
``(prompt - cached) * input + cached * cached_input + completion * output``; reasoning tokens are
already inside ``completion_tokens`` and are billed as output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from app.catalog import Prices

MEDIA_PART_TOKENS = 1_600
MESSAGE_OVERHEAD_TOKENS = 4


def text_tokens(text: str) -> int:
    non_ascii = len(text) - len(text.encode("ascii", "ignore"))
    ascii_chars = len(text) - non_ascii
    return (ascii_chars + 3) // 4 + non_ascii


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return text_tokens(content)
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                total += text_tokens(part["text"])
            elif isinstance(part, dict) and part.get("type") in {"image_url", "input_audio", "file", "video_url"}:
                total += MEDIA_PART_TOKENS
            else:
                total += text_tokens(orjson.dumps(part).decode())
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
            total += text_tokens(orjson.dumps(tool_calls).decode())
    if tools:
        total += text_tokens(orjson.dumps(tools).decode())
    return total


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

    def cost(self, prices: Prices) -> int:
        uncached = self.prompt_tokens - self.cached_tokens
        return (
            uncached * prices.input + self.cached_tokens * prices.cached_input + self.completion_tokens * prices.output
        )


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value
